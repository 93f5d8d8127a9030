import { mkdir } from "node:fs/promises";
import { dirname } from "node:path";
import lockfile from "proper-lockfile";
import { debug } from "./log.js";

// The default throws from a timer and kills the process; a lock whose
// directory was deleted (a VM torn down under us) is not worth dying for.
const onCompromised = (error: Error) => debug("lock", `lock compromised: ${error.message}`);

export interface LockOptions {
  /** How long to wait for the lock before failing, in milliseconds (default 30 000). */
  waitMs?: number;
  /**
   * A holder that stops refreshing for this long is presumed dead, in
   * milliseconds (default 20 000). Long holders (builds) refresh automatically.
   */
  staleMs?: number;
}

/**
 * Runs `fn` while holding an inter-process lock on `path` (which need not
 * exist). Used around every read-modify-write of shared state.
 */
export async function withLock<T>(path: string, fn: () => Promise<T>, options: LockOptions = {}): Promise<T> {
  await mkdir(dirname(path), { recursive: true });
  const waitMs = options.waitMs ?? 30_000;
  const staleMs = options.staleMs ?? 20_000;
  const release = await lockfile.lock(path, {
    realpath: false,
    stale: staleMs,
    onCompromised,
    update: Math.max(1000, Math.floor(staleMs / 2)),
    retries: { retries: Math.max(1, Math.ceil(waitMs / 100)), factor: 1, minTimeout: 100, maxTimeout: 100 },
  });
  try {
    return await fn();
  } finally {
    await release().catch(() => undefined);
  }
}

/** Tries to take the lock without waiting; returns a release function or undefined. */
export async function tryLock(path: string, staleMs = 20_000): Promise<(() => Promise<void>) | undefined> {
  await mkdir(dirname(path), { recursive: true });
  try {
    return await lockfile.lock(path, { realpath: false, stale: staleMs, update: Math.floor(staleMs / 2), retries: 0, onCompromised });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ELOCKED") return undefined;
    throw error;
  }
}
