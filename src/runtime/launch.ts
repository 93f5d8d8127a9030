import { rename } from "node:fs/promises";
import { dirname, join } from "node:path";
import { hostTscKhz, type Accel } from "../backends/qemu/accel.js";
import type { LaunchSpec, MachineShape } from "../backends/qemu/argv.js";
import { createCgroup, limitsFor, removeCgroup } from "../backends/qemu/cgroup.js";
import { helperSandbox, inspectJail, type JailHost } from "../backends/qemu/jail.js";
import { handDiskTo, type BootJail, type VmFiles } from "../backends/qemu/vm.js";
import { Defaults, netdBinaryPath, qemuBinary } from "../config.js";
import type { ReadyEnvironment } from "../environments/store.js";
import { ErrorCode, PyroError } from "../errors.js";
import { networkEventsPath, startNetworkHelper, type HelperProcess } from "../network/helper.js";
import { helperPolicy, type NetworkSettings, type OperatorDestination } from "../network/policy.js";
import { warnOnce } from "../util/log.js";
import { runTool, which } from "../util/proc.js";

/** The VM's own copy-on-write layer over the shared, read-only root image. */
export async function createOverlay(rootfsPath: string, diskPath: string): Promise<void> {
  // Made under another name and renamed: a process killed half-way leaves no half disk behind.
  const partial = `${diskPath}.partial`;
  const made = await runTool("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", rootfsPath, partial]);
  if (made.code !== 0) throw new PyroError(ErrorCode.bootFailed, `could not create the VM's disk: ${made.stderr.trim()}`);
  await rename(partial, diskPath);
}

/**
 * What every QEMU start needs, for a VM or a template being made: its
 * launch spec, its confinement (jail, cgroup), its network helper, and the
 * host's settings (boot deadline, TSC rate).
 */
export class VmLauncher {
  /** `cacheDir`: where this host's TSC rate is recorded for the templates kept there. */
  constructor(
    readonly env: NodeJS.ProcessEnv,
    private readonly cacheDir: string,
  ) {}

  /** How this host confines QEMU (probed once per process). */
  jailHost(): Promise<JailHost> {
    return inspectJail(qemuBinary(this.env), this.env, this.cacheDir);
  }

  bootTimeoutSeconds(): number {
    const value = Number(this.env.PYRO_BOOT_TIMEOUT_SECONDS);
    return Number.isFinite(value) && value > 0 ? value : Defaults.bootTimeoutSeconds;
  }

  async tscKhz(accel: Accel): Promise<number | undefined> {
    return accel === "tcg" ? hostTscKhz(this.cacheDir) : undefined;
  }

  spec(files: VmFiles, environment: ReadyEnvironment, shape: MachineShape & { accel: Accel }, tscKhz: number | undefined, extra: Pick<LaunchSpec, "incomingFd"> = {}): LaunchSpec {
    return {
      accel: shape.accel,
      tscKhz,
      vcpuCount: shape.vcpuCount,
      memMib: shape.memMib,
      network: shape.network,
      kernelPath: environment.kernelPath,
      initramfsPath: environment.initramfsPath,
      diskPath: files.disk,
      // QEMU creates its sockets where it can; pyro moves them out of its reach before the guest runs (see VmFiles).
      qmpSocket: files.bound.qmp,
      serialSocket: files.bound.serial,
      agentSockets: files.bound.agents,
      netSocket: shape.network ? files.net : undefined,
      ...extra,
    };
  }

  /**
   * What a QEMU about to boot may see and where it is accounted: its disk
   * handed to the QEMU user, and a cgroup `cgroupName` with limits from the
   * shape (when cgroups are usable; a failure to make one is reported once).
   */
  async jailFor(files: VmFiles, environment: ReadyEnvironment, shape: MachineShape & { accel: Accel }, cgroupName: string): Promise<BootJail> {
    const host = await this.jailHost();
    await handDiskTo(files, host.qemuUser);
    let cgroupDirs: string[] | undefined;
    if (host.cgroup) {
      cgroupDirs = await createCgroup(host.cgroup, cgroupName, limitsFor(shape, shape.accel)).catch((error: unknown) => {
        warnOnce("jail:cgroup-create", `QEMU confinement: could not create a cgroup (${error instanceof Error ? error.message : String(error)}); VMs run without resource limits`);
        return undefined;
      });
    }
    return { host, readOnly: [environment.kernelPath, environment.initramfsPath, environment.rootfsPath], cgroupDirs, cgroupName };
  }

  /** Removes a VM's cgroup once its QEMU is gone. */
  async releaseJail(jail: { cgroupName?: string } | undefined): Promise<void> {
    const host = await this.jailHost();
    if (host.cgroup && jail?.cgroupName) await removeCgroup(host.cgroup, jail.cgroupName);
  }

  /** Starts the network helper the guest's NIC connects to, with this VM's policy. */
  async startNetd(files: VmFiles, jail: BootJail, settings: NetworkSettings, destinations: readonly OperatorDestination[]): Promise<HelperProcess> {
    const passt = await which("passt");
    if (!passt) {
      throw new PyroError(ErrorCode.guestUnavailable, "a guest with network needs passt, which is not installed", {
        hint: "apt-get install passt, or create the VM without network",
      });
    }
    return startNetworkHelper({
      binary: netdBinaryPath(this.env),
      passt,
      socket: files.net,
      cwd: files.jailDir,
      eventsPath: networkEventsPath(files),
      logPath: join(files.dir, "network.log"),
      policyJson: helperPolicy(settings, destinations),
      user: jail.host.qemuUser,
      sandbox: helperSandbox(jail.host, files.jailDir, [dirname(netdBinaryPath(this.env)), passt]),
      cgroupDirs: jail.cgroupDirs,
      deadline: Date.now() + 10_000,
    });
  }
}
