import { closeShell, listShells, openShell, readShell, resizeShell, signalShell, writeShell, type ShellSignal } from "../agent/workloads.js";
import { ErrorCode, InvalidArgumentError, PyroError } from "../errors.js";
import { resolveWorkspaceDest } from "../sources/tree.js";
import type { Redactor } from "./secrets.js";
import type { VmRecord } from "./store.js";
import type { VmManager } from "./vms.js";
import type { WorkspaceEvent } from "./workspace-files.js";

/**
 * Interactive shells in a workspace: a `bash -l` on a PTY in the guest, kept
 * by the agent with its output buffered there (1 MiB, newest kept), so any
 * pyro process can read it from a cursor. What is returned is redacted; a
 * possible start of a secret at the end of the output is held back until
 * the next read shows whether it is one.
 */

export const SHELL_SIGNALS: readonly ShellSignal[] = ["SIGINT", "SIGTERM", "SIGKILL", "SIGHUP"];
export const DEFAULT_SHELL_READ_CHARS = 65_536;
export const MAX_SHELL_READ_CHARS = 1024 * 1024;
export const MAX_SHELL_INPUT_BYTES = 64 * 1024;
/** The longest a read waits for the shell to go quiet. */
export const MAX_WAIT_FOR_IDLE_MS = 60_000;
/** Output quiet this long is taken as complete: nothing is held back any more. */
const SETTLED_MS = 250;
const CALL_MS = 15_000;

export interface ShellOpenRequest {
  cwd?: string;
  cols?: number;
  rows?: number;
  secretEnv?: Record<string, string>;
}

export interface ShellReadRequest {
  cursor?: number;
  maxChars?: number;
  plain?: boolean;
  waitForIdleMs?: number;
}

export interface ShellReadOutcome {
  output: string;
  nextCursor: number;
  /** Output the shell wrote after `cursor` that is no longer buffered (the buffer keeps the newest 1 MiB). */
  droppedChars: number;
  state: "running" | "exited";
  exitCode: number | null;
  signal: string | null;
}

export interface ShellInfo {
  shellId: string;
  pid: number;
  cwd: string;
  cols: number;
  rows: number;
  state: "running" | "exited";
  exitCode: number | null;
  signal: string | null;
  /** Bytes of output so far: a cursor that reads only what comes next. */
  endCursor: number;
  startedAt: string;
}

function intIn(field: string, value: unknown, min: number, max: number, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new InvalidArgumentError(field, `must be a whole number from ${min} to ${max}`);
  }
  return value;
}

export function requireShellId(value: unknown): string {
  if (typeof value !== "string" || !/^sh-[0-9a-f]{12}$/.test(value)) {
    throw new InvalidArgumentError("shellId", `${JSON.stringify(value)} is not a shell id (they look like sh-0123456789ab, as openShell() returned)`);
  }
  return value;
}

export function requireShellSignal(value: unknown): ShellSignal {
  const name = typeof value === "string" ? (value.toUpperCase().startsWith("SIG") ? value.toUpperCase() : `SIG${value.toUpperCase()}`) : "";
  if (!(SHELL_SIGNALS as readonly string[]).includes(name)) throw new InvalidArgumentError("signal", "must be one of INT, TERM, KILL, HUP");
  return name as ShellSignal;
}

// CSI (ESC [ … final), OSC (ESC ] … BEL or ST), DCS/PM/APC/SOS strings, two-byte ESC sequences, and C1 CSI.
// eslint-disable-next-line no-control-regex
const ESCAPES = /\x1b\[[0-?]*[ -/]*[@-~]|\x9b[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[PX^_][^\x1b]*(?:\x1b\\)?|\x1b[ -/]*[0-~]/g;
// eslint-disable-next-line no-control-regex
const CONTROLS = /[\x00-\x08\x0b-\x1f\x7f]/g;

/** Terminal output as plain text: escape sequences and control characters gone, line ends as `\n`. */
export function plainText(text: string): string {
  const lines = text.replace(ESCAPES, "").replace(/\r+\n/g, "\n").split("\n");
  // A carriage return alone rewinds the line: what follows the last one is what the line ends as.
  return lines
    .map((line) => {
      const parts = line.split("\r");
      let shown = "";
      for (const part of parts) shown = part + shown.slice(part.length);
      return shown.replace(CONTROLS, "");
    })
    .join("\n");
}

/** How many bytes at the end of `data` are an incomplete UTF-8 character. */
function incompleteUtf8Tail(data: Buffer): number {
  for (let back = 1; back <= Math.min(3, data.length); back++) {
    const byte = data[data.length - back]!;
    if ((byte & 0xc0) === 0x80) continue; // continuation byte: look further back
    const need = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc0 ? 2 : 1;
    return need > back ? back : 0;
  }
  return 0;
}

export class WorkspaceShells {
  constructor(
    private readonly vms: VmManager,
    private readonly context: {
      guest(id: string): Promise<VmRecord>;
      redactor(id: string): Promise<Redactor>;
      secretEnv(id: string, secretEnv: unknown): Promise<Record<string, string> | undefined>;
      activity(id: string, event: WorkspaceEvent): Promise<void>;
    },
  ) {}

  async open(id: string, request: ShellOpenRequest, signal?: AbortSignal): Promise<ShellInfo> {
    const cwd = resolveWorkspaceDest(request.cwd, "/workspace", "cwd");
    const cols = intIn("cols", request.cols, 1, 1000, 120);
    const rows = intIn("rows", request.rows, 1, 500, 30);
    const secretEnv = await this.context.secretEnv(id, request.secretEnv);
    const record = await this.context.guest(id);
    const opened = await this.vms.withSession(record, signal, (session) => openShell(session, { cwd, cols, rows, secretEnv }, Date.now() + CALL_MS));
    await this.context.activity(id, { kind: "shell_open", shellId: opened.shellId });
    return { shellId: opened.shellId, pid: opened.pid, cwd, cols, rows, state: "running", exitCode: null, signal: null, endCursor: 0, startedAt: new Date().toISOString() };
  }

  async list(id: string, signal?: AbortSignal): Promise<ShellInfo[]> {
    const record = await this.context.guest(id);
    const shells = await this.vms.withSession(record, signal, (session) => listShells(session, Date.now() + CALL_MS));
    return shells.map((s) => ({
      shellId: s.shellId,
      pid: s.pid,
      cwd: s.cwd,
      cols: s.cols,
      rows: s.rows,
      state: s.state,
      exitCode: s.exitCode,
      signal: s.signal,
      endCursor: s.end,
      startedAt: new Date(s.startedUnixMs).toISOString(),
    }));
  }

  async read(id: string, shellId: string, request: ShellReadRequest, signal?: AbortSignal): Promise<ShellReadOutcome> {
    const cursor = intIn("cursor", request.cursor, 0, Number.MAX_SAFE_INTEGER, 0);
    const maxChars = intIn("maxChars", request.maxChars, 1, MAX_SHELL_READ_CHARS, DEFAULT_SHELL_READ_CHARS);
    const waitForIdleMs = request.waitForIdleMs === undefined ? undefined : intIn("waitForIdleMs", request.waitForIdleMs, 0, MAX_WAIT_FOR_IDLE_MS, 0);
    const record = await this.context.guest(id);
    const redactor = await this.context.redactor(id);
    // Read from a little before the cursor, so a secret that began in the previous read's output is still seen whole.
    const back = Math.min(cursor, redactor.overlap);
    const waitMs = waitForIdleMs === undefined ? undefined : Math.min(MAX_WAIT_FOR_IDLE_MS, waitForIdleMs * 4 + 5_000);
    const read = await this.vms.withSession(
      record,
      signal,
      (session) => readShell(session, shellId, { cursor: cursor - back, maxBytes: maxChars + back, waitForIdleMs, waitMs }, Date.now() + (waitMs ?? 0) + CALL_MS, signal),
      Date.now() + (waitMs ?? 0) + CALL_MS * 2,
    );
    const raw = read.data;
    const from = Math.max(0, cursor - read.start);
    const droppedChars = Math.max(0, read.start - cursor);
    const complete = read.nextCursor >= read.end && (read.state === "exited" || read.idleMs >= SETTLED_MS);
    let end = raw.length;
    if (!complete) {
      end = Math.max(from, redactor.safeEnd(raw, from));
      end -= incompleteUtf8Tail(raw.subarray(from, end));
    }
    const { text, consumed } = redactWindow(redactor, raw, from, end);
    let output = text;
    if (request.plain) output = redactor.text(plainText(output));
    return { output, nextCursor: read.start + consumed, droppedChars, state: read.state, exitCode: read.exitCode, signal: read.signal };
  }

  async write(id: string, shellId: string, input: string, appendNewline = true, signal?: AbortSignal): Promise<{ bytes: number }> {
    if (typeof input !== "string") throw new InvalidArgumentError("input", "must be a string");
    const data = Buffer.from(appendNewline ? `${input}\n` : input, "utf8");
    if (data.length > MAX_SHELL_INPUT_BYTES) throw new InvalidArgumentError("input", `is ${data.length} bytes; at most ${MAX_SHELL_INPUT_BYTES} per write (write a file with writeWorkspaceFile() for more)`);
    const record = await this.context.guest(id);
    await this.vms.withSession(record, signal, (session) => writeShell(session, shellId, data, Date.now() + CALL_MS));
    await this.context.activity(id, { kind: "touch" });
    return { bytes: data.length };
  }

  async resize(id: string, shellId: string, cols: number, rows: number, signal?: AbortSignal): Promise<void> {
    const c = intIn("cols", cols, 1, 1000, 120);
    const r = intIn("rows", rows, 1, 500, 30);
    const record = await this.context.guest(id);
    await this.vms.withSession(record, signal, (session) => resizeShell(session, shellId, c, r, Date.now() + CALL_MS));
  }

  async signal(id: string, shellId: string, name: ShellSignal, signal?: AbortSignal): Promise<void> {
    const record = await this.context.guest(id);
    await this.vms.withSession(record, signal, (session) => signalShell(session, shellId, name, Date.now() + CALL_MS));
    await this.context.activity(id, { kind: "touch" });
  }

  async close(id: string, shellId: string, signal?: AbortSignal): Promise<{ exitCode: number | null; signal: string | null }> {
    const record = await this.context.guest(id);
    const closed = await this.vms.withSession(record, signal, (session) => closeShell(session, shellId, Date.now() + CALL_MS));
    await this.context.activity(id, { kind: "shell_close", shellId });
    return closed;
  }
}

/**
 * The redacted text of `raw[from, end)`, and how far into `raw` it reached:
 * a secret that starts before `end` is replaced whole, even when it runs on
 * past `end` or began before `from`.
 */
export function redactWindow(redactor: Redactor, raw: Buffer, from: number, end: number): { text: string; consumed: number } {
  if (redactor.empty) return { text: raw.subarray(from, end).toString("utf8"), consumed: end };
  const matches = redactor.matches(raw);
  const parts: Buffer[] = [];
  let position = from;
  let limit = end;
  for (const match of matches) {
    if (match.end <= position) continue;
    if (match.start >= limit) break;
    if (match.start > position) parts.push(raw.subarray(position, match.start));
    parts.push(Buffer.from(`[REDACTED:${match.name}]`));
    position = match.end;
    limit = Math.max(limit, match.end);
  }
  if (position < limit) parts.push(raw.subarray(position, limit));
  return { text: Buffer.concat(parts).toString("utf8"), consumed: Math.max(position, limit) };
}

export function shellGone(error: unknown): boolean {
  return error instanceof PyroError && error.code === ErrorCode.shellNotFound;
}
