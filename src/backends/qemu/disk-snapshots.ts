import { ErrorCode, PyroError } from "../../errors.js";
import { runTool } from "../../util/proc.js";
import { QmpClient } from "./qmp.js";

/**
 * Named snapshots of a VM's disk, kept inside its qcow2 file (internal
 * snapshots): copy-on-write, so making one is quick whatever the disk's
 * size. A running VM's snapshots are taken and dropped by its QEMU (over
 * QMP); a stopped VM's with qemu-img. The qcow2 file is the one record of
 * which snapshots exist.
 */

/** The drive id pyro gives the VM's disk (see argv.ts). */
const DRIVE = "root";

export interface DiskSnapshot {
  name: string;
  createdAt: string;
  /** Bytes of RAM state stored with it (0: pyro's are disk-only). */
  vmStateSize: number;
}

function failed(what: string, detail: string): PyroError {
  return new PyroError(ErrorCode.stateError, `${what}: ${detail.trim().split("\n").slice(-3).join(" ")}`);
}

/** The snapshots in a qcow2 file; readable while QEMU holds it. */
export async function listDiskSnapshots(disk: string): Promise<DiskSnapshot[]> {
  const info = await runTool("qemu-img", ["info", "-U", "--output=json", disk]);
  if (info.code !== 0) throw failed("could not read the disk's snapshots", info.stderr);
  const parsed = JSON.parse(info.stdout) as { snapshots?: { name: string; "date-sec": number; "vm-state-size": number }[] };
  return (parsed.snapshots ?? []).map((s) => ({ name: s.name, createdAt: new Date(s["date-sec"] * 1000).toISOString(), vmStateSize: s["vm-state-size"] }));
}

async function qmpSnapshot(qmpSocket: string, command: string, name: string, what: string, deadline: number): Promise<void> {
  const qmp = await QmpClient.connect(qmpSocket, deadline);
  try {
    await qmp.execute(command, { device: DRIVE, name }, deadline);
  } catch (error) {
    throw failed(what, error instanceof Error ? error.message : String(error));
  } finally {
    qmp.close();
  }
}

/** Takes a snapshot of a running VM's disk through its QEMU. */
export async function snapshotRunningDisk(qmpSocket: string, name: string, deadline: number): Promise<void> {
  await qmpSnapshot(qmpSocket, "blockdev-snapshot-internal-sync", name, `could not snapshot the disk as ${name}`, deadline);
}

export async function deleteRunningDiskSnapshot(qmpSocket: string, name: string, deadline: number): Promise<void> {
  await qmpSnapshot(qmpSocket, "blockdev-snapshot-delete-internal-sync", name, `could not delete the disk snapshot ${name}`, deadline);
}

/** Snapshots, deletes or reverts to a snapshot of a disk no QEMU holds. */
export async function offlineDiskSnapshot(disk: string, action: "create" | "delete" | "apply", name: string): Promise<void> {
  const flag = { create: "-c", delete: "-d", apply: "-a" }[action];
  const result = await runTool("qemu-img", ["snapshot", flag, name, disk]);
  if (result.code !== 0) throw failed(`could not ${action} the disk snapshot ${name}`, result.stderr);
}
