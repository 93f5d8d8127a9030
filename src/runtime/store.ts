import { mkdir, readdir, rm, stat } from "node:fs/promises";
import { basename, join } from "node:path";
import type { NetworkPolicy } from "../network/policy.js";
import type { Accel } from "../backends/qemu/accel.js";
import type { QemuProcess } from "../backends/qemu/vm.js";
import { ErrorCode, InvalidArgumentError, PyroError } from "../errors.js";
import { ensureOwnDir, isErrno, readJsonIfExists, writeJsonAtomic } from "../util/fs.js";
import { ID_PATTERN, isId } from "../util/ids.js";
import { withLock } from "../util/lock.js";

export type ExecutionMode = "guest" | "host_compat";
/** `pooled`: started and warmed, waiting in the pool to be handed out by a run. */
export type VmState = "created" | "starting" | "started" | "stopped" | "failed" | "pooled";

export type VmKind = "vm" | "workspace";

export interface WorkspaceFields {
  name: string | null;
  labels: Record<string, string>;
  seed: { mode: "empty" | "directory" | "tar_archive"; seedPath: string | null };
  commandCount: number;
  lastCommand: { command: string; exitCode: number } | null;
  /** Names of the workspace's secrets (their values are only in the secrets file). */
  secretNames?: string[];
}

/** The durable truth about one VM; any pyro process can act on a VM from it. */
export interface PublishedPort {
  service: string;
  guestPort: number;
  hostPort: number;
  forwarder: ProcessRef;
}

export interface VmRecord {
  schema: 1;
  vmId: string;
  /** A plain VM, or the VM behind a persistent workspace. */
  kind: VmKind;
  workspace: WorkspaceFields | null;
  environment: string;
  vcpuCount: number;
  memMib: number;
  ttlSeconds: number;
  /** The guest has a NIC (every policy but `off`). */
  network: boolean;
  /** Absent in records of older pyro versions: derived from `network` then. */
  networkPolicy?: NetworkPolicy;
  allowHosts?: string[];
  allowHostCompat: boolean;
  executionMode: ExecutionMode;
  accel: Accel | null;
  state: VmState;
  createdAt: string;
  expiresAt: string;
  startedAt: string | null;
  lastActivityAt: string;
  qemu: QemuProcess | null;
  /** The network helper serving the guest's NIC, while the VM runs with network. */
  netd?: QemuProcess | null;
  /**
   * Host ports published on 127.0.0.1 by the workspace's services, each
   * served by a forwarder process (one per service) that lives while the VM
   * runs; released whenever the VM stops, fails or is deleted.
   */
  published?: PublishedPort[];
  /** Destinations the operator opened for this VM's network when it started (PYRO_NETWORK_ALLOW_DESTINATIONS). */
  openedDestinations?: string[];
  /** Why the VM is in state `failed`. */
  failure: string | null;
  /** How the VM last started: booted cold, restored from a template snapshot (or forked from a running VM), or resumed with its saved memory. */
  bootMode: "cold" | "restore" | "resume" | null;
  /**
   * Set while the VM belongs to the pool (being made, or waiting to be
   * taken): the template key it was made for, and the number of the latest
   * drain when its refill began (drains with a higher number delete it).
   */
  pool?: { key: string; drainSeq?: number } | null;
  /**
   * The process a one-shot VM (a run, a pool claim) belongs to. When it is
   * gone, nobody will delete the VM, so the next pyro process does.
   */
  owner?: ProcessRef | null;
  /** The root image the VM's disk is backed by, set when the disk is made; a rebuilt environment has a new one. */
  rootfsImage?: string | null;
  /** The process starting the VM while its state is `starting`; a start whose process died is over. */
  starter?: ProcessRef | null;
}

/**
 * The record after activity at `at`: a workspace's time to live counts from
 * its last activity, so one in use does not expire mid-task; a plain VM's
 * counts from its creation.
 */
export function touched(record: VmRecord, at: Date = new Date()): VmRecord {
  const lastActivityAt = at.toISOString();
  if (record.kind !== "workspace") return { ...record, lastActivityAt };
  return { ...record, lastActivityAt, expiresAt: new Date(at.getTime() + record.ttlSeconds * 1000).toISOString() };
}

/** Why a VM or workspace is gone. */
export type GoneReason = "deleted" | "expired" | "reaped" | "drained";

interface Tombstone {
  vmId: string;
  kind: VmKind;
  reason: GoneReason;
  at: string;
  /** Why it had failed, when it was in state failed as it went. */
  failure: string | null;
  expiresAt: string;
}

/** How long the note of a gone VM is kept. */
const TOMBSTONE_MS = 24 * 3600 * 1000;

/** A process, told apart from any later one with its pid by its start time. */
export interface ProcessRef {
  pid: number;
  startTime: string;
}

/** Plain files under the state directory: one directory per VM, its record written atomically under a lock. */
export class VmStore {
  readonly vmsDir: string;
  private readonly locksDir: string;

  /** Checked once per process, before the first record is written. */
  private ownership: Promise<void> | undefined;

  constructor(readonly stateDir: string) {
    this.vmsDir = join(stateDir, "vms");
    this.locksDir = join(stateDir, "locks");
  }

  /** The VM's directory. The id becomes a path, so a malformed one is refused here, whoever passed it. */
  dir(vmId: string): string {
    if (!isId(vmId)) throw new InvalidArgumentError("vmId", `must be an id of 12 lowercase hex digits, got ${JSON.stringify(vmId)}`);
    return join(this.vmsDir, vmId);
  }

  recordPath(vmId: string): string {
    return join(this.dir(vmId), "vm.json");
  }

  async create(record: VmRecord): Promise<void> {
    this.ownership ??= ensureOwnDir(this.stateDir, "state directory");
    await this.ownership;
    await mkdir(this.dir(record.vmId), { recursive: true, mode: 0o700 });
    await writeJsonAtomic(this.recordPath(record.vmId), record);
  }

  async read(vmId: string): Promise<VmRecord | undefined> {
    const path = this.recordPath(vmId);
    let record: VmRecord | undefined;
    try {
      record = await readJsonIfExists<VmRecord>(path);
    } catch (error) {
      throw new PyroError(ErrorCode.stateError, `the record of ${vmId} is unreadable`, { cause: error, hint: `delete it with \`pyro vm delete ${vmId}\`` });
    }
    return record && { ...record, kind: record.kind ?? "vm", workspace: record.workspace ?? null };
  }

  /** The record of a VM of the given kind; a missing one (or one of the other kind) is "not found". */
  async get(vmId: string, kind: VmKind = "vm"): Promise<VmRecord> {
    const record = await this.read(vmId);
    if (!record) throw await this.missing(vmId, kind);
    if (record.kind !== kind) throw notFound(vmId, kind);
    return record;
  }

  private tombstonePath(vmId: string): string {
    return join(this.stateDir, "tombstones", `${vmId}.json`);
  }

  /**
   * Leaves a small note of why and when a VM went, kept for a day, so that a
   * later call on it can say so instead of a bare "not found".
   */
  async bury(record: VmRecord, reason: GoneReason, at: Date = new Date()): Promise<void> {
    const dir = join(this.stateDir, "tombstones");
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const tombstone: Tombstone = { vmId: record.vmId, kind: record.kind, reason, at: at.toISOString(), failure: record.state === "failed" ? record.failure : null, expiresAt: record.expiresAt };
    await writeJsonAtomic(this.tombstonePath(record.vmId), tombstone);
  }

  /** Removes the notes of VMs gone for more than a day (the reaper's job). */
  async pruneTombstones(now = Date.now()): Promise<void> {
    const dir = join(this.stateDir, "tombstones");
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      const path = join(dir, name);
      const info = await stat(path).catch(() => undefined);
      if (info && now - info.mtimeMs > TOMBSTONE_MS) await rm(path, { force: true });
    }
  }

  /** The note of a gone VM, while it is kept; an unreadable one reads as none. */
  private tombstone(vmId: string): Promise<Tombstone | undefined> {
    return readJsonIfExists<Tombstone>(this.tombstonePath(vmId)).catch(() => undefined);
  }

  /** Why a VM went, when its note is still kept. */
  async goneReason(vmId: string): Promise<GoneReason | undefined> {
    return (await this.tombstone(vmId))?.reason;
  }

  /** The "not found" error for an id, saying why and when it went when that is known. */
  async missing(vmId: string, kind: VmKind): Promise<PyroError> {
    const tombstone = await this.tombstone(vmId);
    if (!tombstone || tombstone.kind !== kind || Date.now() - new Date(tombstone.at).getTime() > TOMBSTONE_MS) return notFound(vmId, kind);
    const what = kind === "workspace" ? `workspace ${vmId}` : `VM ${vmId}`;
    const failed = tombstone.failure ? ` (it had failed: ${tombstone.failure})` : "";
    const how: Record<GoneReason, string> = {
      deleted: `was deleted at ${tombstone.at}${failed}`,
      expired: `expired at ${tombstone.expiresAt} (no activity for its time to live) and was removed at ${tombstone.at}${failed}`,
      reaped: `was removed at ${tombstone.at} because the process that owned it had died${failed}`,
      drained: `was a warm VM of the pool, deleted by a drain at ${tombstone.at}`,
    };
    return new PyroError(kind === "workspace" ? ErrorCode.workspaceNotFound : ErrorCode.vmNotFound, `${what} ${how[tombstone.reason]}`, {
      hint: kind === "workspace" ? "create a new workspace (with a longer `ttlSeconds` if it expired)" : "create a new VM",
      details: { reason: tombstone.reason, at: tombstone.at, failure: tombstone.failure },
    });
  }

  /**
   * Read-modify-write under the VM's lock. Returns undefined when the VM is
   * gone. A change that returns the record it was given writes nothing (a
   * durable write costs an fsync, on every exec).
   */
  async update(vmId: string, change: (record: VmRecord) => VmRecord | Promise<VmRecord>): Promise<VmRecord | undefined> {
    return this.locked(vmId, async () => {
      const record = await this.read(vmId);
      if (!record) return undefined;
      const next = await change(record);
      if (next !== record) await writeJsonAtomic(this.recordPath(vmId), next);
      return next;
    });
  }

  locked<T>(vmId: string, fn: () => Promise<T>): Promise<T> {
    return withLock(join(this.locksDir, basename(this.dir(vmId))), fn, { waitMs: 120_000, staleMs: 30_000 });
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

export function notFound(id: string, kind: VmKind): PyroError {
  return kind === "workspace"
    ? new PyroError(ErrorCode.workspaceNotFound, `no workspace with id "${id}"`, { hint: "it may have expired or been deleted; listWorkspaces() shows the live ones" })
    : new PyroError(ErrorCode.vmNotFound, `no VM with id "${id}"`, { hint: "it may have expired or been deleted; listVms() shows the live ones" });
}

/** A record's network policy, also for records written before policies existed. */
export function networkPolicyOf(record: Pick<VmRecord, "network" | "networkPolicy">): NetworkPolicy {
  return record.networkPolicy ?? (record.network ? "egress" : "off");
}

/** "VM 0123…" or "workspace 0123…", for messages. */
export function describe(record: Pick<VmRecord, "kind" | "vmId">): string {
  return `${record.kind === "workspace" ? "workspace" : "VM"} ${record.vmId}`;
}
