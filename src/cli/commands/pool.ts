import type { Command } from "commander";
import { emit, type CliContext } from "../context.js";
import { intParser } from "../options.js";

export function registerPool(program: Command, ctx: CliContext): void {
  const pool = program
    .command("pool")
    .description("the optional pool of warm VMs (PYRO_POOL_SIZE per shape, PYRO_POOL_MAX_MIB cap); runs refill it on their own");
  pool
    .command("fill")
    .description("make warm VMs for a machine shape now, up to PYRO_POOL_SIZE")
    .argument("<environment>", "e.g. debian:12")
    .option("--vcpu-count <n>", "virtual CPUs of the shape (default 1)", intParser("--vcpu-count", "vcpuCount"))
    .option("--mem-mib <n>", "guest memory of the shape in MiB (default 1024)", intParser("--mem-mib", "memMib"))
    .option("--network", "the shape with a NIC")
    .option("--json", "print JSON")
    .action(async (environment: string, flags: { vcpuCount?: number; memMib?: number; network?: boolean }) => {
      const result = await ctx.pyro.fillPool({ environment, vcpuCount: flags.vcpuCount, memMib: flags.memMib, network: flags.network });
      emit(ctx, result, () =>
        result.enabled ? `made ${result.made}; ${result.pooled} warm ${environment} VM(s) waiting (pool size ${result.size})` : "the pool is off; set PYRO_POOL_SIZE to turn it on",
      );
    });
}
