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

  private async read(): Promise<DrainEntry[]> {
    const log = await readJsonIfExists<DrainLog>(this.path).catch(() => undefined);
    return Array.isArray(log?.drains) ? log.drains : [];
  }

  /** The number of the latest drain (0 before the first). */
  async current(): Promise<number> {
    return (await this.read()).at(-1)?.seq ?? 0;
  }

  /** Records a new drain and returns its number: VMs stamped with a lower one are its to delete. */
  async begin(environment: string | null): Promise<number> {
    return withLock(this.lockPath, async () => {
      const drains = await this.read();
      const seq = (drains.at(-1)?.seq ?? 0) + 1;
      await writeJsonAtomic(this.path, { drains: [...drains, { seq, environment, at: new Date().toISOString() }].slice(-KEPT) } satisfies DrainLog);
      return seq;
    });
  }

  /** Whether a drain covering `environment` began after drain number `since`. */
  async drainedSince(since: number, environment: string): Promise<boolean> {
    const drains = await this.read();
    const oldest = drains[0]?.seq;
    // Numbers run without gaps: when the one after `since` is no longer kept, drains happened that can no longer be told apart.
    if (oldest !== undefined && oldest > since + 1) return true;
    return drains.some((drain) => drain.seq > since && (drain.environment === null || drain.environment === environment));
  }
}
