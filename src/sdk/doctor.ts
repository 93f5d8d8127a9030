import { availableParallelism, release, totalmem } from "node:os";
import { chooseAccel, type KvmReport } from "../backends/qemu/accel.js";
import { qemuBinary } from "../config.js";
import { toPyroError } from "../errors.js";
import type { VmManager } from "../runtime/vms.js";
import { runTool, which } from "../util/proc.js";
import type { CallOptions, ExecResult } from "./types.js";
import type { Pyro } from "./pyro.js";

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
  networking: { userNetworking: boolean; detail: string };
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

const TOOLS: { name: string; args: string[]; purpose: string }[] = [
  { name: "qemu-system-x86_64", args: ["--version"], purpose: "runs the microVMs" },
  { name: "qemu-img", args: ["--version"], purpose: "per-VM copy-on-write disks" },
  { name: "mmdebstrap", args: ["--version"], purpose: "builds environments from Debian's archive" },
  { name: "mkfs.ext4", args: ["-V"], purpose: "root filesystem images" },
  { name: "lz4", args: ["--version"], purpose: "unpacks the guest kernel" },
  { name: "zstd", args: ["--version"], purpose: "compresses template snapshots" },
  { name: "depmod", args: ["--version"], purpose: "resolves the guest kernel's modules (kmod)" },
];

const DOCTOR_ENVIRONMENT = "debian:12";

export async function runDoctor(pyro: Pyro, vms: VmManager, options: CallOptions & { bootCheck?: boolean }): Promise<DoctorReport> {
  const problems: string[] = [];
  const choice = await chooseAccel(pyro.paths.stateDir, vms.env);
  const tools: ToolReport[] = [];
  for (const tool of TOOLS) {
    const name = tool.name === "qemu-system-x86_64" ? qemuBinary(vms.env) : tool.name;
    const path = (await which(name)) ?? null;
    let version: string | null = null;
    if (path) {
      const out = await runTool(path, tool.args, { timeoutMs: 10_000 }).catch(() => undefined);
      version = (out?.stdout || out?.stderr || "").split("\n").find((line) => line.trim())?.trim() ?? null;
    } else {
      problems.push(`${name} is missing (${tool.purpose})`);
    }
    tools.push({ name, path, version, purpose: tool.purpose });
  }
  const environments = (await vms.environments.list()).map((entry) => ({ name: entry.spec.name, state: entry.state }));

  let networking = { userNetworking: false, detail: "QEMU is missing" };
  const qemuPath = tools[0]?.path;
  if (qemuPath) {
    const help = await runTool(qemuPath, ["-netdev", "help"], { timeoutMs: 10_000 }).catch(() => undefined);
    const userNetworking = /\buser\b/.test(`${help?.stdout ?? ""}${help?.stderr ?? ""}`);
    networking = { userNetworking, detail: userNetworking ? "user-mode networking available for --network" : "this QEMU lacks user-mode networking; --network will fail" };
    if (!userNetworking) problems.push(networking.detail);
  }

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
      const result: ExecResult = await pyro.runInVm({
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
    paths: { ...pyro.paths },
    environments,
    networking,
    guest,
    problems,
  };
}
