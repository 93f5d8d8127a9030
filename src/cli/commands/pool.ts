import { Option, type Command } from "commander";
import { Defaults } from "../../config.js";
import { NETWORK_POLICIES, type NetworkPolicy } from "../../network/policy.js";
import { SETTINGS } from "../../settings.js";
import type { PoolDrainResult, PoolInfo, PooledVmInfo } from "../../sdk/types.js";
import { emit, table, type CliContext } from "../context.js";
import { intParser } from "../options.js";

/** "debian:12, 1 vCPU, 1024 MiB, network egress (github.com)": what a run must ask for to be given the VM. */
function shapeOf(vm: PooledVmInfo): string {
  const hosts = vm.allowHosts.length ? ` (${vm.allowHosts.join(" ")})` : "";
  return `${vm.environment}, ${vm.vcpuCount} vCPU, ${vm.memMib} MiB, network ${vm.networkPolicy}${hosts}`;
}

function ownerOf(vm: PooledVmInfo): string {
  switch (vm.owner) {
    case "this_process":
      return "this process";
    case "process":
      return `pid ${vm.ownerPid}`;
    case "gone":
      return `pid ${vm.ownerPid} (gone)`;
    case "none":
      return "none (until taken, drained or expired)";
  }
}

/** 42s, 5m, 1h05m. */
function formatAge(seconds: number): string {
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  return `${Math.floor(seconds / 3600)}h${String(Math.floor((seconds % 3600) / 60)).padStart(2, "0")}m`;
}

/** One row per shape, state and owner: how many VMs, the guest memory they hold, what their QEMUs have resident, the oldest's age. */
function poolTable(vms: PooledVmInfo[]): string {
  const groups = new Map<string, PooledVmInfo[]>();
  for (const vm of vms) {
    const key = [shapeOf(vm), vm.state, ownerOf(vm)].join("\0");
    groups.set(key, [...(groups.get(key) ?? []), vm]);
  }
  const rows = [...groups.values()].map((group) => {
    const first = group[0]!;
    const resident = group.some((vm) => vm.residentMib !== null) ? `${group.reduce((sum, vm) => sum + (vm.residentMib ?? 0), 0)} MiB` : "-";
    return [shapeOf(first), first.state, String(group.length), `${group.reduce((sum, vm) => sum + vm.memMib, 0)} MiB`, resident, formatAge(Math.max(...group.map((vm) => vm.ageSeconds))), ownerOf(first)];
  });
  return table([["SHAPE", "STATE", "VMS", "MEMORY", "RESIDENT", "AGE", "OWNER"], ...rows]);
}

function describePool(pool: PoolInfo): string {
  const settings = pool.enabled
    ? `this process keeps ${pool.size} per shape (PYRO_POOL_SIZE or --keep-warm)`
    : "this process keeps none (PYRO_POOL_SIZE is not set); `pyro mcp serve` keeps one per shape it runs (--keep-warm)";
  if (!pool.count) return `no warm VMs in this state directory; ${settings}`;
  return [
    poolTable(pool.vms),
    "",
    `total: ${pool.count} VM(s) holding ${pool.memMib} MiB of guest memory (cap ${pool.capMib} MiB now: PYRO_POOL_MAX_MIB ${pool.maxMib}, at most half the available memory)`,
    `a VM not taken is reaped ${pool.ttlSeconds} s after it was made (PYRO_POOL_TTL_SECONDS); ${settings}`,
    "`pyro pool drain` deletes them now",
  ].join("\n");
}

function describeDrain(result: PoolDrainResult): string {
  if (!result.count) return "no warm VMs to delete";
  return [poolTable(result.deleted), "", `deleted ${result.count} VM(s), freeing ${result.freedMib} MiB of guest memory`].join("\n");
}

export function registerPool(program: Command, ctx: CliContext): void {
  const pool = program
    .command("pool")
    .description("the pool of warm VMs: see what it holds, fill it, drain it (PYRO_POOL_SIZE per shape, PYRO_POOL_MAX_MIB cap)")
    .addHelpText(
      "after",
      `
Each warm VM holds its guest memory (${Defaults.memMib} MiB by default) until a run takes
it, \`pyro pool drain\` deletes it, or PYRO_POOL_TTL_SECONDS (default ${SETTINGS.PYRO_POOL_TTL_SECONDS.default})
pass. A CLI run keeps warm VMs only when PYRO_POOL_SIZE is set; \`pyro mcp
serve\` keeps one per machine shape it has run (--keep-warm) and deletes them
when it exits. The pool is per state directory (PYRO_STATE_DIR).`,
    );
  pool
    .command("list")
    .description("show the warm VMs (every process's, of this state directory): shape, state, memory held, age, owner, and the totals")
    .option("--json", "print JSON: every VM with its shape, memory, age, owner and expiry, and the totals")
    .action(async (_flags: { json?: boolean }) => {
      const info = await ctx.pyro.listPool();
      emit(ctx, info, () => describePool(info));
    });
  pool
    .command("drain")
    .description("delete the warm VMs now, to free their memory (whoever made them); runs taking one meanwhile keep it")
    .argument("[environment]", "only this environment's VMs, e.g. debian:12 (default: all)")
    .option("--json", "print JSON: the VMs deleted and the memory freed")
    .addHelpText(
      "after",
      `
Refills that began before the drain stop and delete the VM they were making;
the drain waits for them. A server keeping VMs warm (pyro mcp serve) makes new
ones after its next run: start it with --keep-warm 0 to keep none.`,
    )
    .action(async (environment: string | undefined, _flags: { json?: boolean }) => {
      const result = await ctx.pyro.drainPool({ environment, onProgress: ctx.progress.onProgress, signal: ctx.signal });
      emit(ctx, result, () => describeDrain(result));
    });
  pool
    .command("fill")
    .description("make warm VMs for a machine shape now, up to PYRO_POOL_SIZE")
    .argument("<environment>", "e.g. debian:12")
    .option("--vcpu-count <n>", `virtual CPUs of the shape (default ${Defaults.vcpuCount})`, intParser("--vcpu-count", "vcpuCount"))
    .option("--mem-mib <n>", `guest memory of the shape in MiB (default ${Defaults.memMib})`, intParser("--mem-mib", "memMib"))
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
