import type { Command } from "commander";
import { outColors as pc } from "../color.js";
import type { DoctorReport } from "../../sdk/doctor.js";
import { emit, type CliContext } from "../context.js";

function yesNo(value: boolean | null): string {
  if (value === null) return pc.dim("not checked");
  return value ? pc.green("yes") : pc.red("no");
}

function render(report: DoctorReport): string {
  const k = report.kvm;
  const lines = [
    `platform:      ${report.platform.os}/${report.platform.arch}, kernel ${report.platform.kernel}, node ${report.platform.node}, ${report.platform.cpus} cpus, ${report.platform.memMib} MiB`,
    `kvm:           present ${yesNo(k.present)}, readable ${yesNo(k.readable)}, writable ${yesNo(k.writable)}, usable ${yesNo(k.usable)} (${k.reason})`,
    `acceleration:  ${pc.bold(report.accel.accel)} — ${report.accel.reason}`,
    "tools:",
    ...report.tools.map((t) => `  ${t.name.padEnd(20)} ${t.path ? (t.version ?? "?") : pc.red("missing")} ${pc.dim(`(${t.purpose})`)}`),
    `state dir:     ${report.paths.stateDir}`,
    `cache dir:     ${report.paths.cacheDir} (environments: ${report.paths.environmentsDir})`,
    `environments:  ${report.environments.map((e) => `${e.name} ${e.state}`).join(", ")}`,
    `networking:    ${report.networking.detail}`,
    "confinement:",
    ...report.confinement.map((l) => `  ${l.layer.padEnd(11)} ${l.active ? pc.green("active") : pc.yellow("not active")} ${pc.dim(l.detail)}`),
    `guest boot:    ${yesNo(report.guest.boot)}`,
    `guest exec:    ${yesNo(report.guest.exec)}${report.guest.kernelRelease ? ` (guest kernel ${report.guest.kernelRelease})` : ""}`,
    `               ${report.guest.detail}`,
  ];
  lines.push(report.ok ? pc.green("ok: this host can run pyro guests") : pc.red(`problems:\n${report.problems.map((p) => `  - ${p}`).join("\n")}`));
  return lines.join("\n");
}

export function registerDoctor(program: Command, ctx: CliContext): void {
  program
    .command("doctor")
    .description("check this host: KVM, acceleration, QEMU and tools, cache, and a real guest boot and exec")
    .option("--no-boot", "skip the guest boot check")
    .option("--json", "print JSON")
    .action(async (flags: { json?: boolean; boot?: boolean }) => {
      const report = await ctx.pyro.doctor({ bootCheck: flags.boot !== false, signal: ctx.signal, onProgress: ctx.progress.onProgress });
      emit(ctx, report, () => render(report));
      if (!report.ok) ctx.exitCode = 1;
    });
}
