import type { Command } from "commander";
import type { VmInfo } from "../../sdk/types.js";
import { shellJoin } from "../../util/shell.js";
import { emit, table, type CliContext } from "../context.js";
import { timeoutOption, vmOptions, vmOptionsFrom, type VmFlags } from "../options.js";
import { streamTo, writeExecResult } from "./run.js";

function describeVm(vm: VmInfo): string {
  return [
    `vm_id:            ${vm.vmId}`,
    `environment:      ${vm.environment}`,
    `state:            ${vm.state}${vm.failure ? ` (${vm.failure})` : ""}`,
    `execution_mode:   ${vm.executionMode}${vm.accel ? ` (${vm.accel})` : ""}`,
    `vcpu_count:       ${vm.vcpuCount}`,
    `mem_mib:          ${vm.memMib}`,
    `network:          ${vm.network ? "on" : "off"}`,
    `created_at:       ${vm.createdAt}`,
    `expires_at:       ${vm.expiresAt}`,
    `last_activity_at: ${vm.lastActivityAt}`,
  ].join("\n");
}

/** The VM lifecycle, one subcommand per SDK method (pyro run covers the one-shot case). */
export function registerVm(program: Command, ctx: CliContext): void {
  const vm = program
    .command("vm")
    .description("lower-level VM lifecycle: create, start, exec (then auto-delete), status, stop, delete")
    .addHelpText("after", "\nMost callers want `pyro run`. Use these when you need status or inspection before the final exec.");

  const create = vm.command("create").description("create a VM record (builds the environment on first use) without booting").argument("<environment>", "e.g. debian:12");
  for (const option of vmOptions()) create.addOption(option);
  create
    .option("--json", "print JSON")
    .option("--id-only", "print only the VM id")
    .action(async (environment: string, flags: VmFlags & { idOnly?: boolean }) => {
      const info = await ctx.pyro.createVm({
        environment,
        ...vmOptionsFrom(flags),
        onProgress: ctx.progress.onProgress,
        signal: ctx.signal,
      });
      if (flags.idOnly && !ctx.json) process.stdout.write(`${info.vmId}\n`);
      else emit(ctx, info, () => describeVm(info));
    });

  vm.command("start")
    .description("boot a created or stopped VM")
    .argument("<vm-id>")
    .option("--json", "print JSON")
    .action(async (vmId: string, _flags: { json?: boolean }) => {
      const info = await ctx.pyro.startVm(vmId, { onProgress: ctx.progress.onProgress, signal: ctx.signal });
      emit(ctx, info, () => describeVm(info));
    });

  vm.command("exec")
    .description("run one command in a started VM, then delete the VM")
    .argument("<vm-id>")
    .argument("[command...]", "the command, after --")
    .addOption(timeoutOption())
    .option("--json", "print one JSON result document")
    .action(async (vmId: string, command: string[], flags: VmFlags) => {
      const result = await ctx.pyro.execVm(vmId, { command: shellJoin(command), timeoutSeconds: flags.timeoutSeconds, signal: ctx.signal, onOutput: streamTo(ctx) });
      writeExecResult(ctx, result, !ctx.json, command);
    });

  vm.command("status")
    .description("show a VM's state (a VM whose QEMU died shows as failed)")
    .argument("<vm-id>")
    .option("--json", "print JSON")
    .action(async (vmId: string, _flags: { json?: boolean }) => {
      const info = await ctx.pyro.statusVm(vmId);
      emit(ctx, info, () => describeVm(info));
    });

  vm.command("list")
    .description("list VMs")
    .option("--json", "print JSON")
    .action(async (_flags: { json?: boolean }) => {
      const vms = await ctx.pyro.listVms();
      emit(ctx, { vms }, () =>
        vms.length ? table([["VM_ID", "ENVIRONMENT", "STATE", "EXPIRES_AT"], ...vms.map((v) => [v.vmId, v.environment, v.state, v.expiresAt])]) : "no VMs",
      );
    });

  vm.command("stop")
    .description("power a VM off, keeping its disk; `pyro vm start` boots it again")
    .argument("<vm-id>")
    .option("--json", "print JSON")
    .action(async (vmId: string, _flags: { json?: boolean }) => {
      const info = await ctx.pyro.stopVm(vmId);
      emit(ctx, info, () => describeVm(info));
    });

  vm.command("delete")
    .description("kill a VM and remove all its files")
    .argument("<vm-id>")
    .option("--json", "print JSON")
    .action(async (vmId: string, _flags: { json?: boolean }) => {
      const result = await ctx.pyro.deleteVm(vmId);
      emit(ctx, result, () => `deleted ${result.vmId}`);
    });

  vm.command("network-info")
    .description("show a VM's (or workspace's) network: policy, allowed hosts, what is blocked, addresses, recent refusals")
    .argument("<vm-id>", "a VM or workspace id")
    .option("--json", "print JSON")
    .action(async (vmId: string, _flags: { json?: boolean }) => {
      const info = await ctx.pyro.networkInfoVm(vmId);
      emit(ctx, info, () => {
        if (info.mode === "off") return `${info.vmId}: network off (the guest has only lo)`;
        const lines = [
          `${info.vmId}: ${info.mode}, ${info.interface} ${info.guestIp}/${info.prefixLength}, gateway ${info.gateway}, dns ${info.dns}, mtu ${info.mtu}`,
          `allowed hosts:        ${info.allowHosts.length ? info.allowHosts.join(", ") : "any public host"}`,
          `opened by operator:   ${info.allowedDestinations.length ? info.allowedDestinations.join(", ") : "-"}`,
          `always blocked:       ${info.alwaysBlocked.join(", ")}`,
        ];
        if (info.recentBlocked.length) {
          lines.push("recently refused:");
          for (const e of info.recentBlocked) {
            const what = e.kind === "dns_refused" ? `dns ${e.name}` : `${e.proto ?? ""} ${e.dest ?? ""}${e.port ? `:${e.port}` : ""}`;
            lines.push(`  ${e.time}  ${what.trim()}: ${e.reason}`);
          }
        }
        return lines.join("\n");
      });
    });

  vm.command("reap")
    .description("delete every VM and workspace whose time to live has passed")
    .option("--json", "print JSON")
    .action(async (_flags: { json?: boolean }) => {
      const result = await ctx.pyro.reapExpired();
      emit(ctx, result, () => (result.count ? `reaped ${result.reapedVmIds.join(", ")}` : "nothing expired"));
    });
}
