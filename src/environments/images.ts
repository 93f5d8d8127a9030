import { createHash } from "node:crypto";
import { chmod, mkdir, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { basename, join } from "node:path";
import { isErrno, pathExists, sha256File, writeFileAtomic } from "../util/fs.js";
import { debug } from "../util/log.js";
import type { FileDigest } from "./store.js";

/**
 * Root filesystem images, named by their SHA-256 and never changed once
 * written. Each VM's disk is a copy-on-write layer whose backing file is one
 * of them, so rebuilding an environment (a new image, a new name) cannot
 * change the disk of a VM made before; and every VM that uses an image is
 * registered beside it, so pruning keeps what a VM still needs.
 */
export class ImageStore {
  readonly dir: string;

  constructor(environmentsDir: string) {
    this.dir = join(environmentsDir, ".images");
  }

  /**
   * Moves a freshly made image into the store and returns its digest with
   * the path as an environment entry (a sibling of this directory) names it.
   * `holder` (the build's work directory) keeps it from being pruned until
   * the entry that names it is in place.
   */
  async adopt(file: string, holder: string): Promise<FileDigest> {
    await mkdir(this.dir, { recursive: true, mode: 0o755 });
    const sha256 = await sha256File(file);
    const name = `${sha256}.qcow2`;
    const target = join(this.dir, name);
    // The same image again (a rebuild that came out identical) is the one already there, unless that one was damaged.
    if ((await pathExists(target)) && (await sha256File(target).catch(() => "")) === sha256) await rm(file, { force: true });
    else {
      await chmod(file, 0o444);
      await rename(file, target);
    }
    await this.retain(target, holder);
    return { path: join("..", ".images", name), size: (await stat(target)).size, sha256 };
  }

  private usersDir(image: string): string {
    return `${image}.users`;
  }

  private userEntry(image: string, holder: string): string {
    return join(this.usersDir(image), createHash("sha256").update(holder).digest("hex").slice(0, 24));
  }

  /** Whether the image is one of this store's (older environments kept theirs in their entry). */
  owns(image: string): boolean {
    return image.startsWith(`${this.dir}/`) && /^[0-9a-f]{64}\.qcow2$/.test(basename(image));
  }

  /**
   * Records that `holder` uses `image` for as long as `holder` exists: a VM's
   * record file (its disk is backed by the image), or a build's directory.
   * Best effort: a cache this user cannot write (built by root, shared) is
   * only read.
   */
  async retain(image: string, holder: string): Promise<void> {
    if (!this.owns(image)) return;
    try {
      await mkdir(this.usersDir(image), { recursive: true, mode: 0o755 });
      await writeFileAtomic(this.userEntry(image, holder), `${holder}\n`, 0o644);
    } catch (error) {
      debug("images", `could not register ${holder} as a user of ${image}: ${String(error)}`);
    }
  }

  /** `holder` no longer needs `image`. */
  async release(image: string, holder: string): Promise<void> {
    if (!this.owns(image)) return;
    await rm(this.userEntry(image, holder), { force: true }).catch(() => undefined);
  }

  /** Holders of `image` that still exist (in any state directory). */
  async users(image: string): Promise<string[]> {
    const live: string[] = [];
    for (const entry of await readdir(this.usersDir(image)).catch(() => [] as string[])) {
      const path = join(this.usersDir(image), entry);
      const holder = (await readFile(path, "utf8").catch(() => "")).trim();
      if (holder && (await pathExists(holder).catch(() => true))) live.push(holder);
      // A holder gone without telling (a VM directory removed by hand, a crash): its entry goes.
      else await rm(path, { force: true }).catch(() => undefined);
    }
    return live;
  }

  /**
   * Removes images that neither a current environment nor any VM uses.
   * Images a VM still needs are kept and reported with their VMs.
   */
  async prune(current: ReadonlySet<string>): Promise<{ removed: string[]; freedBytes: number; kept: { image: string; usedBy: string[] }[] }> {
    const removed: string[] = [];
    const kept: { image: string; usedBy: string[] }[] = [];
    let freedBytes = 0;
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (error) {
      if (isErrno(error, "ENOENT")) return { removed, freedBytes, kept };
      throw error;
    }
    for (const name of names) {
      if (!name.endsWith(".qcow2")) continue;
      const image = join(this.dir, name);
      if (current.has(image)) continue;
      const usedBy = await this.users(image);
      if (usedBy.length) {
        kept.push({ image, usedBy });
        continue;
      }
      freedBytes += ((await stat(image).catch(() => undefined))?.blocks ?? 0) * 512;
      await rm(image, { force: true });
      await rm(this.usersDir(image), { recursive: true, force: true });
      removed.push(`.images/${name}`);
    }
    // Registrations whose image is gone.
    for (const name of names) {
      if (name.endsWith(".qcow2.users") && !(await pathExists(join(this.dir, name.slice(0, -".users".length))))) {
        await rm(join(this.dir, name), { recursive: true, force: true });
      }
    }
    return { removed, freedBytes, kept };
  }
}
