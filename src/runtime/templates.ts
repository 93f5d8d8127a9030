import { createHash } from "node:crypto";
import { chmod, chown, mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Accel } from "../backends/qemu/accel.js";
import { cacheKey } from "../environments/catalog.js";
import type { EnvironmentManifest } from "../environments/store.js";
import { ensureOwnDir, isErrno, readJsonIfExists, sha256File, writeJsonAtomic } from "../util/fs.js";
import { withLock } from "../util/lock.js";
import { debug } from "../util/log.js";
import { pidAlive } from "../util/proc.js";

/** Bump when what a template holds or how it is restored changes. */
export const TEMPLATE_FORMAT = 6;

/** Everything a saved VM state depends on. A template is used only for an identical key. */
export interface TemplateKey {
  format: number;
  environment: string;
  /** Digest over the environment's kernel, initramfs (hence agent) and root image. */
  environmentDigest: string;
  accel: Accel;
  vcpuCount: number;
  memMib: number;
  network: boolean;
  tscKhz: number | null;
  /** Identity of the QEMU binary (path, size, mtime): a new QEMU may not load an old state. */
  qemu: string;
}

interface TemplateFile {
  path: string;
  size: number;
  sha256: string;
  /** inode, size, mtime and ctime when the digest was last checked; any write changes it. */
  stamp: string;
}

interface TemplateManifest {
  key: TemplateKey;
  createdAt: string;
  files: { state: TemplateFile; disk: TemplateFile };
}

export interface ReadyTemplate {
  dir: string;
  /**
   * The saved VM: devices and RAM, as QEMU's migration stream. Restores read
   * it through a file descriptor pyro opens, so it stays readable by pyro's
   * user only and no QEMU can write it (a writable template would let one
   * VM's escaped QEMU plant code in every later VM).
   */
  statePath: string;
  /** The VM's disk when the state was saved; each restored VM starts from a copy. */
  diskPath: string;
  key: TemplateKey;
  /** When it was made: with `dir`, what tells this template from a later one in the same place. */
  createdAt: string;
}

export function environmentDigest(manifest: EnvironmentManifest): string {
  const { kernel, initramfs, rootfs } = manifest.files;
  return createHash("sha256").update(`${kernel.sha256}:${initramfs.sha256}:${rootfs.sha256}`).digest("hex");
}

async function stampOf(path: string): Promise<string | undefined> {
  const info = await stat(path, { bigint: true }).catch(() => undefined);
  return info && `${info.ino}:${info.size}:${info.mtimeNs}:${info.ctimeNs}`;
}

function sameKey(a: TemplateKey, b: TemplateKey): boolean {
  return JSON.stringify(a, Object.keys(a).sort()) === JSON.stringify(b, Object.keys(b).sort());
}

/**
 * Saved states of booted, ready VMs, one per environment and machine shape,
 * from which new VMs are restored instead of booted. Lives in the cache.
 */
export class TemplateStore {
  constructor(readonly root: string) {}

  /** The part of a template's directory name that names its environment and shape. */
  private shapePrefix(key: TemplateKey): string {
    return `${cacheKey(key.environment)}-${key.vcpuCount}cpu-${key.memMib}m-${key.network ? "net" : "nonet"}-${key.accel}-`;
  }

  dirFor(key: TemplateKey): string {
    const hash = createHash("sha256").update(JSON.stringify(key, Object.keys(key).sort())).digest("hex").slice(0, 16);
    return join(this.root, `${this.shapePrefix(key)}${hash}`);
  }

  /**
   * A valid template for `key`, or undefined. Files whose stamp changed since
   * their digest was checked are re-hashed; a template that fails is removed.
   */
  async find(key: TemplateKey): Promise<ReadyTemplate | undefined> {
    const found = await this.lookup(key);
    return "template" in found ? found.template : undefined;
  }

  /** Like find, but says when a template existed and was discarded as bad. */
  async lookup(key: TemplateKey): Promise<{ template: ReadyTemplate } | { discarded: string } | { missing: true }> {
    const dir = this.dirFor(key);
    const manifestPath = join(dir, "manifest.json");
    let manifest: TemplateManifest | undefined;
    try {
      manifest = await readJsonIfExists<TemplateManifest>(manifestPath);
    } catch {
      await this.remove(dir);
      return { discarded: "its manifest is unreadable" };
    }
    if (!manifest) return { missing: true };
    const problem = await this.check(dir, manifest, key);
    if (problem === "restamped") await writeJsonAtomic(manifestPath, manifest, 0o600);
    else if (problem) {
      debug("template", `discarding ${dir}: ${problem}`);
      await this.remove(dir);
      return { discarded: problem };
    }
    const files = manifest.files;
    return { template: { dir, statePath: join(dir, files.state.path), diskPath: join(dir, files.disk.path), key, createdAt: manifest.createdAt } };
  }

  private async check(dir: string, manifest: TemplateManifest, key: TemplateKey): Promise<string | undefined> {
    if (!sameKey(manifest.key, key)) return "it was made for a different environment, agent or machine";
    let restamped = false;
    for (const file of Object.values(manifest.files)) {
      const path = join(dir, file.path);
      const stamp = await stampOf(path);
      if (stamp === undefined) return `${file.path} is missing`;
      if (stamp === file.stamp) continue;
      // Changed on disk since last checked (or copied): only the digest can tell.
      const size = (await stat(path)).size;
      if (size !== file.size) return `${file.path} has ${size} bytes, expected ${file.size}`;
      if ((await sha256File(path)) !== file.sha256) return `${file.path} does not match its digest`;
      file.stamp = stamp;
      restamped = true;
    }
    return restamped ? "restamped" : undefined;
  }

  /**
   * Builds the template for `key` once, even when several processes ask at the
   * same time. `makeState` boots a VM in the given directory and leaves
   * `state` and `disk.qcow2` there. Templates hold a whole VM's memory, so
   * they are pyro's user's alone: directories 0700, files 0600.
   */
  async build(key: TemplateKey, makeState: (workDir: string) => Promise<{ state: string; disk: string }>, signal?: AbortSignal): Promise<ReadyTemplate> {
    const dir = this.dirFor(key);
    await ensureOwnDir(dirname(this.root), "cache directory");
    await mkdir(this.root, { recursive: true, mode: 0o700 });
    await chmod(this.root, 0o700);
    return withLock(
      `${dir}.lock`,
      async () => {
        const existing = await this.find(key);
        if (existing) return existing;
        const work = join(this.root, `.build-${process.pid}-${Date.now()}`);
        await mkdir(work, { recursive: true, mode: 0o700 });
        try {
          const made = await makeState(work);
          const final = join(work, "template");
          await mkdir(final, { mode: 0o700 });
          const files: TemplateManifest["files"] = {
            state: await this.adopt(made.state, final, "state"),
            disk: await this.adopt(made.disk, final, "disk.qcow2"),
          };
          await writeJsonAtomic(join(final, "manifest.json"), { key, createdAt: new Date().toISOString(), files } satisfies TemplateManifest, 0o600);
          await this.remove(dir);
          await rename(final, dir);
        } finally {
          await rm(work, { recursive: true, force: true });
        }
        // Templates of the same shape made for an older environment, agent or QEMU, and any of an older format, are never used again.
        for (const name of await readdir(this.root)) {
          const path = join(this.root, name);
          if (path === dir || name.endsWith(".lock") || name.includes(".deleting-") || name.startsWith(".build-")) continue;
          const format = name.startsWith(this.shapePrefix(key)) ? undefined : await this.formatOf(path);
          if (format === undefined || format !== TEMPLATE_FORMAT) await this.remove(path);
        }
        const made = await this.find(key);
        if (!made) throw new Error(`the template in ${dir} did not validate after it was made`);
        return made;
      },
      { waitMs: 10 * 60_000, staleMs: 60_000, signal },
    );
  }

  /** The format a template was made in; null when its manifest is unreadable (a half-removed or foreign directory). */
  private async formatOf(dir: string): Promise<number | null> {
    const manifest = await readJsonIfExists<TemplateManifest>(join(dir, "manifest.json")).catch(() => undefined);
    return manifest?.key.format ?? null;
  }

  /** Moves a made file into the template, owned by pyro's user and readable by nobody else. */
  private async adopt(from: string, final: string, name: string): Promise<TemplateFile> {
    const path = join(final, name);
    await rename(from, path);
    const uid = process.getuid?.();
    const gid = process.getgid?.();
    if (uid !== undefined && gid !== undefined) await chown(path, uid, gid);
    await chmod(path, 0o600);
    const stamp = await stampOf(path);
    return { path: name, size: (await stat(path)).size, sha256: await sha256File(path), stamp: stamp ?? "" };
  }

  /**
   * Removes a template that failed to restore, but only that one: under the
   * build lock, and only when the directory still holds the template that
   * failed (another process may have made a new one there meanwhile).
   */
  async discard(template: ReadyTemplate): Promise<void> {
    await withLock(
      `${template.dir}.lock`,
      async () => {
        const manifest = await readJsonIfExists<TemplateManifest>(join(template.dir, "manifest.json")).catch(() => undefined);
        if (manifest?.createdAt === template.createdAt) await this.remove(template.dir);
      },
      { waitMs: 30_000, staleMs: 60_000 },
    ).catch((error: unknown) => debug("template", `could not discard ${template.dir}: ${String(error)}`));
  }

  async remove(dir: string): Promise<void> {
    // Rename first so a concurrent reader never sees a half-deleted template.
    const doomed = `${dir}.deleting-${process.pid}-${Date.now()}`;
    try {
      await rename(dir, doomed);
    } catch (error) {
      if (isErrno(error, "ENOENT")) return;
      throw error;
    }
    await rm(doomed, { recursive: true, force: true });
  }

  /** Removes templates whose environment is no longer the built one, and leftovers. */
  async prune(keep: (key: TemplateKey) => boolean): Promise<string[]> {
    const removed: string[] = [];
    let names: string[];
    try {
      names = await readdir(this.root);
    } catch (error) {
      if (isErrno(error, "ENOENT")) return removed;
      throw error;
    }
    for (const name of names) {
      const path = join(this.root, name);
      if (name.endsWith(".lock")) continue;
      if (name.startsWith(".build-")) {
        const pid = Number(/^\.build-(\d+)-/.exec(name)?.[1]);
        if (pid && pidAlive(pid)) continue;
        await rm(path, { recursive: true, force: true });
        removed.push(`templates/${name}`);
        continue;
      }
      const manifest = await readJsonIfExists<TemplateManifest>(join(path, "manifest.json")).catch(() => undefined);
      if (manifest && keep(manifest.key)) continue;
      await rm(path, { recursive: true, force: true });
      removed.push(`templates/${name}`);
    }
    return removed;
  }
}
