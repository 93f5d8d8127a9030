import { randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, readFile, rename, rm, stat } from "node:fs/promises";
import { createHash } from "node:crypto";
import { basename, dirname, join } from "node:path";
import { ErrorCode, PyroError } from "../errors.js";

/**
 * Writes a file so that readers see either the old or the new content, never a
 * torn one: temp file in the same directory, fsync, rename, fsync the directory.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  const tmp = join(dir, `.${basename(path)}.${randomBytes(6).toString("hex")}.tmp`);
  const handle = await open(tmp, "w", mode);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await rename(tmp, path);
  } catch (error) {
    await rm(tmp, { force: true });
    throw error;
  }
  await fsyncDir(dir);
}

export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Mode 0600 by default (state); cache files that other users read pass 0o644. */
export async function writeJsonAtomic(path: string, value: unknown, mode = 0o600): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`, mode);
}

/** Reads JSON, returning undefined when the file does not exist. */
export async function readJsonIfExists<T>(path: string): Promise<T | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if (isErrno(error, "ENOENT")) return undefined;
    throw error;
  }
  return JSON.parse(text) as T;
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) {
    hash.update(chunk as Buffer);
  }
  return hash.digest("hex");
}

export async function pathExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (error) {
    if (isErrno(error, "ENOENT")) return false;
    throw error;
  }
}

export function isErrno(error: unknown, code: string): boolean {
  return typeof error === "object" && error !== null && (error as NodeJS.ErrnoException).code === code;
}

/**
 * Creates `dir` (0700) if needed and checks that it is this user's own: a
 * directory owned by us that nobody else can write. pyro runs QEMU and
 * changes owners of files below its state and cache directories; one that
 * another local user made first (say under /var/tmp) would let that user
 * swap what pyro acts on.
 */
export async function ensureOwnDir(dir: string, what: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const info = await stat(dir);
  const uid = process.getuid?.();
  const problem = !info.isDirectory()
    ? "is not a directory"
    : uid !== undefined && info.uid !== uid
      ? `belongs to uid ${info.uid}, not to this user (uid ${uid})`
      : (info.mode & 0o022) !== 0
        ? `can be written by other users (mode ${(info.mode & 0o777).toString(8)})`
        : undefined;
  if (problem) {
    throw new PyroError(ErrorCode.stateError, `the ${what} ${dir} ${problem}`, {
      hint: `use a directory of your own that only you can write (chmod 700 ${dir}), or point ${what === "state directory" ? "PYRO_STATE_DIR" : "PYRO_CACHE_DIR"} elsewhere`,
    });
  }
}
