import { join } from "node:path";
import { readJsonIfExists, writeJsonAtomic } from "../util/fs.js";
import { withLock } from "../util/lock.js";

/** One drain of the pool: its place in the sequence and what it covered (null: every environment). */
interface DrainEntry {
  seq: number;
  environment: string | null;
  at: string;
}

interface DrainLog {
  drains: DrainEntry[];
  /** The highest number no longer kept: a refill older than it counts as drained. */
  forgotten: number;
}

/** Drains remembered; a refill older than all of them counts as drained (it would have to outlive this many). */
const KEPT = 64;

/**
 * The drains of the pool, numbered in order, in a small file any pyro
 * process can read. A refill notes the number of the latest drain when it
 * begins and stamps it on the VMs it makes; a drain that came later covers
 * those VMs, and the refill, seeing it, stops and deletes what it was making.
 * So a drain needs no way to reach the (often detached) process refilling.
 */
export class PoolDrains {
  private readonly path: string;
  private readonly lockPath: string;

  constructor(stateDir: string) {
    this.path = join(stateDir, "pool", "drains.json");
    this.lockPath = join(stateDir, "locks", "pool-drains");
  }

  /** The log; an unreadable one (it is written atomically, so hardly ever) reads as empty. */
  private async read(): Promise<DrainLog> {
    const log = await readJsonIfExists<Partial<DrainLog>>(this.path).catch(() => undefined);
    return { drains: Array.isArray(log?.drains) ? log.drains : [], forgotten: typeof log?.forgotten === "number" ? log.forgotten : 0 };
  }

  /** The number of the latest drain (0 before the first). */
  async current(): Promise<number> {
    const log = await this.read();
    return log.drains.at(-1)?.seq ?? log.forgotten;
  }

  /** Records a new drain and returns its number: VMs stamped with a lower one are its to delete. */
  async begin(environment: string | null): Promise<number> {
    return withLock(this.lockPath, async () => {
      const log = await this.read();
      // Never below the clock in milliseconds: a log lost and begun again still numbers above every refill that read the old one.
      const seq = Math.max((log.drains.at(-1)?.seq ?? log.forgotten) + 1, Date.now());
      const drains = [...log.drains, { seq, environment, at: new Date().toISOString() }];
      const dropped = drains.slice(0, Math.max(0, drains.length - KEPT));
      const forgotten = Math.max(log.forgotten, ...dropped.map((drain) => drain.seq));
      await writeJsonAtomic(this.path, { drains: drains.slice(-KEPT), forgotten } satisfies DrainLog);
      return seq;
    });
  }

  /** Whether a drain covering `environment` began after drain number `since`. */
  async drainedSince(since: number, environment: string): Promise<boolean> {
    const log = await this.read();
    // Drains after `since` that are no longer kept may have covered it.
    if (log.forgotten > since) return true;
    return log.drains.some((drain) => drain.seq > since && (drain.environment === null || drain.environment === environment));
  }
}
