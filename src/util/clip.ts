/**
 * Output cut to a size for a reader with little room (a model's context, a
 * journal line): the head and the tail are kept, since a command's first
 * lines say what it did and its last ones how it ended; a marker in between
 * says how much is missing and where to find it.
 */
export interface Clipped {
  text: string;
  /** Whether anything was cut. */
  clipped: boolean;
}

/** Of `maxBytes`, this share goes to the head; the rest to the tail. */
const HEAD_SHARE = 0.25;

/**
 * `data` as text of at most about `maxBytes` (plus the marker). Cuts fall on
 * UTF-8 character boundaries. `where` completes the marker's sentence, e.g.
 * "the full output is in workspace_logs, sequence 7".
 */
export function clipHeadTail(data: Buffer, maxBytes: number, where?: string): Clipped {
  if (data.length <= maxBytes) return { text: data.toString("utf8"), clipped: false };
  const headEnd = charBoundary(data, Math.floor(maxBytes * HEAD_SHARE));
  const tailStart = charBoundary(data, data.length - (maxBytes - headEnd));
  const omitted = tailStart - headEnd;
  const marker = `\n[... pyro: ${omitted} bytes cut from the middle${where ? `; ${where}` : ""} ...]\n`;
  return { text: data.subarray(0, headEnd).toString("utf8") + marker + data.subarray(tailStart).toString("utf8"), clipped: true };
}

/** The nearest offset at or after `at` that does not split a UTF-8 sequence. */
function charBoundary(data: Buffer, at: number): number {
  let i = Math.max(0, Math.min(at, data.length));
  // Continuation bytes are 10xxxxxx; a sequence is at most 4 bytes long.
  for (let steps = 0; steps < 3 && i < data.length && (data[i]! & 0xc0) === 0x80; steps++) i++;
  return i;
}
