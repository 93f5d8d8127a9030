import { access, constants, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pathExists, readJsonIfExists, writeJsonAtomic } from "../../util/fs.js";
import { runTool } from "../../util/proc.js";

export type Accel = "kvm" | "tcg";

export interface KvmReport {
  /** /dev/kvm exists. */
  present: boolean;
  readable: boolean;
  writable: boolean;
  /** The CPU advertises vmx or svm. */
  cpuFlags: boolean;
  /** A paravirtual KVM (kvm_pvm) is loaded: it cannot run stock guest kernels. */
  paravirtual: boolean;
  /** A KVM boot failed earlier on this host boot (recorded, see markKvmUnusable). */
  failedBefore: string | undefined;
  usable: boolean;
  reason: string;
}

export interface AccelChoice {
  accel: Accel;
  /** Why this accelerator was chosen. */
  reason: string;
  /** Set by PYRO_ACCEL. */
  forced: boolean;
  kvm: KvmReport;
}

async function can(path: string, mode: number): Promise<boolean> {
  try {
    await access(path, mode);
    return true;
  } catch {
    return false;
  }
}

async function bootId(): Promise<string> {
  return (await readFile("/proc/sys/kernel/random/boot_id", "utf8").catch(() => "unknown")).trim();
}

function markerPath(stateDir: string): string {
  return join(stateDir, "kvm-unusable.json");
}

/** Remembers, until the host reboots, that a KVM guest failed here (e.g. "KVM internal error"). */
export async function markKvmUnusable(stateDir: string, reason: string): Promise<void> {
  await writeJsonAtomic(markerPath(stateDir), { bootId: await bootId(), reason });
}

export async function inspectKvm(stateDir: string): Promise<KvmReport> {
  const present = await pathExists("/dev/kvm");
  const readable = present && (await can("/dev/kvm", constants.R_OK));
  const writable = present && (await can("/dev/kvm", constants.W_OK));
  const cpuinfo = await readFile("/proc/cpuinfo", "utf8").catch(() => "");
  const cpuFlags = /^flags\s*:.*\b(vmx|svm)\b/m.test(cpuinfo);
  const paravirtual = (await pathExists("/sys/module/kvm_pvm")) || (await pathExists("/sys/module/kvm_pvm_guest"));
  const marker = await readJsonIfExists<{ bootId: string; reason: string }>(markerPath(stateDir)).catch(() => undefined);
  const failedBefore = marker && marker.bootId === (await bootId()) ? marker.reason : undefined;
  let reason: string;
  if (!present) reason = "/dev/kvm does not exist";
  else if (!readable || !writable) reason = "/dev/kvm is not readable and writable by this user (add it to the kvm group)";
  else if (paravirtual) reason = "/dev/kvm is a paravirtual KVM (kvm_pvm) that cannot run stock kernels";
  else if (!cpuFlags) reason = "the CPU has no vmx/svm virtualization flags, so /dev/kvm cannot run stock kernels";
  else if (failedBefore) reason = `a KVM guest failed earlier on this host boot: ${failedBefore}`;
  else reason = "/dev/kvm is present and usable";
  const usable = present && readable && writable && !paravirtual && cpuFlags && !failedBefore;
  return { present, readable, writable, cpuFlags, paravirtual, failedBefore, usable, reason };
}

/** KVM when it really works, TCG otherwise; PYRO_ACCEL=kvm|tcg overrides. */
export async function chooseAccel(stateDir: string, env: NodeJS.ProcessEnv = process.env): Promise<AccelChoice> {
  const kvm = await inspectKvm(stateDir);
  const forced = env.PYRO_ACCEL;
  if (forced === "kvm" || forced === "tcg") {
    return { accel: forced, reason: `PYRO_ACCEL=${forced}`, forced: true, kvm };
  }
  if (kvm.usable) return { accel: "kvm", reason: kvm.reason, forced: false, kvm };
  return { accel: "tcg", reason: `software emulation (TCG): ${kvm.reason}`, forced: false, kvm };
}

/**
 * QEMU output that means KVM itself cannot run this guest: an emulation
 * failure, a kernel module QEMU cannot open, or a KVM that refuses the
 * guest's MSRs (QEMU then aborts on an assertion in kvm_buf_set_msrs).
 */
export function isKvmFailure(log: string): boolean {
  return /KVM internal error|emulation failure|kvm run failed|failed to initialize kvm|Could not access KVM kernel module|failed to set MSR|kvm_buf_set_msrs/i.test(log);
}

let tscKhzCache: Promise<number | undefined> | undefined;

/**
 * The host's TSC rate in kHz, which a TCG guest's TSC runs at; it is part of
 * a template's key, so every pyro process on this host boot must agree on
 * it. From the kernel's own figure (sysfs, else its boot log), else the
 * first `cpu MHz` line; whichever is found first on a host boot is recorded
 * in `cacheDir` (beside the templates it keys) and used by every later
 * process of that boot.
 */
export function hostTscKhz(cacheDir: string): Promise<number | undefined> {
  tscKhzCache ??= readTscKhz(cacheDir);
  return tscKhzCache;
}

async function readTscKhz(cacheDir: string): Promise<number | undefined> {
  const exact = Number((await readFile("/sys/devices/system/cpu/cpu0/tsc_freq_khz", "utf8").catch(() => "")).trim());
  if (Number.isFinite(exact) && exact > 0) return Math.round(exact);
  await mkdir(cacheDir, { recursive: true, mode: 0o700 });
  const path = join(cacheDir, "host-tsc.json");
  const boot = await bootId();
  const recorded = await readJsonIfExists<{ bootId: string; khz: number | null }>(path).catch(() => undefined);
  if (recorded && recorded.bootId === boot) return recorded.khz ?? undefined;
  const khz = (await tscFromKernelLog()) ?? (await cpuMhzKhz());
  // The first process of this boot to get here decides; the others read what it wrote.
  try {
    await writeFile(path, JSON.stringify({ bootId: boot, khz: khz ?? null }), { flag: "wx", mode: 0o644 });
    return khz;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") return khz;
    const other = await readJsonIfExists<{ bootId: string; khz: number | null }>(path).catch(() => undefined);
    if (other?.bootId === boot) return other.khz ?? undefined;
    // Left by an earlier boot: replaced.
    await writeJsonAtomic(path, { bootId: boot, khz: khz ?? null });
    return khz;
  }
}

/** The kernel's calibrated TSC rate, from its log (readable by root, or where dmesg is not restricted). */
async function tscFromKernelLog(): Promise<number | undefined> {
  const log = await runTool("dmesg", [], { timeoutMs: 5000 }).catch(() => undefined);
  if (!log || log.code !== 0) return undefined;
  const refined = /Refined TSC clocksource calibration: ([\d.]+) MHz/.exec(log.stdout);
  const detected = /tsc: Detected ([\d.]+) MHz processor/.exec(log.stdout);
  const mhz = Number((refined ?? detected)?.[1]);
  return Number.isFinite(mhz) && mhz > 0 ? Math.round(mhz * 1000) : undefined;
}

async function cpuMhzKhz(): Promise<number | undefined> {
  const cpuinfo = await readFile("/proc/cpuinfo", "utf8").catch(() => "");
  const mhz = Number(/^cpu MHz\s*:\s*([\d.]+)/m.exec(cpuinfo)?.[1]);
  return Number.isFinite(mhz) && mhz > 0 ? Math.round(mhz * 1000) : undefined;
}
