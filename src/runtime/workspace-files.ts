import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { lstat, mkdir, open, readdir, rename, rm, symlink, utimes } from "node:fs/promises";
import { basename, dirname, join, posix } from "node:path";
import { applyPatch, parsePatch, structuredPatch, type StructuredPatch } from "diff";
import { create as createTar, type ReadEntry } from "tar";
import { fsList, fsRead, fsRemove, fsWrite, getTar, type GuestEntry, MAX_FILE_FRAME_BYTES } from "../agent/fs.js";
import { ErrorCode, InvalidArgumentError, PyroError } from "../errors.js";
import { DEFAULT_SOURCE_LIMITS, forEachTarEntry, resolveWorkspaceDest } from "../sources/tree.js";
import type { VmRecord } from "./store.js";
import { NO_SECRETS, type Redactor } from "./secrets.js";
import type { VmManager } from "./vms.js";

export const WORKSPACE_ROOT = "/workspace";
/** Entries one file listing returns at most. */
export const FILE_LIST_MAX_ENTRIES = 1000;
export const FILE_READ_DEFAULT_BYTES = 64 * 1024;
export const FILE_READ_MAX_BYTES = MAX_FILE_FRAME_BYTES;
export const FILE_WRITE_MAX_BYTES = MAX_FILE_FRAME_BYTES;
export const PATCH_MAX_BYTES = 1024 * 1024;
/** Bytes of unified diff returned by default (the file list is always whole). */
export const DIFF_DEFAULT_BYTES = 64 * 1024;
export const DIFF_MAX_BYTES = 1024 * 1024;
/** Files larger than this are reported as changed without their lines. */
const DIFF_FILE_MAX_BYTES = 256 * 1024;
/** How long one file operation may take in the guest. */
const FILE_OP_MS = 60_000;

export interface FileEntry {
  /** Absolute, under /workspace. */
  path: string;
  type: "file" | "dir" | "symlink" | "other";
  size: number;
  /** Permission bits as four octal digits, e.g. "0644". */
  mode: string;
  mtime: string;
  /** A symlink's target, as written. */
  target?: string;
}

export interface FileListResult {
  path: string;
  recursive: boolean;
  entries: FileEntry[];
  /** More entries exist than were returned (FILE_LIST_MAX_ENTRIES). */
  truncated: boolean;
}

export interface FileReadResult {
  path: string;
  size: number;
  /** The content as UTF-8 text; null when the file is binary. */
  text: string | null;
  binary: boolean;
  /** Only the first maxBytes were read. */
  truncated: boolean;
  bytesRead: number;
}

export interface FileWriteResult {
  path: string;
  bytes: number;
  created: boolean;
}

export type ChangeStatus = "added" | "modified" | "deleted";

export interface PatchFileResult {
  path: string;
  status: ChangeStatus;
  hunks: number;
}

export interface PatchResult {
  files: PatchFileResult[];
}

export interface DiffFile {
  path: string;
  status: ChangeStatus;
  binary: boolean;
}

export interface DiffResult {
  /** Unified diff of /workspace against the baseline (git style: a/ is the baseline, b/ now). */
  diff: string;
  files: DiffFile[];
  /** The diff text was cut at maxBytes; `files` is still complete. */
  truncated: boolean;
  added: number;
  modified: number;
  deleted: number;
}

export interface ExportResult {
  /** Absolute path written on the host. */
  outputPath: string;
  format: "directory" | "file" | "tar" | "tgz";
  files: number;
  dirs: number;
  symlinks: number;
  bytes: number;
  /** Devices, FIFOs and sockets in the guest, which are not exported. */
  skipped: number;
}

/** `path` (absolute under /workspace, or relative to it) as the guest's relative form. */
export function workspaceRelative(path: string | undefined, field = "path"): string {
  const absolute = resolveWorkspaceDest(path, WORKSPACE_ROOT, field);
  return absolute === WORKSPACE_ROOT ? "." : absolute.slice(WORKSPACE_ROOT.length + 1);
}

function absoluteOf(relative: string): string {
  return relative === "." ? WORKSPACE_ROOT : `${WORKSPACE_ROOT}/${relative}`;
}

function modeString(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, "0");
}

/** Whether bytes are text: no NUL, and valid UTF-8 (a character cut at the end of a partial read is fine). */
export function isText(data: Buffer, cutAtEnd = false): boolean {
  if (data.includes(0)) return false;
  let end = data.length;
  if (cutAtEnd) {
    // Drop an incomplete sequence at the very end.
    const at = (i: number) => data[i] ?? 0;
    let back = 0;
    while (back < 3 && end - back - 1 >= 0 && (at(end - back - 1) & 0xc0) === 0x80) back++;
    const lead = end - back - 1;
    if (lead >= 0 && at(lead) >= 0xc0) {
      const need = at(lead) >= 0xf0 ? 4 : at(lead) >= 0xe0 ? 3 : 2;
      if (back + 1 < need) end = lead;
    }
  }
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(data.subarray(0, end));
    return true;
  } catch {
    return false;
  }
}

/** What the baseline (the seed) held at one path. */
interface BaselineEntry {
  type: "file" | "symlink" | "dir";
  sha256?: string;
  size: number;
  mode: number;
  target?: string;
  /** For a hardlink, the entry that holds the content. */
  source?: string;
}

/** A tar entry's name in the form the guest's listing uses, or undefined for the root itself. */
function tarName(raw: string): string | undefined {
  const cleaned = posix.normalize(raw.replace(/\/+$/, ""));
  if (cleaned === "." || cleaned === "") return undefined;
  return cleaned.replace(/^\.\//, "");
}

/**
 * The baseline of a workspace: the seed as it was sent to the guest, kept
 * on the host as a tar (`baseline.tar` in the workspace's directory), where
 * the guest cannot change it. A workspace created empty has no such file:
 * its baseline is empty.
 */
export class Baseline {
  constructor(readonly path: string) {}

  async entries(): Promise<Map<string, BaselineEntry>> {
    const map = new Map<string, BaselineEntry>();
    const exists = await lstat(this.path).then(
      () => true,
      () => false,
    );
    if (!exists) return map;
    await forEachTarEntry(this.path, async (entry: ReadEntry) => {
      const name = tarName(entry.path);
      if (name === undefined) return;
      const mode = (entry.mode ?? 0o644) & 0o777;
      if (entry.type === "Directory") {
        map.set(name, { type: "dir", size: 0, mode });
      } else if (entry.type === "SymbolicLink") {
        map.set(name, { type: "symlink", size: 0, mode, target: posix.normalize(entry.linkpath ?? "") });
      } else if (entry.type === "Link") {
        const from = tarName(entry.linkpath ?? "") ?? "";
        const target = map.get(from);
        if (target) map.set(name, { ...target, source: target.source ?? from });
      } else {
        const hash = createHash("sha256");
        for await (const chunk of entry) hash.update(chunk);
        map.set(name, { type: "file", sha256: hash.digest("hex"), size: entry.size ?? 0, mode });
      }
    });
    return map;
  }

  /** The content of the regular files named (`entries` says where hardlinks get theirs), read from the baseline archive. */
  async contents(names: Set<string>, entries: Map<string, BaselineEntry>): Promise<Map<string, Buffer>> {
    const found = new Map<string, Buffer>();
    if (names.size === 0) return found;
    const sources = new Map<string, string[]>();
    for (const name of names) {
      const source = entries.get(name)?.source ?? name;
      sources.set(source, [...(sources.get(source) ?? []), name]);
    }
    await forEachTarEntry(this.path, async (entry: ReadEntry) => {
      const name = tarName(entry.path);
      if (name === undefined || !sources.has(name)) return;
      if (entry.type !== "File" && entry.type !== "OldFile" && entry.type !== "ContiguousFile") return;
      const chunks: Buffer[] = [];
      for await (const chunk of entry) chunks.push(chunk);
      for (const wanted of sources.get(name) ?? []) found.set(wanted, Buffer.concat(chunks));
    });
    return found;
  }
}

/**
 * Files of a running workspace, without a shell: list, read, write, patch,
 * diff against the baseline, and export to the host. Paths are confined to
 * /workspace by the guest agent (guest/PROTOCOL.md); everything the guest
 * sends back is checked again here.
 */
export class WorkspaceFiles {
  constructor(
    private readonly vms: VmManager,
    private readonly onActivity: (id: string, event: WorkspaceEvent) => Promise<void>,
    private readonly redactorOf: (id: string) => Promise<Redactor> = () => Promise.resolve(NO_SECRETS),
  ) {}

  baseline(id: string): Baseline {
    return new Baseline(join(this.vms.store.dir(id), "baseline.tar"));
  }

  private async guest(id: string): Promise<VmRecord> {
    const record = await this.vms.requireRunning(id, "workspace");
    if (record.executionMode === "host_compat") {
      throw new PyroError(ErrorCode.guestUnavailable, `workspace ${id} runs in host_compat mode, which has no guest to serve file operations`, {
        hint: "use execWorkspace() in host_compat workspaces, or create the workspace with a guest",
      });
    }
    return record;
  }

  async list(id: string, path: string | undefined, recursive: boolean, signal?: AbortSignal): Promise<FileListResult> {
    const rel = workspaceRelative(path);
    const record = await this.guest(id);
    const deadline = Date.now() + FILE_OP_MS;
    const { entries, truncated } = await this.vms.withSession(record, signal, (session) => fsList(session, WORKSPACE_ROOT, rel, { recursive, maxEntries: FILE_LIST_MAX_ENTRIES, deadline, signal }), deadline);
    await this.onActivity(id, { kind: "touch" });
    return { path: absoluteOf(rel), recursive, entries: entries.map(toFileEntry), truncated };
  }

  async read(id: string, path: string, maxBytes: number = FILE_READ_DEFAULT_BYTES, signal?: AbortSignal): Promise<FileReadResult> {
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 1 || maxBytes > FILE_READ_MAX_BYTES) {
      throw new InvalidArgumentError("maxBytes", `must be an integer from 1 to ${FILE_READ_MAX_BYTES}`);
    }
    const rel = requireFilePath(path);
    const record = await this.guest(id);
    const deadline = Date.now() + FILE_OP_MS;
    const got = await this.vms.withSession(record, signal, (session) => fsRead(session, WORKSPACE_ROOT, rel, { maxBytes, deadline, signal }), deadline);
    await this.onActivity(id, { kind: "touch" });
    const text = isText(got.data, got.truncated);
    return {
      path: absoluteOf(rel),
      size: got.size,
      text: text ? got.data.toString("utf8") : null,
      binary: !text,
      truncated: got.truncated,
      bytesRead: got.data.length,
    };
  }

  async write(id: string, path: string, text: string, signal?: AbortSignal): Promise<FileWriteResult> {
    const rel = requireFilePath(path);
    if (typeof text !== "string") throw new InvalidArgumentError("text", "must be a string");
    const data = Buffer.from(text, "utf8");
    if (data.length > FILE_WRITE_MAX_BYTES) {
      throw new InvalidArgumentError("text", `is ${data.length} bytes; one write takes at most ${FILE_WRITE_MAX_BYTES}`, "copy large files in with pushWorkspaceSync()");
    }
    const record = await this.guest(id);
    const deadline = Date.now() + FILE_OP_MS;
    const { existed } = await this.vms.withSession(record, signal, (session) => fsWrite(session, WORKSPACE_ROOT, rel, data, { deadline, signal }), deadline);
    await this.onActivity(id, { kind: "file_write", path: absoluteOf(rel), bytes: data.length });
    return { path: absoluteOf(rel), bytes: data.length, created: !existed };
  }

  /**
   * Applies a unified diff (as `git diff` writes and `git apply` takes).
   * Every hunk of every file is checked against the current content first;
   * only if all apply is anything written, so a patch that does not apply
   * changes nothing and the error names the file and hunk.
   */
  async applyPatch(id: string, patch: string, signal?: AbortSignal): Promise<PatchResult> {
    if (typeof patch !== "string" || patch.trim() === "") throw new InvalidArgumentError("patch", "must be a non-empty unified diff");
    if (Buffer.byteLength(patch) > PATCH_MAX_BYTES) throw new InvalidArgumentError("patch", `is larger than ${PATCH_MAX_BYTES} bytes; split it into several patches`);
    const files = parseUnifiedDiff(patch);
    const record = await this.guest(id);
    const deadline = Date.now() + FILE_OP_MS * 2;
    const results = await this.vms.withSession(
      record,
      signal,
      async (session) => {
        const writes: { rel: string; data: Buffer }[] = [];
        const removes: string[] = [];
        const results: PatchFileResult[] = [];
        for (const file of files) {
          const shown = file.newPath ?? file.oldPath ?? "?";
          let current: Buffer | undefined;
          if (file.oldPath !== undefined) {
            const got = await fsRead(session, WORKSPACE_ROOT, file.oldPath, { maxBytes: FILE_WRITE_MAX_BYTES, deadline, signal }).catch((error: unknown) => {
              if (error instanceof PyroError && error.code === ErrorCode.fileNotFound) {
                throw patchError(`${absoluteOf(file.oldPath ?? "")} does not exist, so the patch for it cannot apply`, shown);
              }
              throw error;
            });
            if (got.truncated) throw patchError(`${absoluteOf(file.oldPath)} is larger than ${FILE_WRITE_MAX_BYTES} bytes, too large to patch`, shown);
            if (!isText(got.data)) throw patchError(`${absoluteOf(file.oldPath)} is binary; only text files can be patched`, shown);
            current = got.data;
          } else {
            const exists = await fsList(session, WORKSPACE_ROOT, file.newPath ?? ".", { recursive: false, maxEntries: 1, deadline, signal }).then(
              () => true,
              (error: unknown) => {
                if (error instanceof PyroError && error.code === ErrorCode.fileNotFound) return false;
                throw error;
              },
            );
            if (exists) throw patchError(`${absoluteOf(file.newPath ?? "")} already exists, but the patch creates it`, shown);
          }
          const text = applyHunks(current?.toString("utf8") ?? "", file, shown);
          if (file.newPath === undefined) {
            if (text !== "") throw patchError(`the patch deletes ${absoluteOf(file.oldPath ?? "")} but leaves lines in it`, shown);
            removes.push(file.oldPath ?? "");
            results.push({ path: absoluteOf(file.oldPath ?? ""), status: "deleted", hunks: file.structured.hunks.length });
          } else {
            const data = Buffer.from(text, "utf8");
            if (data.length > FILE_WRITE_MAX_BYTES) throw patchError(`the patched ${absoluteOf(file.newPath)} would be larger than ${FILE_WRITE_MAX_BYTES} bytes`, shown);
            writes.push({ rel: file.newPath, data });
            if (file.oldPath !== undefined && file.oldPath !== file.newPath) removes.push(file.oldPath);
            results.push({ path: absoluteOf(file.newPath), status: file.oldPath === undefined ? "added" : "modified", hunks: file.structured.hunks.length });
          }
        }
        // Everything applies: now write, each file atomically.
        for (const { rel, data } of writes) await fsWrite(session, WORKSPACE_ROOT, rel, data, { deadline, signal });
        if (removes.length) await fsRemove(session, WORKSPACE_ROOT, removes, { deadline, signal });
        return results;
      },
      deadline,
    );
    await this.onActivity(id, { kind: "patch", files: results.map((f) => `${f.status} ${f.path}`) });
    return { files: results };
  }

  /** /workspace now against the baseline: which files changed, and how, as a unified diff. */
  /** With `namesOnly`, only which files changed: no content is read on either side, and `diff` is empty. */
  async diff(id: string, maxBytes: number = DIFF_DEFAULT_BYTES, signal?: AbortSignal, options: { namesOnly?: boolean } = {}): Promise<DiffResult> {
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 1 || maxBytes > DIFF_MAX_BYTES) {
      throw new InvalidArgumentError("maxBytes", `must be an integer from 1 to ${DIFF_MAX_BYTES}`);
    }
    const record = await this.guest(id);
    const baseline = this.baseline(id);
    const before = await baseline.entries();
    const deadline = Date.now() + FILE_OP_MS * 5;
    const result = await this.vms.withSession(
      record,
      signal,
      async (session) => {
        const listing = await fsList(session, WORKSPACE_ROOT, ".", {
          recursive: true,
          maxEntries: DEFAULT_SOURCE_LIMITS.maxEntries,
          hash: true,
          hashMaxBytes: DEFAULT_SOURCE_LIMITS.maxBytes * 2,
          deadline,
          signal,
        });
        if (listing.truncated) {
          throw new PyroError(ErrorCode.sourceTooLarge, `/workspace holds more than ${DEFAULT_SOURCE_LIMITS.maxEntries} entries; too many to compare`, {
            hint: "remove build outputs from /workspace, or inspect the changes with execWorkspace()",
          });
        }
        const now = new Map<string, GuestEntry>();
        for (const entry of listing.entries) if (!isStagingName(entry.path)) now.set(entry.path, entry);
        const changes = compareTrees(before, now);
        if (options.namesOnly) {
          return { diff: "", files: changes.map((change): DiffFile => ({ path: absoluteOf(change.path), status: change.status, binary: false })), truncated: false };
        }
        const wantBefore = new Set<string>();
        for (const change of changes) if (change.before?.type === "file" && change.before.size <= DIFF_FILE_MAX_BYTES) wantBefore.add(change.path);
        const oldContent = await baseline.contents(wantBefore, before);
        let text = "";
        let truncated = false;
        let shown = 0;
        const files: DiffFile[] = [];
        for (const change of changes) {
          let newData: Buffer | undefined;
          if (change.after?.type === "file" && change.after.size <= DIFF_FILE_MAX_BYTES && !truncated) {
            newData = await fsRead(session, WORKSPACE_ROOT, change.path, { maxBytes: DIFF_FILE_MAX_BYTES, deadline, signal })
              .then((got) => got.data)
              .catch(() => undefined);
          }
          const piece = formatChange(change, oldContent.get(change.path), newData);
          files.push({ path: absoluteOf(change.path), status: change.status, binary: piece.binary });
          if (truncated) continue;
          if (Buffer.byteLength(text) + Buffer.byteLength(piece.text) > maxBytes) {
            truncated = true;
            continue;
          }
          text += piece.text;
          shown++;
        }
        if (truncated) {
          text += `[... pyro: diff cut at ${maxBytes} bytes; ${files.length - shown} of ${files.length} changed files not shown; read them with workspace_file_read or ask for more with max_bytes ...]\n`;
        }
        return { diff: text, files, truncated };
      },
      deadline,
    );
    await this.onActivity(id, { kind: "touch" });
    return {
      ...result,
      added: result.files.filter((f) => f.status === "added").length,
      modified: result.files.filter((f) => f.status === "modified").length,
      deleted: result.files.filter((f) => f.status === "deleted").length,
    };
  }

  /**
   * Copies `path` (a file or a directory) out of the guest to `outputPath`
   * on the host: a directory, or a `.tar`/`.tgz`/`.tar.gz` archive by its
   * extension (a single file may also be written as a plain file). The
   * guest's archive is treated as hostile: every entry is checked (no
   * absolute or `..` names, no links leading out, no devices, no writing
   * through a link), sizes and counts are capped, and it is extracted into a
   * fresh staging directory beside `outputPath`, moved into place only when
   * all of it was good. `outputPath` must not exist yet.
   */
  async export(id: string, path: string | undefined, outputPath: string, signal?: AbortSignal): Promise<ExportResult> {
    const rel = workspaceRelative(path);
    if (typeof outputPath !== "string" || outputPath === "") throw new InvalidArgumentError("outputPath", "is required: where on the host to write the export");
    const target = outputPath;
    const format = /\.(tgz|tar\.gz)$/i.test(target) ? "tgz" : /\.tar$/i.test(target) ? "tar" : undefined;
    if (await lstat(target).then(() => true, () => false)) {
      throw new InvalidArgumentError("outputPath", `${target} already exists; pyro does not overwrite host files`, "name a path that does not exist yet");
    }
    const parent = dirname(target);
    const parentInfo = await lstat(parent).catch(() => undefined);
    if (!parentInfo?.isDirectory()) throw new InvalidArgumentError("outputPath", `${parent} is not an existing directory`, "create the directory first, or name a path in an existing one");
    const record = await this.guest(id);
    const staging = join(parent, `.pyro-export-${randomBytes(6).toString("hex")}`);
    await mkdir(staging, { mode: 0o700 });
    const stream = `${staging}.tar`;
    try {
      const deadline = Date.now() + 3600_000;
      const handle = await open(stream, "wx", 0o600);
      let stats;
      let isFile = false;
      try {
        let pending = Promise.resolve();
        stats = await this.vms.withSession(
          record,
          signal,
          async (session) => {
            // A file lists as itself; a directory lists its entries.
            const top = await fsList(session, WORKSPACE_ROOT, rel, { recursive: false, maxEntries: 1, deadline, signal });
            const first = top.entries[0];
            isFile = top.entries.length === 1 && first?.path === rel && first.type === "file";
            return getTar(session, WORKSPACE_ROOT, rel, {
              maxBytes: DEFAULT_SOURCE_LIMITS.maxBytes,
              maxEntries: DEFAULT_SOURCE_LIMITS.maxEntries,
              // Headers and padding on top of the data.
              maxStreamBytes: DEFAULT_SOURCE_LIMITS.maxBytes + DEFAULT_SOURCE_LIMITS.maxEntries * 2048 + 1024 * 1024,
              onChunk: (chunk) => {
                pending = pending.then(() => handle.write(chunk).then(() => undefined));
              },
              deadline,
              signal,
            });
          },
          deadline,
        );
        await pending;
      } finally {
        await handle.close();
      }
      // Files leave with the workspace's secret values redacted, like every other byte pyro hands back.
      const counts = await extractChecked(stream, staging, DEFAULT_SOURCE_LIMITS, await this.redactorOf(id));
      const fileOut = join(staging, basename(rel));
      const single = isFile && counts.files === 1 && counts.dirs === 0 && counts.symlinks === 0 && (await lstat(fileOut).catch(() => undefined))?.isFile() === true;
      let written: ExportResult["format"];
      if (format) {
        const partial = `${target}.partial-${randomBytes(4).toString("hex")}`;
        const names = (await readdir(staging)).sort();
        await createTar({ cwd: staging, file: partial, gzip: format === "tgz", portable: true }, names.length ? names : ["."]);
        await rename(partial, target);
        written = format;
      } else if (single) {
        await rename(fileOut, target);
        written = "file";
      } else {
        await rename(staging, target);
        written = "directory";
      }
      await this.onActivity(id, { kind: "export", path: absoluteOf(rel), outputPath: target });
      return { outputPath: target, format: written, ...counts, skipped: stats.skipped };
    } finally {
      await rm(stream, { force: true });
      await rm(staging, { recursive: true, force: true });
    }
  }
}

function isStagingName(path: string): boolean {
  const base = path.split("/").pop() ?? "";
  return base.startsWith(".pyro-staging-") || base.startsWith(".pyro-write-");
}

function toFileEntry(entry: GuestEntry): FileEntry {
  const file: FileEntry = {
    path: absoluteOf(entry.path),
    type: entry.type,
    size: entry.size,
    mode: modeString(entry.mode),
    mtime: new Date(entry.mtimeMs).toISOString(),
  };
  if (entry.target !== undefined) file.target = entry.target;
  return file;
}

function requireFilePath(path: string): string {
  if (typeof path !== "string" || path === "") throw new InvalidArgumentError("path", "is required: a file under /workspace");
  const rel = workspaceRelative(path);
  if (rel === ".") throw new InvalidArgumentError("path", "names /workspace itself; give a file under it");
  return rel;
}

export type WorkspaceEvent =
  | { kind: "touch" }
  | { kind: "file_write"; path: string; bytes: number }
  | { kind: "patch"; files: string[] }
  | { kind: "export"; path: string; outputPath: string }
  | { kind: "push"; source: string; dest: string; files: number; bytes: number }
  | { kind: "snapshot_create" | "snapshot_delete"; snapshot: string }
  | { kind: "reset"; snapshot: string }
  | { kind: "stop" | "start"; how?: string }
  | { kind: "fork"; children: string[] }
  | { kind: "shell_open" | "shell_close"; shellId: string }
  | { kind: "service_start"; service: string; ready: boolean; publishedPorts: { guestPort: number; hostPort: number }[] }
  | { kind: "service_stop"; service: string };

// ---- patches --------------------------------------------------------------

interface PatchFile {
  /** Relative paths; undefined for /dev/null (a created or deleted file). */
  oldPath: string | undefined;
  newPath: string | undefined;
  structured: StructuredPatch;
}

function patchError(message: string, file: string, details: Record<string, unknown> = {}): PyroError {
  return new PyroError(ErrorCode.patchFailed, `${message}; nothing was changed`, { details: { file, ...details } });
}

/** A path of a patch header (`a/x`, `b/x`, `x`, `/workspace/x` or /dev/null) in relative form. */
function patchPath(raw: string | undefined, side: "a" | "b"): string | undefined {
  if (raw === undefined) return undefined;
  let name = raw.trim().replace(/\t.*$/, "");
  if (name === "/dev/null") return undefined;
  if (name.startsWith('"') && name.endsWith('"')) name = JSON.parse(name) as string;
  if (name.startsWith(`${side}/`)) name = name.slice(2);
  try {
    const rel = workspaceRelative(name, "patch");
    if (rel === ".") throw new InvalidArgumentError("patch", `names /workspace itself (${raw})`);
    return rel;
  } catch (error) {
    if (error instanceof InvalidArgumentError) throw new InvalidArgumentError("patch", `${raw}: only files under /workspace can be patched`);
    throw error;
  }
}

export function parseUnifiedDiff(patch: string): PatchFile[] {
  let parsed: StructuredPatch[];
  try {
    parsed = parsePatch(patch);
  } catch (error) {
    throw new InvalidArgumentError("patch", `is not a unified diff: ${error instanceof Error ? error.message : String(error)}`);
  }
  const files: PatchFile[] = [];
  const seen = new Set<string>();
  for (const structured of parsed) {
    if (structured.oldFileName === undefined && structured.newFileName === undefined && structured.hunks.length === 0) continue;
    if (structured.hunks.length === 0) throw new InvalidArgumentError("patch", `has no hunks for ${structured.newFileName ?? structured.oldFileName ?? "a file"} (renames, mode changes and binary patches are not supported)`);
    const oldPath = patchPath(structured.oldFileName, "a");
    const newPath = patchPath(structured.newFileName, "b");
    if (oldPath === undefined && newPath === undefined) throw new InvalidArgumentError("patch", "has a file with /dev/null on both sides");
    const key = newPath ?? oldPath ?? "";
    if (seen.has(key)) throw new InvalidArgumentError("patch", `changes ${absoluteOf(key)} twice; merge those parts into one`);
    seen.add(key);
    files.push({ oldPath, newPath, structured });
  }
  if (files.length === 0) throw new InvalidArgumentError("patch", "has no file changes (expected ---/+++ headers and @@ hunks)");
  return files;
}

/** Applies a file's hunks one at a time, so the error can name the hunk that does not fit. */
function applyHunks(content: string, file: PatchFile, shown: string): string {
  let text = content;
  const hunks = file.structured.hunks;
  for (const [i, h] of hunks.entries()) {
    const next = applyPatch(text, { ...file.structured, hunks: [h] });
    if (next === false) {
      throw patchError(`hunk ${i + 1} of ${hunks.length} for ${absoluteOf(shown)} (@@ -${h.oldStart},${h.oldLines} +${h.newStart},${h.newLines} @@) does not match the file's current content`, shown, { hunk: i + 1 });
    }
    text = next;
  }
  return text;
}

// ---- diffs ----------------------------------------------------------------

interface Change {
  path: string;
  status: ChangeStatus;
  before?: BaselineEntry;
  after?: GuestEntry;
}

function compareTrees(before: Map<string, BaselineEntry>, now: Map<string, GuestEntry>): Change[] {
  const changes: Change[] = [];
  const paths = new Set<string>();
  for (const [path, entry] of before) if (entry.type !== "dir") paths.add(path);
  for (const [path, entry] of now) if (entry.type === "file" || entry.type === "symlink") paths.add(path);
  for (const path of [...paths].sort()) {
    const b = before.get(path);
    const a = now.get(path);
    const bOk = b && b.type !== "dir" ? b : undefined;
    const aOk = a && (a.type === "file" || a.type === "symlink") ? a : undefined;
    if (bOk && !aOk) changes.push({ path, status: "deleted", before: bOk });
    else if (!bOk && aOk) changes.push({ path, status: "added", after: aOk });
    else if (bOk && aOk) {
      const same =
        bOk.type === aOk.type &&
        (bOk.type === "file" ? bOk.sha256 === aOk.sha256 && (bOk.mode & 0o111) === (aOk.mode & 0o111) : bOk.target === posix.normalize(aOk.target ?? ""));
      if (!same) changes.push({ path, status: "modified", before: bOk, after: aOk });
    }
  }
  return changes;
}

function gitMode(entry: { type: string; mode: number } | undefined): string {
  if (!entry) return "";
  if (entry.type === "symlink") return "120000";
  return entry.mode & 0o111 ? "100755" : "100644";
}

function formatChange(change: Change, oldData: Buffer | undefined, newData: Buffer | undefined): { text: string; binary: boolean } {
  const { path, before, after } = change;
  let head = `diff --git a/${path} b/${path}\n`;
  if (!before) head += `new file mode ${gitMode(after)}\n`;
  else if (!after) head += `deleted file mode ${gitMode(before)}\n`;
  else if (gitMode(before) !== gitMode(after)) head += `old mode ${gitMode(before)}\nnew mode ${gitMode(after)}\n`;
  const side = (entry: BaselineEntry | GuestEntry | undefined, data: Buffer | undefined): string | undefined => {
    if (!entry) return "";
    if (entry.type === "symlink") return entry.target ?? "";
    if (entry.size === 0) return "";
    if (!data || !isText(data)) return undefined;
    return data.toString("utf8");
  };
  const oldText = side(before, oldData);
  const newText = side(after, newData);
  if (oldText === undefined || newText === undefined) {
    const tooLarge = (before?.size ?? 0) > DIFF_FILE_MAX_BYTES || (after?.size ?? 0) > DIFF_FILE_MAX_BYTES;
    const a = before ? `a/${path}` : "/dev/null";
    const b = after ? `b/${path}` : "/dev/null";
    return { text: `${head}${tooLarge ? `Large files ${a} and ${b} differ (over ${DIFF_FILE_MAX_BYTES} bytes; not shown)` : `Binary files ${a} and ${b} differ`}\n`, binary: !tooLarge };
  }
  if (oldText === newText) return { text: head, binary: false };
  const patch = structuredPatch(`a/${path}`, `b/${path}`, oldText, newText, undefined, undefined, { context: 3 });
  let body = `--- ${before ? `a/${path}` : "/dev/null"}\n+++ ${after ? `b/${path}` : "/dev/null"}\n`;
  for (const hunk of patch.hunks) {
    body += `@@ -${hunk.oldLines === 0 ? hunk.oldStart - 1 : hunk.oldStart}${hunk.oldLines === 1 ? "" : `,${hunk.oldLines}`} +${hunk.newLines === 0 ? hunk.newStart - 1 : hunk.newStart}${hunk.newLines === 1 ? "" : `,${hunk.newLines}`} @@\n`;
    for (const line of hunk.lines) body += `${line}\n`;
  }
  return { text: head + body, binary: false };
}

// ---- checked extraction of what the guest exports -------------------------

/**
 * Extracts a tar the guest produced into `dir` (fresh, empty), refusing the
 * whole archive at the first entry that could land outside `dir` or is not a
 * plain file, directory or symlink, and past the caps.
 */
export async function extractChecked(
  archive: string,
  dir: string,
  limits: { maxBytes: number; maxEntries: number },
  redactor: Redactor = NO_SECRETS,
): Promise<{ files: number; dirs: number; symlinks: number; bytes: number }> {
  const counts = { files: 0, dirs: 0, symlinks: 0, bytes: 0 };
  const kinds = new Map<string, "file" | "dir" | "symlink">();
  const dirTimes: { path: string; mtime: Date }[] = [];
  let entries = 0;
  const refuse = (name: string, why: string) =>
    new PyroError(ErrorCode.sourceRefused, `the guest's export has an entry pyro will not write: ${JSON.stringify(name).slice(0, 300)}: ${why}; nothing was written`, {
      hint: "export a smaller path, or remove or replace that entry in the workspace",
      details: { entry: name.slice(0, 300) },
    });
  await forEachTarEntry(createReadStream(archive), async (entry: ReadEntry) => {
    const raw = entry.path;
    if (raw.includes("\0")) throw refuse(raw, "NUL in the name");
    if (raw.startsWith("/")) throw refuse(raw, "absolute name");
    const parts = raw.split("/").filter((p) => p !== "" && p !== ".");
    if (parts.some((p) => p === "..")) throw refuse(raw, "'..' in the name");
    if (parts.length === 0) return;
    const name = parts.join("/");
    if (++entries > limits.maxEntries) throw new PyroError(ErrorCode.sourceTooLarge, `the export has more than ${limits.maxEntries} entries; nothing was written`);
    if (kinds.has(name)) throw refuse(name, "appears twice");
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join("/");
      const kind = kinds.get(parent);
      if (kind === "symlink" || kind === "file") throw refuse(name, `beneath ${parent}, which is not a directory`);
    }
    const out = join(dir, ...parts);
    await mkdir(dirname(out), { recursive: true, mode: 0o755 });
    const mode = (entry.mode ?? 0o644) & 0o777;
    switch (entry.type) {
      case "Directory":
        await mkdir(out, { mode: mode | 0o700 });
        kinds.set(name, "dir");
        counts.dirs++;
        if (entry.mtime) dirTimes.push({ path: out, mtime: entry.mtime });
        return;
      case "SymbolicLink": {
        const target = entry.linkpath ?? "";
        if (target === "" || target.includes("\0")) throw refuse(name, "empty link target");
        if (target.startsWith("/")) throw refuse(name, `symlink to an absolute path (${target.slice(0, 200)})`);
        const resolved = posix.normalize(posix.join(posix.dirname(name), target));
        if (resolved === ".." || resolved.startsWith("../")) throw refuse(name, `symlink leading outside the export (${target.slice(0, 200)})`);
        // Written cleaned: as sent, the kernel could follow a link inside the target before a '..' after it.
        await symlink(posix.normalize(target), out);
        kinds.set(name, "symlink");
        counts.symlinks++;
        return;
      }
      case "File":
      case "OldFile":
      case "ContiguousFile": {
        const size = entry.size ?? 0;
        if (counts.bytes + size > limits.maxBytes) throw new PyroError(ErrorCode.sourceTooLarge, `the export holds more than ${limits.maxBytes} bytes of files; nothing was written`);
        const handle = await open(out, "wx", mode);
        try {
          if (redactor.empty) {
            for await (const chunk of entry) await handle.write(chunk);
          } else {
            const out: Buffer[] = [];
            const redacting = redactor.stream((piece) => out.push(piece));
            for await (const chunk of entry) {
              redacting.push(chunk);
              for (const piece of out.splice(0)) await handle.write(piece);
            }
            redacting.flush();
            for (const piece of out.splice(0)) await handle.write(piece);
          }
          await handle.chmod(mode);
        } finally {
          await handle.close();
        }
        if (entry.mtime) await utimes(out, entry.mtime, entry.mtime);
        kinds.set(name, "file");
        counts.files++;
        counts.bytes += size;
        return;
      }
      default:
        throw refuse(name, `${entry.type} entries are not exported`);
    }
  });
  for (const { path, mtime } of dirTimes.reverse()) await utimes(path, mtime, mtime).catch(() => undefined);
  return counts;
}

/** Writes the seed as sent into the baseline file, passing the bytes on. */
export async function* recordBaseline(stream: AsyncIterable<Buffer | Uint8Array>, path: string): AsyncGenerator<Buffer> {
  const partial = `${path}.partial`;
  const handle = await open(partial, "w", 0o600);
  let complete = false;
  try {
    for await (const chunk of stream) {
      const data = Buffer.from(chunk);
      await handle.write(data);
      yield data;
    }
    complete = true;
  } finally {
    await handle.close();
    if (complete) await rename(partial, path);
    else await rm(partial, { force: true });
  }
}
