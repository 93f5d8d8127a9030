import { constants } from "node:fs";
import { copyFile, mkdir, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { agentBinaryPath, type Paths } from "../config.js";
import { ErrorCode, PyroError } from "../errors.js";
import { isErrno, pathExists, readJsonIfExists, sha256File, writeFileAtomic, writeJsonAtomic } from "../util/fs.js";
import { withLock } from "../util/lock.js";
import { pidAlive, runTool, which } from "../util/proc.js";
import { CATALOG, CATALOG_VERSION, cacheKey, requireEnvironment, type EnvironmentSpec } from "./catalog.js";
import { ImageStore } from "./images.js";
import { buildInitramfs } from "./initramfs.js";
import { ensureKernel } from "./kernel.js";

export const MANIFEST_FORMAT = 1;

export interface FileDigest {
  path: string;
  size: number;
  sha256: string;
}

export interface EnvironmentManifest {
  format: number;
  catalogVersion: number;
  name: string;
  suite: string;
  packages: string[];
  kernelRelease: string;
  diskMib: number;
  builtAt: string;
  files: { kernel: FileDigest; initramfs: FileDigest; rootfs: FileDigest };
  agent: { sha256: string };
}

/** A built environment, validated and ready to boot. */
export interface ReadyEnvironment {
  name: string;
  dir: string;
  kernelPath: string;
  initramfsPath: string;
  rootfsPath: string;
  manifest: EnvironmentManifest;
}

export interface ProgressEvent {
  /** Short machine-readable phase: kernel, rootfs, image, initramfs, verify, done. */
  phase: string;
  message: string;
}

export interface PullOptions {
  /** Rebuild even when a valid entry exists. */
  force?: boolean;
  onProgress?: (event: ProgressEvent) => void;
  signal?: AbortSignal;
}

export type InstallState = "installed" | "not_installed" | "stale" | "corrupt";

const TOOLS = [
  { tool: "mmdebstrap", pkg: "mmdebstrap" },
  { tool: "mkfs.ext4", pkg: "e2fsprogs" },
  { tool: "qemu-img", pkg: "qemu-utils" },
  { tool: "lz4", pkg: "lz4" },
  { tool: "depmod", pkg: "kmod" },
  { tool: "zstd", pkg: "zstd" },
] as const;

export class EnvironmentStore {
  readonly root: string;
  /** Root filesystem images by content; entries and VM disks refer to them. */
  readonly images: ImageStore;
  readonly mirror: string | undefined;
  /** The guest agent built into new initramfs images. */
  readonly agentPath: string;

  constructor(paths: Paths, env: NodeJS.ProcessEnv = process.env) {
    this.root = paths.environmentsDir;
    this.mirror = env.PYRO_DEBIAN_MIRROR || undefined;
    this.agentPath = agentBinaryPath(env);
    this.images = new ImageStore(this.root);
  }

  entryDir(name: string): string {
    return join(this.root, cacheKey(name));
  }

  private kernelsDir(): string {
    return join(this.root, ".kernels");
  }

  private lockPath(name: string): string {
    return join(this.root, ".locks", cacheKey(name));
  }

  /**
   * Quick check used before every boot: the manifest is complete and current
   * and every file has its recorded size. `pull` re-verifies digests.
   */
  async check(name: string): Promise<{ state: InstallState; manifest?: EnvironmentManifest; reason?: string; agentChanged?: boolean }> {
    const dir = this.entryDir(name);
    let manifest: EnvironmentManifest | undefined;
    try {
      manifest = await readJsonIfExists<EnvironmentManifest>(join(dir, "manifest.json"));
    } catch {
      return { state: "corrupt", reason: "manifest.json is unreadable" };
    }
    if (!manifest) return { state: "not_installed" };
    if (manifest.format !== MANIFEST_FORMAT || manifest.catalogVersion !== CATALOG_VERSION || manifest.name !== name) {
      return { state: "stale", manifest, reason: `built for catalog ${manifest.catalogVersion}, current is ${CATALOG_VERSION}` };
    }
    for (const file of Object.values(manifest.files)) {
      const size = await stat(join(dir, file.path)).then((s) => s.size).catch(() => -1);
      if (size !== file.size) return { state: "corrupt", manifest, reason: `${file.path} is missing or has the wrong size` };
    }
    const agentChanged = manifest.agent.sha256 !== (await agentDigest(this.agentPath));
    return { state: "installed", manifest, agentChanged };
  }

  /** Returns a ready environment, building or repairing it first when needed (first use pulls). */
  async ensure(name: string, options: PullOptions = {}): Promise<ReadyEnvironment> {
    requireEnvironment(name);
    const quick = await this.check(name);
    if (quick.state === "installed" && !quick.agentChanged && quick.manifest) return this.ready(name, quick.manifest);
    return this.pull(name, { ...options, verify: false });
  }

  /**
   * Builds the environment unless a valid entry exists. Digests of an existing
   * entry are verified; a corrupt, partial or stale entry is rebuilt.
   */
  async pull(name: string, options: PullOptions & { verify?: boolean } = {}): Promise<ReadyEnvironment> {
    const spec = requireEnvironment(name);
    const progress = options.onProgress ?? (() => undefined);
    return withLock(
      this.lockPath(name),
      async () => {
        // Someone else may have finished the build while we waited for the lock.
        const quick = await this.check(name);
        if (!options.force && quick.state === "installed" && quick.manifest) {
          let manifest = quick.manifest;
          if (options.verify !== false) {
            progress({ phase: "verify", message: `verifying ${name}` });
            const bad = await this.verifyDigests(manifest);
            if (bad) {
              progress({ phase: "verify", message: `${bad}; rebuilding` });
              return this.build(spec, progress, options.signal);
            }
          }
          if (quick.agentChanged) {
            progress({ phase: "initramfs", message: "guest agent changed; rebuilding the initramfs" });
            manifest = await this.refreshInitramfs(manifest);
          }
          return this.ready(name, manifest);
        }
        if (quick.state !== "not_installed") progress({ phase: "verify", message: `existing ${name} is ${quick.state} (${quick.reason ?? "forced"}); rebuilding` });
        return this.build(spec, progress, options.signal);
      },
      { waitMs: 60 * 60_000, staleMs: 60_000, signal: options.signal },
    );
  }

  private async verifyDigests(manifest: EnvironmentManifest): Promise<string | undefined> {
    const dir = this.entryDir(manifest.name);
    for (const file of Object.values(manifest.files)) {
      const digest = await sha256File(join(dir, file.path)).catch(() => "");
      if (digest !== file.sha256) return `${file.path} does not match its digest`;
    }
    return undefined;
  }

  private ready(name: string, manifest: EnvironmentManifest): ReadyEnvironment {
    const dir = this.entryDir(name);
    return {
      name,
      dir,
      kernelPath: join(dir, manifest.files.kernel.path),
      initramfsPath: join(dir, manifest.files.initramfs.path),
      rootfsPath: join(dir, manifest.files.rootfs.path),
      manifest,
    };
  }

  private async refreshInitramfs(manifest: EnvironmentManifest): Promise<EnvironmentManifest> {
    const dir = this.entryDir(manifest.name);
    const image = await buildInitramfs(this.agentPath, join(dir, "modules"));
    await writeFileAtomic(join(dir, "initramfs.img"), image, 0o644);
    const next: EnvironmentManifest = {
      ...manifest,
      files: { ...manifest.files, initramfs: await digestOf(dir, "initramfs.img") },
      agent: { sha256: await agentDigest(this.agentPath) },
    };
    await writeJsonAtomic(join(dir, "manifest.json"), next, 0o644);
    return next;
  }

  private async build(spec: EnvironmentSpec, progress: (event: ProgressEvent) => void, signal: AbortSignal | undefined): Promise<ReadyEnvironment> {
    await this.requireBuildTools();
    if (process.getuid?.() !== 0) {
      throw new PyroError(ErrorCode.environmentBuildFailed, `building ${spec.name} needs root (mmdebstrap creates files owned by root)`, {
        hint: `run \`sudo pyro env pull ${spec.name}\` once, or point PYRO_ENVIRONMENT_CACHE_DIR at a cache built by root`,
      });
    }
    const agentPath = this.agentPath;
    if (!(await pathExists(agentPath))) {
      throw new PyroError(ErrorCode.environmentBuildFailed, `the guest agent binary is missing at ${agentPath}`, {
        hint: "run `npm run build` (needs golang-go) in the pyro-mcp checkout",
      });
    }
    await mkdir(this.root, { recursive: true });
    const kernel = await ensureKernel(this.kernelsDir(), {
      mirror: this.mirror,
      signal,
      onProgress: (message) => progress({ phase: "kernel", message }),
    });

    const key = cacheKey(spec.name);
    const work = join(this.root, `.build-${key}-${process.pid}-${Date.now()}`);
    const out = join(work, "entry");
    await mkdir(join(out, "modules"), { recursive: true });
    try {
      const tree = join(work, "tree");
      progress({ phase: "rootfs", message: `bootstrapping Debian ${spec.suite} (${["minbase", ...spec.packages].join(", ")})` });
      const args = [
        "--variant=minbase",
        "--mode=root",
        "--quiet",
        ...(spec.packages.length ? [`--include=${spec.packages.join(",")}`] : []),
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/info/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        `--customize-hook=${CUSTOMIZE_SCRIPT}`,
        spec.suite,
        tree,
        ...(this.mirror ? [this.mirror] : []),
      ];
      const boot = await runTool("mmdebstrap", args, { signal, timeoutMs: 30 * 60_000 });
      if (boot.code !== 0) {
        throw new PyroError(ErrorCode.environmentBuildFailed, `bootstrapping ${spec.name} failed (mmdebstrap exit ${boot.code ?? boot.signal})`, {
          hint: "check that Debian's apt archive is reachable (or set PYRO_DEBIAN_MIRROR) and rerun pullEnvironment()",
          details: { stderrTail: boot.stderr.slice(-2000) },
        });
      }

      progress({ phase: "image", message: `making the ${spec.diskMib} MiB root filesystem image` });
      const raw = join(work, "rootfs.raw");
      await writeFile(raw, "");
      await runChecked("truncate", ["-s", `${spec.diskMib}M`, raw], signal);
      await runChecked("mkfs.ext4", ["-q", "-F", "-L", "pyro-root", "-E", "root_owner=0:0", "-d", tree, raw], signal);
      await rm(tree, { recursive: true, force: true });
      await runChecked("qemu-img", ["convert", "-q", "-O", "qcow2", raw, join(work, "rootfs.qcow2")], signal);
      await rm(raw, { force: true });

      progress({ phase: "initramfs", message: `adding kernel ${kernel.release} and the guest agent` });
      await copyFile(kernel.vmlinuxPath, join(out, "vmlinux"), constants.COPYFILE_FICLONE);
      for (const file of await readdir(kernel.modulesDir)) {
        await copyFile(join(kernel.modulesDir, file), join(out, "modules", file));
      }
      await writeFile(join(out, "initramfs.img"), await buildInitramfs(agentPath, join(out, "modules")));

      const manifest: EnvironmentManifest = {
        format: MANIFEST_FORMAT,
        catalogVersion: CATALOG_VERSION,
        name: spec.name,
        suite: spec.suite,
        packages: [...spec.packages],
        kernelRelease: kernel.release,
        diskMib: spec.diskMib,
        builtAt: new Date().toISOString(),
        files: {
          kernel: await digestOf(out, "vmlinux"),
          initramfs: await digestOf(out, "initramfs.img"),
          // Under its digest, beside the entries: a rebuild never changes the image VMs made earlier use.
          rootfs: await this.images.adopt(join(work, "rootfs.qcow2"), work),
        },
        agent: { sha256: await agentDigest(agentPath) },
      };
      // The manifest is written last: an entry without one is never used.
      await writeJsonAtomic(join(out, "manifest.json"), manifest, 0o644);

      const final = this.entryDir(spec.name);
      const trash = join(work, "old");
      await rename(final, trash).catch((error: unknown) => {
        if (!isErrno(error, "ENOENT")) throw error;
      });
      await rename(out, final);
      progress({ phase: "done", message: `${spec.name} is ready` });
      return this.ready(spec.name, manifest);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }

  private async requireBuildTools(): Promise<void> {
    const missing: string[] = [];
    for (const { tool, pkg } of TOOLS) if (!(await which(tool))) missing.push(pkg);
    if (missing.length) {
      throw new PyroError(ErrorCode.environmentBuildFailed, `building environments needs ${missing.join(", ")}`, {
        hint: `apt-get install ${missing.join(" ")}`,
      });
    }
  }

  async list(): Promise<{ spec: EnvironmentSpec; state: InstallState; manifest?: EnvironmentManifest }[]> {
    return Promise.all(
      CATALOG.map(async (spec) => {
        const check = await this.check(spec.name);
        return { spec, state: check.state, manifest: check.manifest };
      }),
    );
  }

  /**
   * Removes entries not in the catalog or built for an older catalog, unused
   * kernels, leftovers of interrupted builds, and root images that neither an
   * environment nor a VM uses. Images a VM still needs are kept and named.
   */
  async prune(): Promise<{ removed: string[]; freedBytes: number; kept: { image: string; usedBy: string[] }[] }> {
    const removed: string[] = [];
    let freedBytes = 0;
    let names: string[];
    try {
      names = await readdir(this.root);
    } catch (error) {
      if (isErrno(error, "ENOENT")) return { removed, freedBytes, kept: [] };
      throw error;
    }
    const keep = new Set<string>();
    const kernelsInUse = new Set<string>();
    const imagesInUse = new Set<string>();
    for (const spec of CATALOG) {
      const check = await this.check(spec.name);
      if (check.state === "installed") {
        keep.add(cacheKey(spec.name));
        if (check.manifest) kernelsInUse.add(check.manifest.kernelRelease);
        if (check.manifest) imagesInUse.add(join(this.entryDir(spec.name), check.manifest.files.rootfs.path));
      }
    }
    const remove = async (path: string, label: string) => {
      freedBytes += await diskUsage(path);
      await rm(path, { recursive: true, force: true });
      removed.push(label);
    };
    for (const name of names) {
      if (name === ".locks" || name === ".kernels" || name === ".images" || keep.has(name)) continue;
      // An in-progress build holds its environment's lock; leave its work dir alone.
      if (name.startsWith(".build-") && isBuildActive(join(this.root, name))) continue;
      await remove(join(this.root, name), name);
    }
    const kernels = await readdir(this.kernelsDir()).catch(() => [] as string[]);
    for (const name of kernels) {
      if (!kernelsInUse.has(name) && !name.startsWith(".build-")) await remove(join(this.kernelsDir(), name), `.kernels/${name}`);
    }
    const images = await this.images.prune(imagesInUse);
    return { removed: [...removed, ...images.removed], freedBytes: freedBytes + images.freedBytes, kept: images.kept };
  }
}

/** Run inside mmdebstrap with the new root as $1. */
const CUSTOMIZE_SCRIPT = [
  'mkdir -p "$1/workspace"',
  'echo pyro > "$1/etc/hostname"',
  'printf "127.0.0.1\\tlocalhost\\n127.0.1.1\\tpyro\\n::1\\tlocalhost ip6-localhost ip6-loopback\\n" > "$1/etc/hosts"',
  ': > "$1/etc/machine-id"',
  'rm -f "$1/etc/resolv.conf"',
  // Every command runs through a login shell; under emulation each fork costs
  // tens of milliseconds, so the profile scripts' subprocesses (id -u, mesg) go.
  `sed -i 's/"$(id -u)"/"\${EUID:-$(id -u)}"/' "$1/etc/profile"`,
  `sed -i '/^mesg n/d' "$1/root/.profile"`,
  'rm -rf "$1/var/lib/apt/lists/"* "$1/var/cache/apt/"*.bin',
].join(" && ");

async function runChecked(command: string, args: string[], signal: AbortSignal | undefined): Promise<void> {
  const result = await runTool(command, args, { signal, timeoutMs: 10 * 60_000 });
  if (result.code !== 0) {
    throw new PyroError(ErrorCode.environmentBuildFailed, `${command} failed (exit ${result.code ?? result.signal})`, {
      details: { stderrTail: result.stderr.slice(-2000) },
    });
  }
}

async function digestOf(dir: string, path: string): Promise<FileDigest> {
  const full = join(dir, path);
  return { path, size: (await stat(full)).size, sha256: await sha256File(full) };
}

let agentDigestCache: { key: string; digest: string } | undefined;

/** Digest of the agent binary this pyro would put into an initramfs. */
export async function agentDigest(path: string): Promise<string> {
  const info = await stat(path).catch(() => undefined);
  if (!info) return "missing";
  const key = `${path}:${info.size}:${info.mtimeMs}`;
  if (agentDigestCache?.key !== key) agentDigestCache = { key, digest: await sha256File(path) };
  return agentDigestCache.digest;
}

async function diskUsage(path: string): Promise<number> {
  const info = await stat(path).catch(() => undefined);
  if (!info) return 0;
  if (!info.isDirectory()) return info.blocks * 512;
  let total = 0;
  for (const name of await readdir(path)) total += await diskUsage(join(path, name));
  return total;
}

function isBuildActive(dir: string): boolean {
  // Work dirs are named .build-KEY-PID-TIME; a live PID means the build is running.
  const match = /-(\d+)-\d+$/.exec(dir);
  return match !== null && pidAlive(Number(match[1]));
}
