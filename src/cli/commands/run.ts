import type { Command } from "commander";
import { errColors as pc } from "../color.js";
import type { ExecResult } from "../../sdk/types.js";
import { oneWordShellLineHint, shellJoin } from "../../util/shell.js";
import { emit, type CliContext } from "../context.js";
import { exitStatusRanges } from "../help-text.js";
import { timeoutOption, vmOptions, vmOptionsFrom, type VmFlags } from "../options.js";

/**
 * Streams guest output live in human mode; --json prints the one result
 * document at the end. `argv` is the command as given after `--`: when it was
 * a whole shell line in one argument that the guest could not run, a hint on
 * stderr (and in the JSON document) says how to run it as one.
 */
export function writeExecResult(ctx: CliContext, result: Omit<ExecResult, "vmId">, streamed: boolean, argv: readonly string[]): void {
  const hint = oneWordShellLineHint(argv, result.exitCode);
  if (ctx.json) {
    emit(ctx, hint === undefined ? result : { ...result, hint }, () => "");
  } else {
    if (!streamed) {
      process.stdout.write(result.stdout);
      process.stderr.write(result.stderr);
    }
    const notes: string[] = [];
    if (result.timedOut) notes.push("timed out and was killed");
    if (result.stdoutTruncated) notes.push("stdout truncated");
    if (result.stderrTruncated) notes.push("stderr truncated");
    if (notes.length || ctx.progress.enabled) {
      const mode = result.executionMode === "guest" ? `guest, ${result.accel}` : pc.yellow("host_compat, no isolation");
      process.stderr.write(pc.dim(`pyro: exit ${result.exitCode} · ${result.durationMs} ms · ${mode}${notes.length ? ` · ${notes.join(", ")}` : ""}\n`));
    }
  }
  if (hint !== undefined) process.stderr.write(`${pc.dim("hint")}: ${hint}\n`);
  ctx.exitCode = result.exitCode;
}

export function streamTo(ctx: CliContext): ((stream: "stdout" | "stderr", chunk: Buffer) => void) | undefined {
  if (ctx.json) return undefined;
  return (stream, chunk) => {
    (stream === "stdout" ? process.stdout : process.stderr).write(chunk);
  };
}

export function registerRun(program: Command, ctx: CliContext): void {
  const run = program
    .command("run")
    .description("run one command in a fresh microVM, then delete the VM")
    .argument("<environment>", "environment to boot, e.g. debian:12 (see `pyro env list`)")
    .argument("[command...]", "the command, after --; its arguments keep their boundaries")
    .addOption(timeoutOption());
  for (const option of vmOptions()) run.addOption(option);
  run
    .option("--json", "print one JSON result document on stdout")
    .addHelpText(
      "after",
      `
Examples:
  pyro run debian:12 -- git --version
  pyro run debian:12 --json -- sh -lc 'echo "a  b"; uname -r'
  pyro run debian:12-build --timeout-seconds 120 -- sh -c 'echo "int main(void) { return 0; }" > t.c && make t && ./t'

Exit status is the command's own; pyro's failures use ${exitStatusRanges()} (see \`pyro --help\`).`,
    )
    .action(async (environment: string, command: string[], flags: VmFlags) => {
      const result = await ctx.pyro.runInVm({
        environment,
        command: shellJoin(command),
        ...vmOptionsFrom(flags),
        timeoutSeconds: flags.timeoutSeconds,
        signal: ctx.signal,
        onProgress: ctx.progress.onProgress,
        onOutput: streamTo(ctx),
      });
      writeExecResult(ctx, result, !ctx.json, command);
    });
}
