import { Option, type Command } from "commander";
import { NETWORK_POLICIES, type NetworkPolicy } from "../../network/policy.js";
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
    .option("--network", "the shape with a NIC (as --network-policy egress)")
    .addOption(new Option("--network-policy <policy>", "the network policy of the pooled VMs (default off)").choices(NETWORK_POLICIES))
    .addOption(new Option("--allow-host <name>", "pooled VMs for runs with these allowed hosts (repeatable)").argParser((value: string, previous: string[] = []) => [...previous, value]))
    .option("--json", "print JSON")
    .action(async (environment: string, flags: { vcpuCount?: number; memMib?: number; network?: boolean; networkPolicy?: NetworkPolicy; allowHost?: string[] }) => {
      const result = await ctx.pyro.fillPool({
        environment,
        vcpuCount: flags.vcpuCount,
        memMib: flags.memMib,
        network: flags.network,
        networkPolicy: flags.networkPolicy,
        allowHosts: flags.allowHost,
      });
      emit(ctx, result, () =>
        result.enabled ? `made ${result.made}; ${result.pooled} warm ${environment} VM(s) waiting (pool size ${result.size})` : "the pool is off; set PYRO_POOL_SIZE to turn it on",
      );
    });
}
