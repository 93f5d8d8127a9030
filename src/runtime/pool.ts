import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { chooseAccel } from "../backends/qemu/accel.js";
import { operatorDestinations } from "../network/policy.js";
import { packageRoot } from "../config.js";
import { MIN_POOL_TTL_SECONDS, SETTINGS } from "../settings.js";
import type { ResolvedVmOptions } from "./types.js";
import { debug } from "../util/log.js";
import { tryLock } from "../util/lock.js";
import { sameProcess, selfProcess } from "../util/proc.js";
import type { ProcessRef, VmRecord } from "./store.js";
import type { VmManager } from "./vms.js";

/**
 * A small pool of VMs restored ahead of time, per machine shape, each warmed
 * by one command so the emulator has already translated the exec path. A run
 * takes one, gets fresh entropy and clock on its session, uses it, deletes
 * it, and starts a detached process that makes a replacement. Off unless
 * PYRO_POOL_SIZE is set; the guest memory of all pooled VMs is capped.
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

export class VmPool {
  readonly settings: PoolSettings;
  /** Refills run in this process (a server) rather than in a detached one (a CLI run that exits). */
  private readonly inProcess: boolean;
  private filling: Promise<void> = Promise.resolve();
  private readonly stopping = new AbortController();

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

  /** Makes pooled VMs of this shape until the pool is full or the memory cap is reached. Returns how many it made. */
  async fill(options: ResolvedVmOptions, owner?: ProcessRef): Promise<number> {
    if (!this.enabled) return 0;
    const key = await this.keyFor(options);
    if (!key) return 0;
    // One filler per shape at a time; another one already on it is enough.
    const release = await tryLock(join(this.vms.paths.stateDir, "locks", `pool-${key}`), 60_000);
    if (!release) return 0;
    let made = 0;
    try {
      for (;;) {
        const pooled = await this.pooled();
        // Pooled VMs of an older template will never be taken.
        for (const stale of pooled.filter((r) => r.environment === options.environment && r.pool && r.pool.key !== key)) await this.vms.delete(stale.vmId);
        const mine = pooled.filter((r) => r.pool?.key === key);
        const usedMib = pooled.reduce((sum, r) => sum + r.memMib, 0);
        if (mine.length >= this.settings.size || usedMib + options.memMib > (await this.memoryCapMib())) break;
        if (this.stopping.signal.aborted) break;
        const record = await this.vms.create({ ...options, ttlSeconds: this.settings.ttlSeconds, allowHostCompat: false }, {}, { kind: "vm", workspace: null, owner: owner ?? null });
        try {
          await this.vms.start(record.vmId, { signal: this.stopping.signal });
          // Warm the exec path once, so the run that takes this VM does not pay for the emulator's first translation.
          await this.vms.exec(record.vmId, { command: "true", timeoutSeconds: 30 });
          await this.vms.store.update(record.vmId, (current) => ({ ...current, state: "pooled", pool: { key } }));
          made += 1;
        } catch (error) {
          debug("pool", `could not make a pooled VM: ${String(error)}`);
          await this.vms.delete(record.vmId).catch(() => undefined);
          break;
        }
      }
    } finally {
      await release();
    }
    return made;
  }

  /**
   * The pool's memory cap: PYRO_POOL_MAX_MIB, and never more than half of
   * what the host has available now, so warm VMs never crowd out real work.
   */
  private async memoryCapMib(): Promise<number> {
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
  async drain(): Promise<void> {
    if (!this.inProcess) return;
    this.stopping.abort();
    await this.filling;
    const me = await selfProcess();
    for (const record of await this.pooled()) if (sameProcess(record.owner, me)) await this.vms.delete(record.vmId).catch(() => undefined);
  }
}
