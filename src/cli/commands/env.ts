import { basename, dirname } from "node:path";
import type { Command } from "commander";
import type { EnvironmentInfo } from "../../sdk/types.js";
import { emit, formatBytes, table, type CliContext } from "../context.js";

function describe(info: EnvironmentInfo): string {
  const lines = [
    `name:           ${info.name}`,
    `description:    ${info.description}`,
    `state:          ${info.state}`,
    `suite:          ${info.suite}`,
    `packages:       ${info.packages.length ? info.packages.join(", ") : "(minbase only)"}`,
    `disk:           ${info.diskMib} MiB`,
    `kernel:         ${info.kernelRelease ?? "-"}`,
    `built:          ${info.builtAt ?? "-"}`,
    `size on disk:   ${formatBytes(info.sizeBytes)}`,
    `cache path:     ${info.cachePath}`,
  ];
  if (info.digests) {
    lines.push(
      `kernel sha256:  ${info.digests.kernel}`,
      `initrd sha256:  ${info.digests.initramfs}`,
      `rootfs sha256:  ${info.digests.rootfs}`,
      `agent sha256:   ${info.digests.agent}`,
    );
  }
  return lines.join("\n");
}

export function registerEnv(program: Command, ctx: CliContext): void {
  const env = program.command("env").description("list, build, inspect and prune guest environments");

  env
    .command("list")
    .description("list the environment catalog and what is built")
    .option("--json", "print JSON")
    .action(async (_flags: { json?: boolean }) => {
      const environments = await ctx.pyro.listEnvironments();
      emit(ctx, { environments }, () =>
        table([["NAME", "STATE", "SIZE", "DESCRIPTION"], ...environments.map((e) => [e.name, e.state, formatBytes(e.sizeBytes), e.description])]),
      );
    });

  env
    .command("pull")
    .description("build an environment now (first use does it automatically); verifies an existing one")
    .argument("<environment>", "e.g. debian:12")
    .option("--force", "rebuild even if a valid copy is cached")
    .option("--warm", "also save the template snapshot for the default machine shape, so the first run restores instead of booting")
    .option("--json", "print JSON")
    .action(async (name: string, flags: { json?: boolean; force?: boolean; warm?: boolean }) => {
      const info = await ctx.pyro.pullEnvironment(name, { force: flags.force, warm: flags.warm, onProgress: ctx.progress.onProgress, signal: ctx.signal });
      ctx.progress.stop();
      emit(ctx, info, () => describe(info));
    });

  env
    .command("inspect")
    .description("show an environment's packages, kernel, digests and cache path")
    .argument("<environment>", "e.g. debian:12")
    .option("--json", "print JSON")
    .action(async (name: string, _flags: { json?: boolean }) => {
      const info = await ctx.pyro.inspectEnvironment(name);
      emit(ctx, info, () => describe(info));
    });

  env
    .command("prune")
    .description("remove cached environments, kernels and root images that are no longer used, and leftovers of interrupted builds (an image a VM still uses is kept)")
    .option("--json", "print JSON")
    .action(async (_flags: { json?: boolean }) => {
      const result = await ctx.pyro.pruneEnvironments();
      emit(ctx, result, () =>
        [
          result.removed.length ? `removed ${result.removed.join(", ")} (${formatBytes(result.freedBytes)})` : "nothing to prune",
          ...result.kept.map((k) => `kept ${k.image}: still used by ${k.usedBy.map((path) => basename(dirname(path))).join(", ")}`),
        ].join("\n"),
      );
    });
}
