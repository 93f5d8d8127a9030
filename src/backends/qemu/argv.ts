import type { Accel } from "./accel.js";

/** The machine shape. A snapshot can only be restored into the same shape. */
export interface MachineShape {
  vcpuCount: number;
  memMib: number;
  network: boolean;
}

export interface LaunchSpec extends MachineShape {
  accel: Accel;
  /**
   * Under TCG the guest's TSC ticks at the host's TSC rate, but the guest
   * cannot calibrate it (no HPET or PM timer on microvm, and PIT calibration
   * under emulation fails often), and a guest without a calibrated TSC hangs
   * early in boot. So the host tells it the rate.
   */
  tscKhz?: number;
  kernelPath: string;
  initramfsPath: string;
  /** The VM's own copy-on-write disk over the shared read-only root image. */
  diskPath: string;
  qmpSocket: string;
  serialSocket: string;
  agentSockets: readonly string[];
  /** Restore from a saved state file instead of booting (`-incoming`). */
  incomingPath?: string;
  /**
   * Guest RAM in a file instead of anonymous memory. A template's VM runs with
   * `shared` RAM, so its memory is the file; VMs restored from it map the same
   * file privately (copy on write), so the saved state carries only devices
   * and a restore reads no RAM at all: pages come in as the guest touches
   * them, from a page cache all clones share.
   */
  memoryFile?: { path: string; shared: boolean };
}

export const AGENT_PORTS = 4;
export const AGENT_PORT_NAME = "org.pyro.agent";

/** Guest network of QEMU's user-mode stack. */
export const USER_NET = { ip: "10.0.2.15/24", gateway: "10.0.2.2", dns: "10.0.2.3" } as const;

export function kernelCommandLine(shape: MachineShape & { accel: Accel; tscKhz?: number }): string {
  const parts = ["console=ttyS0", "quiet", "reboot=t", "panic=-1"];
  if (shape.accel === "tcg" && shape.tscKhz) parts.push(`tsc_early_khz=${shape.tscKhz}`, "tsc=reliable", "no_timer_check");
  if (shape.network) parts.push(`pyro.ip=${USER_NET.ip}`, `pyro.gw=${USER_NET.gateway}`, `pyro.dns=${USER_NET.dns}`);
  return parts.join(" ");
}

/**
 * QEMU argv for a microvm. The device list and its order are fixed by the
 * shape alone, which is what lets a saved state restore into a new process.
 */
export function qemuArgs(spec: LaunchSpec): string[] {
  const args = [
    "-name", "pyro",
    "-M", `microvm,x-option-roms=off,isa-serial=on,rtc=off${spec.memoryFile ? ",memory-backend=ram0" : ""}`,
    ...(spec.memoryFile
      ? ["-object", `memory-backend-file,id=ram0,size=${spec.memMib}M,mem-path=${spec.memoryFile.path},share=${spec.memoryFile.shared ? "on" : "off"}`]
      : []),
    "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
    ...(spec.accel === "kvm" ? ["-accel", "kvm", "-cpu", "host"] : ["-accel", "tcg,tb-size=256", "-cpu", "max"]),
    "-m", `${spec.memMib}M`,
    "-smp", String(spec.vcpuCount),
    // A restore overwrites all of RAM; loading the kernel first would only cost time and memory.
    ...(spec.incomingPath ? [] : ["-kernel", spec.kernelPath, "-initrd", spec.initramfsPath, "-append", kernelCommandLine(spec)]),
    "-qmp", `unix:${spec.qmpSocket},server=on,wait=off`,
    "-chardev", `socket,id=serial0,path=${spec.serialSocket},server=on,wait=off`,
    "-serial", "chardev:serial0",
    "-drive", `id=root,file=${spec.diskPath},format=qcow2,if=none,discard=unmap`,
    "-device", "virtio-blk-device,drive=root",
    "-device", "virtio-serial-device,id=vser0,max_ports=8",
  ];
  spec.agentSockets.forEach((socket, index) => {
    args.push(
      "-chardev", `socket,id=agent${index},path=${socket},server=on,wait=off`,
      "-device", `virtserialport,bus=vser0.0,nr=${index + 1},chardev=agent${index},name=${AGENT_PORT_NAME}.${index}`,
    );
  });
  args.push("-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-device,rng=rng0");
  if (spec.network) args.push("-netdev", "user,id=net0", "-device", "virtio-net-device,netdev=net0");
  // Start paused either way: pyro attaches to the console before the guest runs.
  if (spec.incomingPath) args.push("-incoming", "defer");
  args.push("-S");
  return args;
}
