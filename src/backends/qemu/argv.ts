import type { Accel } from "./accel.js";
import { GUEST_NET } from "../../network/policy.js";
import { SECCOMP_SANDBOX } from "./jail.js";

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
  /**
   * The guest's NIC is a stream of Ethernet frames on this unix socket, served
   * by pyro's network helper (src/network/helper.ts); QEMU itself opens no
   * host socket for the guest. Required when `network` is set.
   */
  netSocket?: string;
  /**
   * Restore from a saved state (RAM included) instead of booting. The state
   * file is opened by pyro and handed to QEMU as this file descriptor, so the
   * confined QEMU needs neither the file's path nor permission to start a
   * reader process.
   */
  incomingFd?: number;
  /** Install QEMU's seccomp filter (`-sandbox`, see jail.ts). */
  seccomp?: boolean;
}

export const AGENT_PORTS = 4;
export const AGENT_PORT_NAME = "org.pyro.agent";


/**
 * The guest kernel's command line. Under TCG the guest maps programs and
 * libraries at the same addresses every time (`norandmaps`): the emulator
 * keys its translated code by virtual address, so with address layout
 * randomization every new process translated ld.so and libc again, and a
 * process start took ~35 ms instead of ~9 ms. Inside the guest the workload
 * already runs as root, so the layout randomization protected nothing that
 * pyro's isolation relies on; QEMU and the host keep theirs. Under KVM,
 * where it costs nothing, the guest keeps it.
 */
export function kernelCommandLine(shape: MachineShape & { accel: Accel; tscKhz?: number }): string {
  const parts = ["console=ttyS0", "quiet", "reboot=t", "panic=-1"];
  if (shape.accel === "tcg") parts.push("norandmaps");
  if (shape.accel === "tcg" && shape.tscKhz) parts.push(`tsc_early_khz=${shape.tscKhz}`, "tsc=reliable", "no_timer_check");
  if (shape.network) {
    parts.push(`pyro.ip=${GUEST_NET.ip}/${GUEST_NET.prefixLength}`, `pyro.gw=${GUEST_NET.gateway}`, `pyro.dns=${GUEST_NET.dns}`, `pyro.mtu=${GUEST_NET.mtu}`);
  }
  return parts.join(" ");
}

/**
 * QEMU argv for a microvm. The device list and its order are fixed by the
 * shape alone, which is what lets a saved state restore into a new process.
 */
export function qemuArgs(spec: LaunchSpec): string[] {
  const args = [
    "-name", "pyro",
    "-M", "microvm,x-option-roms=off,isa-serial=on,rtc=off",
    "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
    ...(spec.seccomp ? ["-sandbox", SECCOMP_SANDBOX] : []),
    ...(spec.accel === "kvm" ? ["-accel", "kvm", "-cpu", "host"] : ["-accel", "tcg,tb-size=256", "-cpu", "max"]),
    "-m", `${spec.memMib}M`,
    "-smp", String(spec.vcpuCount),
    // A restore overwrites all of RAM; loading the kernel first would only cost time and memory.
    ...(spec.incomingFd !== undefined ? [] : ["-kernel", spec.kernelPath, "-initrd", spec.initramfsPath, "-append", kernelCommandLine(spec)]),
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
  if (spec.network) {
    // Made for a template the socket has no listener yet; QEMU then runs with the NIC unplugged, and each restored copy connects its own.
    if (!spec.netSocket) throw new Error("a VM with network needs the network helper's socket");
    args.push("-netdev", `stream,id=net0,server=off,addr.type=unix,addr.path=${spec.netSocket}`, "-device", "virtio-net-device,netdev=net0");
  }
  // Start paused either way: pyro attaches to the console before the guest runs.
  if (spec.incomingFd !== undefined) args.push("-incoming", "defer");
  args.push("-S");
  return args;
}
