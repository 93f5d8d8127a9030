import { availableParallelism, release, totalmem } from "node:os";
import { chooseAccel, type KvmReport } from "../backends/qemu/accel.js";
import type { JailLayer } from "../backends/qemu/jail.js";
import { netdBinaryPath, qemuBinary } from "../config.js";
import { toPyroError } from "../errors.js";
import type { VmManager } from "../runtime/vms.js";
import { runTool, which } from "../util/proc.js";
import type { CallOptions, ExecResult } from "./types.js";

export interface ToolReport {
  name: string;
  path: string | null;
  version: string | null;
  /** What the tool is for. */
  purpose: string;
}

export interface DoctorReport {
  ok: boolean;
  platform: { os: string; arch: string; kernel: string; node: string; cpus: number; memMib: number; uid: number | null };
  kvm: KvmReport;
  accel: { accel: "kvm" | "tcg"; reason: string; forced: boolean };
  tools: ToolReport[];
  paths: { stateDir: string; cacheDir: string; environmentsDir: string };
  environments: { name: string; state: string }[];
  /** Whether guests can have network here: QEMU's stream NIC backend, passt, and pyro's network helper. */
  networking: { available: boolean; detail: string };
  /**
   * How QEMU is confined here, layer by layer (user, seccomp, namespaces,
   * cgroup): active, or not with the reason. A layer that is not active is a
   * warning, not a problem: guests still run.
   */
  confinement: JailLayer[];
  guest: {
    checked: boolean;
    boot: boolean | null;
    exec: boolean | null;
    environment: string;
    kernelRelease: string | null;
    durationMs: number | null;
    detail: string;
  };
  problems: string[];
}

/** Tools pyro runs; a missing optional one costs a feature (network, a confinement layer), not the ability to run guests. */
const TOOLS: { name: string; args: string[]; purpose: string; optional?: boolean }[] = [
  { name: "qemu-system-x86_64", args: ["--version"], purpose: "runs the microVMs" },
  { name: "qemu-img", args: ["--version"], purpose: "per-VM copy-on-write disks" },
  { name: "mmdebstrap", args: ["--version"], purpose: "builds environments from Debian's archive" },
  { name: "mkfs.ext4", args: ["-V"], purpose: "root filesystem images" },
  { name: "lz4", args: ["--version"], purpose: "unpacks the guest kernel" },
  { name: "zstd", args: ["--version"], purpose: "unpacks Debian's kernel modules" },
  { name: "depmod", args: ["--version"], purpose: "resolves the guest kernel's modules (kmod)" },
  { name: "passt", args: ["--version"], purpose: "user-mode networking behind guests with network", optional: true },
  { name: "bwrap", args: ["--version"], purpose: "namespaces that confine QEMU (bubblewrap)", optional: true },
];

const DOCTOR_ENVIRONMENT = "debian:12";

/**
 * Checks the host. `runGuest` runs one command in a fresh guest (the SDK's
 * runInVm), so the check goes through exactly what callers use.
 */
export async function runDoctor(
  vms: VmManager,
  runGuest: (options: { environment: string; command: string; timeoutSeconds: number } & CallOptions) => Promise<ExecResult>,
  options: CallOptions & { bootCheck?: boolean },
): Promise<DoctorReport> {
  const problems: string[] = [];
  const choice = await chooseAccel(vms.paths.stateDir, vms.env);
  const tools: ToolReport[] = [];
  for (const tool of TOOLS) {
    const name = tool.name === "qemu-system-x86_64" ? qemuBinary(vms.env) : tool.name;
    const path = (await which(name)) ?? null;
    let version: string | null = null;
    if (path) {
      const out = await runTool(path, tool.args, { timeoutMs: 10_000 }).catch(() => undefined);
      version = (out?.stdout || out?.stderr || "").split("\n").find((line) => line.trim())?.trim() ?? null;
    } else if (!tool.optional) {
      problems.push(`${name} is missing (${tool.purpose})`);
    }
    tools.push({ name, path, version, purpose: tool.purpose });
  }
  const environments = (await vms.environments.list()).map((entry) => ({ name: entry.spec.name, state: entry.state }));

  let networking = { available: false, detail: "QEMU is missing" };
  const qemuPath = tools[0]?.path;
  if (qemuPath) {
    const help = await runTool(qemuPath, ["-netdev", "help"], { timeoutMs: 10_000 }).catch(() => undefined);
    const stream = /\bstream\b/.test(`${help?.stdout ?? ""}${help?.stderr ?? ""}`);
    const passt = tools.find((t) => t.name === "passt")?.path;
    const netd = (await which(netdBinaryPath(vms.env))) !== undefined;
    const missing = [!stream && "this QEMU has no stream network backend (QEMU 7.2 or newer)", !passt && "passt is missing (apt-get install passt)", !netd && `the network helper is not built (${netdBinaryPath(vms.env)}; npm run build)`].filter(
      (m): m is string => Boolean(m),
    );
    networking = missing.length
      ? { available: false, detail: `guests cannot have network: ${missing.join("; ")}` }
      : { available: true, detail: "egress through pyro's filtering helper and passt: the public internet only, never this host or private ranges" };
    // Without network a guest still runs: a warning here, not a failure.
  }

  const confinement = qemuPath ? (await vms.launcher.jailHost()).layers : [];

  const guest: DoctorReport["guest"] = {
    checked: false,
    boot: null,
    exec: null,
    environment: DOCTOR_ENVIRONMENT,
    kernelRelease: null,
    durationMs: null,
    detail: "",
  };
  const installed = environments.find((e) => e.name === DOCTOR_ENVIRONMENT)?.state === "installed";
  if (options.bootCheck === false) {
    guest.detail = "skipped (--no-boot)";
  } else if (!installed) {
    guest.detail = `skipped: ${DOCTOR_ENVIRONMENT} is not built yet; run \`pyro env pull ${DOCTOR_ENVIRONMENT}\``;
  } else {
    guest.checked = true;
    const started = Date.now();
    try {
      const result = await runGuest({
        environment: DOCTOR_ENVIRONMENT,
        command: "uname -r",
        timeoutSeconds: 30,
        signal: options.signal,
        onProgress: options.onProgress,
      });
      guest.boot = true;
      guest.exec = result.exitCode === 0;
      guest.kernelRelease = result.stdout.trim() || null;
      guest.durationMs = Date.now() - started;
      guest.detail = guest.exec ? `booted ${DOCTOR_ENVIRONMENT} and ran \`uname -r\` (${result.accel})` : `the guest ran \`uname -r\` but it exited ${result.exitCode}`;
      if (!guest.exec) problems.push(guest.detail);
    } catch (error) {
      const failure = toPyroError(error);
      guest.boot = failure.code === "agent_error" ? true : false;
      guest.exec = false;
      guest.detail = `${failure.code}: ${failure.message}`;
      problems.push(`guest check failed: ${failure.message}`);
    }
  }

  return {
    ok: problems.length === 0,
    platform: {
      os: process.platform,
      arch: process.arch,
      kernel: release(),
      node: process.version,
      cpus: availableParallelism(),
      memMib: Math.floor(totalmem() / (1024 * 1024)),
      uid: process.getuid?.() ?? null,
    },
    kvm: choice.kvm,
    accel: { accel: choice.accel, reason: choice.reason, forced: choice.forced },
    tools,
    paths: { ...vms.paths },
    environments,
    networking,
    confinement,
    guest,
    problems,
  };
}
