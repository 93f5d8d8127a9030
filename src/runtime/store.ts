import { mkdir, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Accel } from "../backends/qemu/accel.js";
import type { QemuProcess } from "../backends/qemu/vm.js";
import { ErrorCode, PyroError } from "../errors.js";
import { isErrno, readJsonIfExists, writeJsonAtomic } from "../util/fs.js";
import { ID_PATTERN } from "../util/ids.js";
import { withLock } from "../util/lock.js";

export type ExecutionMode = "guest" | "host_compat";
export type VmState = "created" | "starting" | "started" | "stopped" | "failed";

/** The durable truth about one VM; any pyro process can act on a VM from it. */
export interface VmRecord {
  schema: 1;
  vmId: string;
  environment: string;
  vcpuCount: number;
  memMib: number;
  ttlSeconds: number;
  network: boolean;
  allowHostCompat: boolean;
  executionMode: ExecutionMode;
  accel: Accel | null;
  state: VmState;
  createdAt: string;
  expiresAt: string;
  startedAt: string | null;
  lastActivityAt: string;
  qemu: QemuProcess | null;
  /** Why the VM is in state `failed`. */
  failure: string | null;
  /** How the VM last started: restored from a template snapshot, or booted cold. */
  bootMode: "cold" | "restore" | null;
}

/** Plain files under the state directory: one directory per VM, its record written atomically under a lock. */
export class VmStore {
  readonly vmsDir: string;
  private readonly locksDir: string;

  constructor(stateDir: string) {
    this.vmsDir = join(stateDir, "vms");
    this.locksDir = join(stateDir, "locks");
  }

  dir(vmId: string): string {
    return join(this.vmsDir, vmId);
  }

  private recordPath(vmId: string): string {
    return join(this.dir(vmId), "vm.json");
  }

  async create(record: VmRecord): Promise<void> {
    await mkdir(this.dir(record.vmId), { recursive: true, mode: 0o700 });
    await writeJsonAtomic(this.recordPath(record.vmId), record);
  }

  async read(vmId: string): Promise<VmRecord | undefined> {
    if (!ID_PATTERN.test(vmId)) return undefined;
    try {
      return await readJsonIfExists<VmRecord>(this.recordPath(vmId));
    } catch (error) {
      throw new PyroError(ErrorCode.stateError, `the record of VM ${vmId} is unreadable`, { cause: error, hint: `delete it with \`pyro vm delete ${vmId}\`` });
    }
  }

  async get(vmId: string): Promise<VmRecord> {
    const record = await this.read(vmId);
    if (!record) {
      throw new PyroError(ErrorCode.vmNotFound, `no VM with id "${vmId}"`, { hint: "it may have expired or been deleted; list workspaces or create a new VM" });
    }
    return record;
  }

  /** Read-modify-write under the VM's lock. Returns undefined when the VM is gone. */
  async update(vmId: string, change: (record: VmRecord) => VmRecord | Promise<VmRecord>): Promise<VmRecord | undefined> {
    return this.locked(vmId, async () => {
      const record = await this.read(vmId);
      if (!record) return undefined;
      const next = await change(record);
      await writeJsonAtomic(this.recordPath(vmId), next);
      return next;
    });
  }

  locked<T>(vmId: string, fn: () => Promise<T>): Promise<T> {
    return withLock(join(this.locksDir, vmId), fn, { waitMs: 120_000, staleMs: 30_000 });
  }

  async remove(vmId: string): Promise<void> {
    await rm(this.dir(vmId), { recursive: true, force: true });
  }

  async ids(): Promise<string[]> {
    try {
      return (await readdir(this.vmsDir)).filter((name) => ID_PATTERN.test(name));
    } catch (error) {
      if (isErrno(error, "ENOENT")) return [];
      throw error;
    }
  }
}
