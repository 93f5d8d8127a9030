import { mkdir } from "node:fs/promises";
import { dirname } from "node:path";
import lockfile from "proper-lockfile";
import { setTimeout as sleep } from "node:timers/promises";
import { ErrorCode, PyroError } from "../errors.js";
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
  /** Stops waiting when aborted (a cancelled call does not wait out another process's lock). */
  signal?: AbortSignal;
}

/**
 * Runs `fn` while holding an inter-process lock on `path` (which need not
 * exist). Used around every read-modify-write of shared state.
 */
export async function withLock<T>(path: string, fn: () => Promise<T>, options: LockOptions = {}): Promise<T> {
  await mkdir(dirname(path), { recursive: true });
  const waitMs = options.waitMs ?? 30_000;
  const staleMs = options.staleMs ?? 20_000;
  const deadline = Date.now() + waitMs;
  let release = await tryLock(path, staleMs);
  while (!release) {
    if (options.signal?.aborted) throw new PyroError(ErrorCode.cancelled, "cancelled while waiting for another pyro process");
    if (Date.now() >= deadline) {
      throw new PyroError(ErrorCode.stateError, `another pyro process held ${path} for over ${Math.round(waitMs / 1000)} s`, {
        hint: "wait for the other pyro process to finish, or end it; a lock whose holder died is taken over after a few seconds",
      });
    }
    await sleep(100);
    release = await tryLock(path, staleMs);
  }
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
    return await lockfile.lock(path, { realpath: false, stale: staleMs, update: Math.max(1000, Math.floor(staleMs / 2)), retries: 0, onCompromised });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ELOCKED") return undefined;
    throw error;
  }
}
