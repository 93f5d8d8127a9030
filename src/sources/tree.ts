import { constants, createReadStream, type Stats } from "node:fs";
import { lstat, open, readdir, readlink, stat } from "node:fs/promises";
import { join, posix } from "node:path";
import { Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import { Header, Parser, Pax, type HeaderData, type ReadEntry } from "tar";
import { ErrorCode, InvalidArgumentError, PyroError } from "../errors.js";

/**
 * Everything that goes into a workspace (a seed, a sync push) is a tree of
 * host files, given as a directory or a tar archive. Before a byte moves, the
 * whole tree is checked here against the rules the guest agent enforces again
 * on its side (guest/PROTOCOL.md, put_tar): a refused tree fails the whole
 * operation, naming its first bad entry, and nothing is written anywhere.
 */

export interface SourceLimits {
  /** Sum of regular file sizes, in bytes. */
  maxBytes: number;
  maxEntries: number;
}

export const DEFAULT_SOURCE_LIMITS: SourceLimits = { maxBytes: 512 * 1024 * 1024, maxEntries: 100_000 };

export type SourceMode = "directory" | "tar_archive";

export interface CheckedSource {
  path: string;
  mode: SourceMode;
  /** For an archive: gzip-compressed or plain, by its first bytes (never by its name). */
  gzip: boolean;
  entries: number;
  bytes: number;
  /** For a directory: every entry as it was checked; exactly these are sent. */
  tree: TreeEntry[];
  /** The archive (or directory) checked: what is sent must still be this file. */
  identity: { dev: number; ino: number };
}

/** A directory entry as checked: what it was, and which file it was. */
export interface TreeEntry {
  rel: string;
  kind: "file" | "dir" | "symlink";
  size: number;
  mode: number;
  mtime: Date;
  linkTarget?: string;
  dev: number;
  ino: number;
}

type Kind = "file" | "dir" | "symlink" | "hardlink" | "other";

function refused(name: string, reason: string): PyroError {
  return new PyroError(ErrorCode.sourceRefused, `${name}: ${reason}`, {
    hint: "remove or fix that entry and try again; nothing was copied",
    details: { entry: name },
  });
}

/**
 * Applies the rules entry by entry, in archive order, remembering what earlier
 * entries created (links may only point at those).
 */
export class TreeChecker {
  private readonly files = new Set<string>();
  private readonly symlinks = new Set<string>();
  private readonly dirs = new Set<string>();
  entries = 0;
  bytes = 0;

  constructor(private readonly limits: SourceLimits) {}

  /** Cleans a name; undefined for the root itself. Throws for names that leave the tree. */
  static clean(raw: string): string | undefined {
    if (raw.includes("\0")) throw refused(JSON.stringify(raw), "name contains a NUL byte");
    if (raw === "") throw refused('""', "empty name");
    if (raw.startsWith("/")) throw refused(raw, "absolute paths are not allowed");
    const parts: string[] = [];
    for (const part of raw.split("/")) {
      if (part === "" || part === ".") continue;
      if (part === "..") throw refused(raw, "path leaves the destination");
      parts.push(part);
    }
    return parts.length ? parts.join("/") : undefined;
  }

  check(raw: string, kind: Kind, info: { size?: number; linkTarget?: string; typeName?: string }): string | undefined {
    const name = TreeChecker.clean(raw);
    if (name === undefined) return undefined;
    this.entries += 1;
    if (this.entries > this.limits.maxEntries) {
      throw new PyroError(ErrorCode.sourceTooLarge, `more than ${this.limits.maxEntries} entries`, { hint: "copy fewer files, or pack them into fewer" });
    }
    const parts = name.split("/");
    for (let i = 1; i < parts.length; i++) {
      const prefix = parts.slice(0, i).join("/");
      if (this.symlinks.has(prefix)) throw refused(name, `written through symlink ${prefix}`);
      if (this.files.has(prefix)) throw refused(name, `beneath regular file ${prefix}`);
    }
    if (this.dirs.has(name) && kind !== "dir") throw refused(name, "replaces a directory of this archive");
    switch (kind) {
      case "other":
        throw refused(name, `${info.typeName ?? "special files"} are not allowed (only files, directories and links)`);
      case "dir":
        this.dirs.add(name);
        return name;
      case "file": {
        this.bytes += info.size ?? 0;
        if (this.bytes > this.limits.maxBytes) {
          throw new PyroError(ErrorCode.sourceTooLarge, `more than ${this.limits.maxBytes} bytes of file data`, { hint: "copy less, or leave build outputs out" });
        }
        this.symlinks.delete(name);
        this.files.add(name);
        return name;
      }
      case "symlink": {
        const target = info.linkTarget ?? "";
        if (target === "" || target.includes("\0")) throw refused(name, "symlink has an empty or invalid target");
        if (target.startsWith("/")) throw refused(name, `symlink target ${target} leaves the destination`);
        const resolved = posix.normalize(posix.join(posix.dirname(name), target));
        if (resolved === ".." || resolved.startsWith("../")) throw refused(name, `symlink target ${target} leaves the destination`);
        this.files.delete(name);
        this.symlinks.add(name);
        return name;
      }
      case "hardlink": {
        const target = info.linkTarget ?? "";
        let cleaned: string | undefined;
        try {
          cleaned = target.startsWith("/") ? undefined : TreeChecker.clean(target);
        } catch {
          cleaned = undefined;
        }
        if (cleaned === undefined || !this.files.has(cleaned)) throw refused(name, `hardlink target ${target} is not a file of this archive`);
        this.files.add(name);
        return name;
      }
    }
  }
}

export function kindOfEntry(entry: ReadEntry): { kind: Kind; typeName: string } {
  switch (entry.type) {
    case "File":
    case "OldFile":
    case "ContiguousFile":
      return { kind: "file", typeName: "file" };
    case "Directory":
      return { kind: "dir", typeName: "directory" };
    case "SymbolicLink":
      return { kind: "symlink", typeName: "symlink" };
    case "Link":
      return { kind: "hardlink", typeName: "hardlink" };
    case "CharacterDevice":
    case "BlockDevice":
      return { kind: "other", typeName: "device nodes" };
    case "FIFO":
      return { kind: "other", typeName: "FIFOs" };
    default:
      return { kind: "other", typeName: `${entry.type} entries` };
  }
}

function kindOfStats(info: Stats): { kind: Kind; typeName: string } {
  if (info.isFile()) return { kind: "file", typeName: "file" };
  if (info.isDirectory()) return { kind: "dir", typeName: "directory" };
  if (info.isSymbolicLink()) return { kind: "symlink", typeName: "symlink" };
  if (info.isCharacterDevice() || info.isBlockDevice()) return { kind: "other", typeName: "device nodes" };
  if (info.isFIFO()) return { kind: "other", typeName: "FIFOs" };
  if (info.isSocket()) return { kind: "other", typeName: "sockets" };
  return { kind: "other", typeName: "special files" };
}

/** Reads each entry of a tar (plain or gzip), in order. The archive is never extracted here. */
export async function forEachTarEntry(path: string | Readable, visit: (entry: ReadEntry) => void | Promise<void>): Promise<void> {
  await new Promise<void>((resolvePromise, reject) => {
    let failed = false;
    const fail = (error: unknown) => {
      if (failed) return;
      failed = true;
      const what = typeof path === "string" ? path : "the source";
      reject(error instanceof PyroError ? error : new PyroError(ErrorCode.sourceRefused, `${what} is not a readable tar archive: ${String(error instanceof Error ? error.message : error)}`));
      input.destroy();
    };
    // Visits run one at a time, in archive order; an entry's data waits (and
    // holds the parser back) until its turn.
    let chain = Promise.resolve();
    const parser = new Parser({
      strict: true,
      onReadEntry: (entry: ReadEntry) => {
        chain = chain.then(async () => {
          try {
            if (!failed) await visit(entry);
          } catch (error) {
            fail(error);
          } finally {
            entry.resume();
          }
        });
      },
    });
    parser.on("error", fail);
    parser.on("warn", (_code: string, message: string | Error) => fail(message instanceof Error ? message : new Error(message)));
    parser.on("end", () => {
      void chain.then(() => {
        if (!failed) resolvePromise();
      });
    });
    const input = typeof path === "string" ? createReadStream(path) : path;
    input.on("error", fail);
    input.pipe(parser);
  });
}

/**
 * Whether a file is a tar archive, and whether it is gzip-compressed, by its
 * first bytes. The same answer decides how it is checked and how it is sent,
 * so a gzip archive named `seed.tar` (or nothing at all) works, and a name
 * never makes pyro send bytes it did not check as they will be read.
 */
async function archiveFormat(path: string): Promise<{ gzip: boolean } | undefined> {
  const handle = await open(path, "r");
  try {
    const head = Buffer.alloc(512);
    const { bytesRead } = await handle.read(head, 0, 512, 0);
    if (bytesRead >= 2 && head[0] === 0x1f && head[1] === 0x8b) return { gzip: true };
    if (bytesRead >= 262 && head.subarray(257, 262).toString("latin1") === "ustar") return { gzip: false };
    // An old-style (v7) tar has no magic; its name is all there is to go by.
    return /\.tar$/i.test(path) ? { gzip: false } : undefined;
  } finally {
    await handle.close();
  }
}

/** Checks a directory or tar archive completely. Throws a PyroError naming the first bad entry. */
export async function checkSource(path: string, limits: SourceLimits = DEFAULT_SOURCE_LIMITS, field = "seedPath"): Promise<CheckedSource> {
  let info: Stats;
  try {
    info = await stat(path);
  } catch {
    throw new InvalidArgumentError(field, `${path} does not exist or cannot be read`, `give \`${field}\` as an existing directory or .tar/.tar.gz/.tgz archive on the host (relative paths are from the current directory)`);
  }
  const checker = new TreeChecker(limits);
  const identity = { dev: info.dev, ino: info.ino };
  if (info.isDirectory()) {
    const tree: TreeEntry[] = [];
    await walk(path, "", checker, tree);
    return { path, mode: "directory", gzip: false, entries: checker.entries, bytes: checker.bytes, tree, identity };
  }
  const format = info.isFile() ? await archiveFormat(path) : undefined;
  if (format) {
    await forEachTarEntry(path, (entry) => {
      const { kind, typeName } = kindOfEntry(entry);
      checker.check(entry.path, kind, { size: entry.size, linkTarget: entry.linkpath, typeName });
    });
    return { path, mode: "tar_archive", gzip: format.gzip, entries: checker.entries, bytes: checker.bytes, tree: [], identity };
  }
  throw new InvalidArgumentError(
    field,
    `${path} is neither a directory nor a .tar, .tar.gz or .tgz archive`,
    `to copy one file, put it in a directory (or a .tar) and give that as \`${field}\`; a workspace's files can also be written one by one (writeWorkspaceFile())`,
  );
}

async function walk(root: string, relative: string, checker: TreeChecker, tree: TreeEntry[]): Promise<void> {
  const names = (await readdir(join(root, relative))).sort();
  for (const name of names) {
    const rel = relative ? `${relative}/${name}` : name;
    const full = join(root, rel);
    const info = await lstat(full);
    const { kind, typeName } = kindOfStats(info);
    const linkTarget = kind === "symlink" ? await readlink(full) : undefined;
    checker.check(rel, kind, { size: info.size, linkTarget, typeName });
    if (kind !== "file" && kind !== "dir" && kind !== "symlink") continue;
    tree.push({ rel, kind, size: kind === "file" ? info.size : 0, mode: info.mode & 0o7777, mtime: info.mtime, linkTarget, dev: info.dev, ino: info.ino });
    if (kind === "dir") await walk(root, rel, checker, tree);
  }
}

/**
 * The checked source as an uncompressed tar stream, for the guest agent.
 * Exactly what was checked is sent: for a directory, the entries recorded
 * then, each file opened without following symlinks and only if it is still
 * the file that was checked (same inode), read for its checked size. A tree
 * changed meanwhile (a file swapped for a link to a host file, a directory
 * for a symlink) ends the stream with an error naming the entry, which fails
 * this transfer and only this one; nothing outside the tree is ever read.
 */
export function tarStreamOf(source: CheckedSource): Readable {
  return Readable.from(source.mode === "tar_archive" ? archiveBytes(source) : packTree(source), { objectMode: false });
}

async function* archiveBytes(source: CheckedSource): AsyncGenerator<Buffer> {
  const handle = await open(source.path, "r");
  try {
    const info = await handle.stat();
    if (info.dev !== source.identity.dev || info.ino !== source.identity.ino) throw changed(source.path, "was replaced after it was checked");
    const raw = handle.createReadStream({ autoClose: false });
    if (!source.gzip) {
      yield* raw;
      return;
    }
    const gunzip = createGunzip();
    raw.on("error", (error) => gunzip.destroy(error));
    yield* raw.pipe(gunzip);
  } finally {
    await handle.close();
  }
}

function changed(name: string, how: string): PyroError {
  return new PyroError(ErrorCode.sourceRefused, `${name} ${how}`, {
    hint: "the source changed while it was being copied; let it settle and push again",
    details: { entry: name },
  });
}

/** Chunk size for reading files into the stream. */
const READ_CHUNK = 256 * 1024;

async function* packTree(source: CheckedSource): AsyncGenerator<Buffer> {
  for (const entry of source.tree) {
    yield* headerBlocks({
      path: entry.kind === "dir" ? `${entry.rel}/` : entry.rel,
      type: entry.kind === "dir" ? "Directory" : entry.kind === "symlink" ? "SymbolicLink" : "File",
      mode: entry.mode,
      size: entry.size,
      mtime: entry.mtime,
      linkpath: entry.linkTarget,
      uid: 0,
      gid: 0,
    });
    if (entry.kind === "file" && entry.size > 0) yield* fileBlocks(source.path, entry);
  }
  yield Buffer.alloc(1024);
}

/** A header block, preceded by a PAX header when a field (a long name) does not fit. */
function headerBlocks(data: HeaderData): Buffer[] {
  const header = new Header(data);
  const block = Buffer.alloc(512);
  const needsPax = header.encode(block, 0);
  return needsPax ? [new Pax(data).encode(), block] : [block];
}

async function* fileBlocks(root: string, entry: TreeEntry): AsyncGenerator<Buffer> {
  let handle;
  try {
    // O_NONBLOCK: a file swapped for a FIFO must not hang the transfer; the check below refuses it.
    handle = await open(join(root, entry.rel), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ELOOP") throw changed(entry.rel, "became a symlink after it was checked");
    throw changed(entry.rel, `could not be opened (${(error as Error).message})`);
  }
  try {
    const info = await handle.stat();
    // Through a directory swapped for a symlink, the name reaches another file: not the one checked.
    if (!info.isFile() || info.dev !== entry.dev || info.ino !== entry.ino) throw changed(entry.rel, "is no longer the file that was checked");
    let remaining = entry.size;
    let position = 0;
    while (remaining > 0) {
      const chunk = Buffer.alloc(Math.min(READ_CHUNK, remaining));
      const { bytesRead } = await handle.read(chunk, 0, chunk.length, position);
      if (bytesRead === 0) throw changed(entry.rel, "shrank after it was checked");
      position += bytesRead;
      remaining -= bytesRead;
      yield bytesRead === chunk.length ? chunk : chunk.subarray(0, bytesRead);
    }
    const padding = (512 - (entry.size % 512)) % 512;
    if (padding) yield Buffer.alloc(padding);
  } finally {
    await handle.close();
  }
}

/**
 * Where a push lands: `/workspace` or a path under it, given absolute or
 * relative to `/workspace`. Anything that leaves `/workspace` is refused.
 */
export function resolveWorkspaceDest(dest: string | undefined, root = "/workspace", field = "dest"): string {
  if (dest === undefined || dest === "" || dest === ".") return root;
  if (dest.includes("\0")) throw new InvalidArgumentError(field, "must not contain NUL bytes");
  const relative = dest.startsWith("/") ? (dest === root ? "" : dest.startsWith(`${root}/`) ? dest.slice(root.length + 1) : undefined) : dest;
  if (relative === undefined) throw new InvalidArgumentError(field, `${dest} is outside ${root}`, `give a path under ${root}, e.g. src or ${root}/src`);
  const parts: string[] = [];
  for (const part of relative.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") throw new InvalidArgumentError(field, `${dest} leaves ${root}`, `give a path under ${root}, e.g. src or ${root}/src`);
    parts.push(part);
  }
  return parts.length ? `${root}/${parts.join("/")}` : root;
}
