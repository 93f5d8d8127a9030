import { debugEnabled } from "../config.js";

/** Debug lines go to stderr only when PYRO_DEBUG=1; stdout belongs to the front ends. */
export function debug(scope: string, message: string): void {
  if (debugEnabled()) process.stderr.write(`[pyro:${scope}] ${message}\n`);
}

const warned = new Set<string>();

/**
 * A warning about something the user should know (a security layer that
 * could not be applied), on stderr once per process and key.
 */
export function warnOnce(key: string, message: string): void {
  if (warned.has(key)) return;
  warned.add(key);
  process.stderr.write(`pyro: warning: ${message}\n`);
}
