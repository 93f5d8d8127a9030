import type { Command } from "commander";
import { errColors as pc } from "../color.js";
import { emit, type CliContext } from "../context.js";

const DEMO_COMMAND = 'git --version && echo "guest kernel: $(uname -r), host name: $(hostname)"';

export function registerDemo(program: Command, ctx: CliContext): void {
  program
    .command("demo")
    .description("boot a debian:12 microVM, run git in it, and tear it down (builds the environment on first use)")
    .option("--network", "give the guest a NIC (it then lists eth0 besides lo)")
    .option("--json", "print the JSON result")
    .action(async (flags: { json?: boolean; network?: boolean }) => {
      const command = `${DEMO_COMMAND} && echo "network interfaces: $(ls /sys/class/net | tr '\\n' ' ')"`;
      if (!ctx.json) process.stderr.write(pc.dim(`pyro demo: running \`${command}\` in a fresh debian:12 microVM\n`));
      const result = await ctx.pyro.runInVm({
        environment: "debian:12",
        command,
        network: flags.network,
        signal: ctx.signal,
        onProgress: ctx.progress.onProgress,
      });
      if (ctx.json) emit(ctx, result, () => "");
      else {
        process.stdout.write(result.stdout);
        process.stderr.write(result.stderr);
        process.stderr.write(
          pc.dim(`pyro demo: exit ${result.exitCode} in ${result.durationMs} ms (${result.executionMode}, ${result.accel ?? "no accel"}); VM ${result.vmId} deleted\n`),
        );
      }
      ctx.exitCode = result.exitCode;
    });
}
