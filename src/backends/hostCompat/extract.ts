import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { chmod, link, lstat, mkdir, open, readdir, rename, rm, symlink, utimes } from "node:fs/promises";
import { dirname, join, posix } from "node:path";
import { ErrorCode, PyroError } from "../../errors.js";
import { DEFAULT_SOURCE_LIMITS, forEachTarEntry, kindOfEntry, tarStreamOf, TreeChecker, type CheckedSource, type SourceLimits } from "../../sources/tree.js";

export interface PushCounts {
  files: number;
  dirs: number;
  symlinks: number;
  bytes: number;
}

/**
 * Host-compat counterpart of the guest agent's put_tar: the same rules, the
 * same staging and merge, into a directory on the host. `dest` must be at or
 * under `root`; every existing component below `root` must be a real directory.
 */
export async function extractInto(root: string, dest: string, source: CheckedSource, limits: SourceLimits = DEFAULT_SOURCE_LIMITS): Promise<PushCounts> {
  await prepareDest(root, dest);
  const staging = join(root, `.pyro-staging-${randomBytes(6).toString("hex")}`);
  await mkdir(staging, { mode: 0o700 });
  const counts: PushCounts = { files: 0, dirs: 0, symlinks: 0, bytes: 0 };
  const checker = new TreeChecker(limits);
  try {
    await forEachTarEntry(tarStreamOf(source), async (entry) => {
      const { kind, typeName } = kindOfEntry(entry);
      const name = checker.check(entry.path, kind, { size: entry.size, linkTarget: entry.linkpath, typeName });
      if (name === undefined) return;
      const target = join(staging, name);
      const mode = (entry.mode ?? 0o644) & 0o777;
      await mkdir(dirname(target), { recursive: true });
      if (kind === "dir") {
        await mkdir(target, { recursive: true });
        await chmod(target, mode | 0o700);
        counts.dirs += 1;
        return;
      }
      await rm(target, { force: true });
      if (kind === "file") {
        const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
        const handle = await open(target, flags, mode);
        try {
          for await (const chunk of entry) await handle.write(chunk);
          await handle.chmod(mode);
        } finally {
          await handle.close();
        }
        if (entry.mtime) await utimes(target, entry.mtime, entry.mtime);
        counts.files += 1;
        counts.bytes += entry.size;
      } else if (kind === "symlink") {
        // Stored cleaned, as the agent does: "y/../w" would climb out if y were a symlink to "..".
        await symlink(posix.normalize(entry.linkpath ?? ""), target);
        counts.symlinks += 1;
      } else if (kind === "hardlink") {
        await link(join(staging, TreeChecker.clean(entry.linkpath ?? "") ?? ""), target);
        counts.files += 1;
      }
    });
    await merge(staging, dest);
    return counts;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

async function prepareDest(root: string, dest: string): Promise<void> {
  if (dest !== root && !dest.startsWith(`${root}/`)) throw new PyroError(ErrorCode.internal, `${dest} is not under ${root}`);
  let current = root;
  for (const part of dest.slice(root.length).split("/").filter(Boolean)) {
    current = join(current, part);
    const info = await lstat(current).catch(() => undefined);
    if (!info) await mkdir(current, { mode: 0o755 });
    else if (!info.isDirectory()) {
      throw new PyroError(ErrorCode.sourceRefused, `destination ${current} exists and is not a directory${info.isSymbolicLink() ? " (a symlink is never followed)" : ""}`);
    }
  }
}

/** Moves the staged tree into dest; symlinks in dest are replaced, never followed. */
async function merge(from: string, to: string): Promise<void> {
  for (const name of await readdir(from)) {
    const source = join(from, name);
    const target = join(to, name);
    const [staged, existing] = await Promise.all([lstat(source), lstat(target).catch(() => undefined)]);
    if (staged.isDirectory() && existing?.isDirectory()) {
      // The existing directory keeps its mode: a pushed "tmp/" must not turn a 1777 /tmp into 0755.
      await merge(source, target);
    } else {
      if (existing) await rm(target, { recursive: true, force: true });
      await rename(source, target);
    }
  }
}
