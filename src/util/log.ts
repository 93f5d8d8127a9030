import { debugEnabled } from "../config.js";

/** Debug lines go to stderr only when PYRO_DEBUG=1; stdout belongs to the front ends. */
export function debug(scope: string, message: string): void {
  if (debugEnabled()) process.stderr.write(`[pyro:${scope}] ${message}\n`);
}
