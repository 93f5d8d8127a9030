import { ErrorCode, InvalidArgumentError, PyroError } from "../errors.js";
import type { AgentSession } from "./client.js";

/**
 * Files under a root in the guest (the workspace), through the agent's
 * fs_* and get_tar requests (guest/PROTOCOL.md). The guest resolves every
 * path beneath the root; what it sends back is still checked here, as
 * everything from a guest is.
 */

export type GuestEntryType = "file" | "dir" | "symlink" | "other";

export interface GuestEntry {
  /** Relative to the root, "/"-separated. */
  path: string;
  type: GuestEntryType;
  size: number;
  /** Permission bits. */
  mode: number;
  mtimeMs: number;
  /** A symlink's target, as written. */
  target?: string;
  /** SHA-256 of a regular file, when asked for. */
  sha256?: string;
}

export interface GuestTarStats {
  files: number;
  dirs: number;
  symlinks: number;
  bytes: number;
  /** Devices, FIFOs and sockets, which are not exported. */
  skipped: number;
}

/** The most one fs_read (or fs_write) carries: one frame's payload. */
export const MAX_FILE_FRAME_BYTES = 1024 * 1024;

const TYPES = new Set<GuestEntryType>(["file", "dir", "symlink", "other"]);

function count(value: unknown): number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0 ? value : 0;
}

function badReply(what: string): PyroError {
  return new PyroError(ErrorCode.agentError, `the guest agent sent a malformed ${what}`);
}

/** Whether a path from the guest is a clean relative path (the guest is not trusted to send one). */
export function isCleanRelative(path: string): boolean {
  if (path === ".") return true;
  if (path === "" || path.startsWith("/") || path.endsWith("/") || path.includes("\0")) return false;
  return path.split("/").every((part) => part !== "" && part !== "." && part !== "..");
}

/** The error a caller sees for what the agent refused, about `path`. */
function fsError(field: string, path: string): (code: string, message: string) => PyroError {
  return (code, message) => {
    switch (code) {
      case "not_found":
        return new PyroError(ErrorCode.fileNotFound, `${display(path)} does not exist in the workspace`, { details: { field, path } });
      case "outside_root":
        return new InvalidArgumentError(field, `${display(path)} leads outside /workspace (through '..' or a symbolic link); only files under /workspace can be used`);
      case "wrong_type":
      case "bad_request":
        return new InvalidArgumentError(field, `${message.replace(/^[^:]*: /, `${display(path)}: `)}`);
      case "too_large":
        return new PyroError(ErrorCode.sourceTooLarge, message, { details: { field, path } });
      default:
        return new PyroError(ErrorCode.agentError, `the guest could not use ${display(path)}: ${message}`, {
          hint: "the guest's filesystem refused it: look at the file's permissions and attributes (lsattr), and at free space (df), with execWorkspace()",
          details: { agentCode: code },
        });
    }
  };
}

function display(path: string): string {
  return path === "." ? "/workspace" : `/workspace/${path}`;
}

function parseEntry(raw: unknown): GuestEntry {
  if (typeof raw !== "object" || raw === null) throw badReply("listing");
  const e = raw as Record<string, unknown>;
  if (typeof e.path !== "string" || !isCleanRelative(e.path) || typeof e.type !== "string" || !TYPES.has(e.type as GuestEntryType)) throw badReply("listing");
  const entry: GuestEntry = { path: e.path, type: e.type as GuestEntryType, size: count(e.size), mode: count(e.mode) & 0o7777, mtimeMs: count(e.mtime_ms) };
  if (typeof e.target === "string") entry.target = e.target.slice(0, 4096);
  if (typeof e.sha256 === "string" && /^[0-9a-f]{64}$/.test(e.sha256)) entry.sha256 = e.sha256;
  return entry;
}

export async function fsList(
  session: AgentSession,
  root: string,
  path: string,
  options: { recursive: boolean; maxEntries: number; hash?: boolean; hashMaxBytes?: number; deadline: number; signal?: AbortSignal },
): Promise<{ entries: GuestEntry[]; truncated: boolean }> {
  const entries: GuestEntry[] = [];
  const reply = await session.request(
    "fs_list",
    { root, path, recursive: options.recursive, max_entries: options.maxEntries, hash: options.hash === true, ...(options.hashMaxBytes ? { hash_max_bytes: options.hashMaxBytes } : {}) },
    {
      deadline: options.deadline,
      signal: options.signal,
      dataType: "fs_entries",
      onData: (payload) => {
        let batch: unknown;
        try {
          batch = JSON.parse(payload.toString("utf8"));
        } catch {
          throw badReply("listing");
        }
        if (!Array.isArray(batch)) throw badReply("listing");
        for (const raw of batch) {
          if (entries.length >= options.maxEntries) throw badReply("listing (more entries than asked for)");
          entries.push(parseEntry(raw));
        }
      },
      onError: fsError("path", path),
    },
  );
  return { entries, truncated: reply.header.truncated === true };
}

export async function fsRead(
  session: AgentSession,
  root: string,
  path: string,
  options: { maxBytes: number; deadline: number; signal?: AbortSignal },
): Promise<{ data: Buffer; size: number; mode: number; mtimeMs: number; truncated: boolean }> {
  const reply = await session.request("fs_read", { root, path, max_bytes: options.maxBytes }, { deadline: options.deadline, signal: options.signal, onError: fsError("path", path) });
  if (reply.payload.length > options.maxBytes) throw badReply("file read (more bytes than asked for)");
  const h = reply.header;
  return { data: reply.payload, size: count(h.size), mode: count(h.mode) & 0o7777, mtimeMs: count(h.mtime_ms), truncated: h.truncated === true };
}

export async function fsWrite(
  session: AgentSession,
  root: string,
  path: string,
  data: Buffer,
  options: { mode?: number; deadline: number; signal?: AbortSignal },
): Promise<{ existed: boolean }> {
  if (data.length > MAX_FILE_FRAME_BYTES) {
    throw new PyroError(ErrorCode.sourceTooLarge, `${display(path)}: ${data.length} bytes is more than one write takes (${MAX_FILE_FRAME_BYTES})`, {
      hint: "write large files with pushWorkspaceSync() instead",
    });
  }
  const reply = await session.request(
    "fs_write",
    { root, path, ...(options.mode === undefined ? {} : { mode: options.mode }) },
    { payload: data, deadline: options.deadline, signal: options.signal, onError: fsError("path", path) },
  );
  return { existed: reply.header.existed === true };
}

export async function fsRemove(session: AgentSession, root: string, paths: string[], options: { deadline: number; signal?: AbortSignal }): Promise<void> {
  await session.request("fs_remove", { root, paths }, { deadline: options.deadline, signal: options.signal, onError: fsError("path", paths.join(", ")) });
}

/**
 * Streams `path` out of the guest as a tar archive, chunk by chunk, to
 * `onChunk`. The guest caps what it sends; `maxStreamBytes` caps what is
 * accepted whatever it sends.
 */
export async function getTar(
  session: AgentSession,
  root: string,
  path: string,
  options: { maxBytes: number; maxEntries: number; maxStreamBytes: number; onChunk: (chunk: Buffer) => void; deadline: number; signal?: AbortSignal },
): Promise<GuestTarStats> {
  let received = 0;
  const reply = await session.request(
    "get_tar",
    { root, path, max_bytes: options.maxBytes, max_entries: options.maxEntries },
    {
      deadline: options.deadline,
      signal: options.signal,
      dataType: "tar_data",
      onData: (payload) => {
        received += payload.length;
        if (received > options.maxStreamBytes) {
          throw new PyroError(ErrorCode.sourceTooLarge, `the guest sent more than ${options.maxStreamBytes} bytes for ${display(path)}`);
        }
        options.onChunk(payload);
      },
      onError: fsError("path", path),
    },
  );
  const h = reply.header;
  return { files: count(h.files), dirs: count(h.dirs), symlinks: count(h.symlinks), bytes: count(h.bytes), skipped: count(h.skipped) };
}
