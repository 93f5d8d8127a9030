import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { chooseAccel } from "../backends/qemu/accel.js";
import { operatorDestinations } from "../network/policy.js";
import { packageRoot } from "../config.js";
import { MIN_POOL_TTL_SECONDS, SETTINGS } from "../settings.js";
import type { ResolvedVmOptions, StartHooks } from "./types.js";
import { ErrorCode, PyroError } from "../errors.js";
import { debug } from "../util/log.js";
import { tryLock } from "../util/lock.js";
import { isSameProcessAlive, sameProcess, selfProcess } from "../util/proc.js";
import { PoolDrains } from "./pool-drains.js";
import type { ProcessRef, VmRecord } from "./store.js";
import type { VmManager } from "./vms.js";

/**
 * A small pool of VMs restored ahead of time, per machine shape, each warmed
 * by one command so the emulator has already translated the exec path. A run
 * takes one, gets fresh entropy and clock on its session, uses it, deletes
 * it, and starts a detached process that makes a replacement. Off unless
 * PYRO_POOL_SIZE is set; the guest memory of all pooled VMs is capped.
 *
 * A VM belongs to the pool from its creation by a refill (its record has
 * `pool`) until a run takes it: while it is being made it is `warming` and
 * owned by the refilling process (so it is reaped should that process die);
 * once warm its state is `pooled`.
 */
export interface PoolSettings {
  /** Pooled VMs per shape (PYRO_POOL_SIZE, default 0: no pool). */
  size: number;
  /** Cap on the summed guest memory of pooled VMs, in MiB (PYRO_POOL_MAX_MIB, default 4096). */
  maxMib: number;
  /** A pooled VM not taken within this many seconds is reaped (PYRO_POOL_TTL_SECONDS, default 3600). */
  ttlSeconds: number;
}

function positive(value: string | undefined, fallback: number): number {
  const n = Number(value);
  return Number.isFinite(n) && n >= 0 ? Math.floor(n) : fallback;
}

export function poolSettings(env: NodeJS.ProcessEnv, defaultSize: number = SETTINGS.PYRO_POOL_SIZE.default): PoolSettings {
  return {
    size: positive(env.PYRO_POOL_SIZE, defaultSize),
    maxMib: positive(env.PYRO_POOL_MAX_MIB, SETTINGS.PYRO_POOL_MAX_MIB.default),
    ttlSeconds: Math.max(MIN_POOL_TTL_SECONDS, positive(env.PYRO_POOL_TTL_SECONDS, SETTINGS.PYRO_POOL_TTL_SECONDS.default)),
  };
}

/** A VM of the pool as a listing sees it. */
export interface PoolEntry {
  record: VmRecord;
  /** `pooled`: warm, waiting for a run; `warming`: a refill is making it; `failed`: its QEMU or its maker died. */
  state: "pooled" | "warming" | "failed";
  /** Whether the process named as its owner is alive (false when it names none). */
  ownerAlive: boolean;
  /** Host memory its QEMU has resident now, in MiB; null when it has none running or it cannot be read. */
  residentMib: number | null;
}

/** How long a drain waits for refills that began before it to stop and delete what they were making. */
const DRAIN_WAIT_MS = 90_000;
/** How often a refill checks for a drain while it makes a VM. */
const DRAIN_POLL_MS = 200;

export class VmPool {
  readonly settings: PoolSettings;
  /** Refills run in this process (a server) rather than in a detached one (a CLI run that exits). */
  private readonly inProcess: boolean;
  private filling: Promise<void> = Promise.resolve();
  private readonly stopping = new AbortController();
  private readonly drains: PoolDrains;

  /**
   * `keepWarm`: this process is long-lived and keeps `keepWarm` VMs per
   * shape it has run, refilled here and deleted by `drain()`; the pooled
   * VMs name it as owner, so they go with it should it die.
   */
  constructor(
    private readonly vms: VmManager,
    keepWarm?: number,
  ) {
    this.settings = poolSettings(vms.env, keepWarm ?? 0);
    this.inProcess = keepWarm !== undefined;
    this.drains = new PoolDrains(vms.paths.stateDir);
  }

  get enabled(): boolean {
    return this.settings.size > 0;
  }

  /**
   * Pooled VMs are interchangeable only when their template (environment,
   * agent, QEMU, shape) is the same, and so is the network policy their
   * helper was started with (mode, allowed hosts, opened destinations).
   */
  private async keyFor(options: ResolvedVmOptions): Promise<string | undefined> {
    const check = await this.vms.environments.check(options.environment);
    if (check.state !== "installed" || check.agentChanged) return undefined;
    const environment = await this.vms.environments.ensure(options.environment);
    const { accel } = await chooseAccel(this.vms.paths.stateDir, this.vms.env);
    const key = await this.vms.builder.key(environment, options, accel);
    const network = options.network ? { policy: options.networkPolicy, allowHosts: [...options.allowHosts].sort(), destinations: operatorDestinations(this.vms.env) } : null;
    return createHash("sha256")
      .update(JSON.stringify(key, Object.keys(key).sort()))
      .update(JSON.stringify(network))
      .digest("hex")
      .slice(0, 16);
  }

  private async pooled(): Promise<VmRecord[]> {
    return (await this.vms.list()).filter((record) => record.state === "pooled");
  }

  /**
   * Takes a pooled VM of this shape for a run: it becomes a started VM with
   * the caller's time to live. Undefined when the pool has none.
   */
  async claim(options: ResolvedVmOptions, owner?: ProcessRef): Promise<VmRecord | undefined> {
    if (!this.enabled || options.allowHostCompat) return undefined;
    const key = await this.keyFor(options);
    if (!key) return undefined;
    for (const candidate of await this.pooled()) {
      if (candidate.pool?.key !== key) continue;
      const now = new Date();
      let taken = false;
      const record = await this.vms.store.update(candidate.vmId, (current) => {
        if (current.state !== "pooled" || current.pool?.key !== key) return current;
        taken = true;
        return {
          ...current,
          state: "started",
          pool: null,
          owner: owner ?? null,
          ttlSeconds: options.ttlSeconds,
          createdAt: now.toISOString(),
          expiresAt: new Date(now.getTime() + options.ttlSeconds * 1000).toISOString(),
          lastActivityAt: now.toISOString(),
        };
      });
      if (taken && record) {
        debug("pool", `took ${record.vmId}`);
        return record;
      }
    }
    return undefined;
  }

  /**
   * Makes pooled VMs of this shape until the pool is full or the memory cap
   * is reached. Returns how many it made. A drain that begins meanwhile
   * stops it: the VM it is making is deleted, not pooled.
   */
  async fill(options: ResolvedVmOptions, owner?: ProcessRef): Promise<number> {
    if (!this.enabled) return 0;
    const key = await this.keyFor(options);
    if (!key) return 0;
    // One filler per shape at a time; another one already on it is enough.
    const release = await tryLock(join(this.vms.paths.stateDir, "locks", `pool-${key}`), 60_000);
    if (!release) return 0;
    const since = await this.drains.current();
    const drained = () => this.drains.drainedSince(since, options.environment);
    // Owned by this process while being made: should it die half-way, the next pyro process deletes the VM.
    const maker = await selfProcess();
    const cancel = new AbortController();
    const stop = () => cancel.abort();
    this.stopping.signal.addEventListener("abort", stop);
    const watch = setInterval(() => {
      drained()
        .then((yes) => yes && cancel.abort())
        .catch(() => undefined);
    }, DRAIN_POLL_MS);
    let made = 0;
    try {
      for (;;) {
        if (cancel.signal.aborted || (await drained())) break;
        const entries = await this.entries();
        // Pooled VMs of an older template will never be taken.
        for (const stale of entries.filter((e) => e.state === "pooled" && e.record.environment === options.environment && e.record.pool?.key !== key)) await this.vms.delete(stale.record.vmId);
        const live = entries.filter((e) => e.state !== "failed");
        const mine = live.filter((e) => e.record.pool?.key === key);
        const usedMib = live.reduce((sum, e) => sum + e.record.memMib, 0);
        if (mine.length >= this.settings.size || usedMib + options.memMib > (await this.capMib())) break;
        const record = await this.vms.create(
          { ...options, ttlSeconds: this.settings.ttlSeconds, allowHostCompat: false },
          {},
          { kind: "vm", workspace: null, owner: maker, pool: { key, drainSeq: since } },
        );
        // Checked again now that the record exists: a drain that began before this check either is seen here, or sees this VM and waits for it.
        if (await drained()) {
          await this.vms.delete(record.vmId, undefined, { reason: "drained" });
          break;
        }
        try {
          await this.vms.start(record.vmId, { signal: cancel.signal });
          // Warm the exec path once, so the run that takes this VM does not pay for the emulator's first translation.
          await this.vms.exec(record.vmId, { command: "true", timeoutSeconds: 30 }, { signal: cancel.signal });
          let pooled = false;
          await this.vms.store.update(record.vmId, async (current) => {
            // Decided under the VM's lock: a drain either began before this and is seen here, or finds the VM pooled and deletes it.
            if (await drained()) return current;
            pooled = true;
            return { ...current, state: "pooled", owner: owner ?? null };
          });
          if (!pooled) {
            await this.vms.delete(record.vmId, undefined, { reason: "drained" });
            break;
          }
          made += 1;
        } catch (error) {
          // A drain seen while booting or warming cancels them: the VM is the drain's, and noted so for it to count.
          const byDrain = await drained().catch(() => false);
          if (!byDrain) debug("pool", `could not make a pooled VM: ${String(error)}`);
          await this.vms.delete(record.vmId, undefined, { reason: byDrain ? "drained" : "deleted" }).catch(() => undefined);
          break;
        }
      }
    } finally {
      clearInterval(watch);
      this.stopping.signal.removeEventListener("abort", stop);
      await release();
    }
    return made;
  }

  /** Every VM of the pool, warm or being made, oldest first. */
  async entries(): Promise<PoolEntry[]> {
    const entries: PoolEntry[] = [];
    for (const record of await this.vms.list()) {
      if (!record.pool) continue;
      entries.push({ record, state: poolState(record), ownerAlive: await ownerAlive(record), residentMib: await residentMib(record) });
    }
    return entries;
  }

  /**
   * The cap on the pool's guest memory in force now, in MiB:
   * PYRO_POOL_MAX_MIB, and never more than half of what the host has
   * available now, so warm VMs never crowd out real work.
   */
  async capMib(): Promise<number> {
    const meminfo = await readFile("/proc/meminfo", "utf8").catch(() => "");
    const availableKib = Number(/^MemAvailable:\s+(\d+)/m.exec(meminfo)?.[1] ?? NaN);
    return Number.isFinite(availableKib) ? Math.min(this.settings.maxMib, Math.floor(availableKib / 1024 / 2)) : this.settings.maxMib;
  }

  /**
   * Refills the pool after a claim: in this process when it keeps VMs warm
   * (a server), else from a detached process, so the caller (often a short
   * CLI run) need not wait.
   */
  refillInBackground(options: ResolvedVmOptions): void {
    if (!this.enabled) return;
    if (this.inProcess) {
      if (this.stopping.signal.aborted) return;
      this.filling = this.filling
        .then(async () => {
          await this.fill(options, await selfProcess());
        })
        .catch((error: unknown) => debug("pool", `could not refill: ${String(error)}`));
      return;
    }
    const args = [
      join(packageRoot(), "bin", "pyro"),
      "pool",
      "fill",
      options.environment,
      "--vcpu-count",
      String(options.vcpuCount),
      "--mem-mib",
      String(options.memMib),
      "--network-policy",
      options.networkPolicy,
      ...options.allowHosts.flatMap((host) => ["--allow-host", host]),
    ];
    const env = {
      ...this.vms.env,
      PYRO_STATE_DIR: this.vms.paths.stateDir,
      PYRO_CACHE_DIR: this.vms.paths.cacheDir,
      PYRO_ENVIRONMENT_CACHE_DIR: this.vms.paths.environmentsDir,
    };
    try {
      spawn(process.execPath, args, { detached: true, stdio: "ignore", env }).unref();
    } catch (error) {
      debug("pool", `could not start a pool filler: ${String(error)}`);
    }
  }

  /** Stops refilling and deletes the pooled VMs this process made (a server shutting down). */
  async close(): Promise<void> {
    if (!this.inProcess) return;
    this.stopping.abort();
    await this.filling;
    const me = await selfProcess();
    for (const record of await this.pooled()) if (sameProcess(record.owner, me)) await this.vms.delete(record.vmId).catch(() => undefined);
  }

  /**
   * Deletes every VM that was in the pool, or being made for it, when the
   * drain began (of one environment, when given), whoever made it. A VM a
   * run takes meanwhile is the run's: the take and the delete are decided
   * under the VM's lock. Refills that began before the drain stop and delete
   * the VM they were making; the drain waits for them. Refills that begin
   * later (after a run that ends meanwhile) are not its business. Returns
   * the VMs deleted, as they were just before.
   */
  async drain(filter: { environment?: string } = {}, hooks: StartHooks = {}): Promise<PoolEntry[]> {
    const ofFilter = (record: VmRecord) => !!record.pool && (!filter.environment || record.environment === filter.environment);
    // The VMs refills are making as the drain begins: a refill may see the drain and delete its VM before the first look below.
    const beingMade = (await this.entries()).filter((entry) => ofFilter(entry.record) && makerAtWork(entry));
    const seq = await this.drains.begin(filter.environment ?? null);
    const covered = (record: VmRecord) => ofFilter(record) && (record.pool?.drainSeq ?? 0) < seq;
    // A refill that saw this drain while it booted marks the VM failed, then deletes it: the drain may lose that race
    // to it, and counts the VM when its note says a drain took it.
    const drainedByRefill = async (entry: PoolEntry) => entry.state === "failed" && (await this.vms.store.goneReason(entry.record.vmId)) === "drained";
    const deadline = Date.now() + DRAIN_WAIT_MS;
    const deleted: PoolEntry[] = [];
    let waiting: PoolEntry[] = beingMade;
    let announced = false;
    for (;;) {
      if (hooks.signal?.aborted) throw new PyroError(ErrorCode.cancelled, "the drain was cancelled; the pool may still hold VMs", { hint: "drain it again" });
      const entries = (await this.entries()).filter((entry) => covered(entry.record));
      // A VM being made that is gone now was deleted by its refill, which saw this drain.
      for (const entry of waiting) {
        if (!entries.some((e) => e.record.vmId === entry.record.vmId) && !(await this.vms.store.read(entry.record.vmId).catch(() => undefined))) deleted.push(entry);
      }
      waiting = [];
      for (const entry of entries) {
        if (makerAtWork(entry)) {
          waiting.push(entry);
          continue;
        }
        // Decided again under the VM's lock: a run may have taken it, or its maker may be back at it.
        const gone = await this.vms.delete(entry.record.vmId, undefined, {
          reason: "drained",
          onlyIf: async (current) => covered(current) && !makerAtWork({ state: poolState(current), ownerAlive: await ownerAlive(current) }),
        });
        if (gone || (await drainedByRefill(entry))) {
          deleted.push(entry);
          hooks.onProgress?.({ phase: "cleanup", message: `deleted ${entry.state} VM ${entry.record.vmId} (${entry.record.environment}, ${entry.record.memMib} MiB)` });
        }
      }
      if (!waiting.length) return deleted;
      if (Date.now() > deadline) {
        const pids = [...new Set(waiting.map((entry) => entry.record.owner?.pid))].join(", ");
        throw new PyroError(ErrorCode.stateError, `a refill of the pool (pid ${pids}) did not stop within ${DRAIN_WAIT_MS / 1000} s; ${waiting.length} VM(s) it was making remain`, {
          hint: "drain the pool again, or end that process (its VMs are then removed by the next pyro command)",
          details: { deletedVmIds: deleted.map((entry) => entry.record.vmId), remainingVmIds: waiting.map((entry) => entry.record.vmId) },
        });
      }
      if (!announced) hooks.onProgress?.({ phase: "cleanup", message: `waiting for a refill to stop and delete the ${waiting.length} VM(s) it is making` });
      announced = true;
      await sleep(DRAIN_POLL_MS);
    }
  }
}

function poolState(record: VmRecord): PoolEntry["state"] {
  return record.state === "pooled" ? "pooled" : record.state === "failed" ? "failed" : "warming";
}

/** Whether the process named as the VM's owner is alive (false when it names none). */
async function ownerAlive(record: VmRecord): Promise<boolean> {
  return !!record.owner && (await isSameProcessAlive(record.owner.pid, record.owner.startTime));
}

/** A VM that a live refill is still making: the refill deletes it once it sees the drain. */
function makerAtWork(entry: Pick<PoolEntry, "state" | "ownerAlive">): boolean {
  return entry.state === "warming" && entry.ownerAlive;
}

/** Host memory the VM's QEMU has resident (VmRSS), in MiB. */
async function residentMib(record: VmRecord): Promise<number | null> {
  if (!record.qemu || !(await isSameProcessAlive(record.qemu.pid, record.qemu.startTime))) return null;
  const status = await readFile(`/proc/${record.qemu.pid}/status`, "utf8").catch(() => "");
  const kib = /^VmRSS:\s+(\d+) kB/m.exec(status)?.[1];
  return kib === undefined ? null : Math.round(Number(kib) / 1024);
}
