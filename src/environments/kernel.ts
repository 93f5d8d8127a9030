import { spawn } from "node:child_process";
import { copyFile, mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { ErrorCode, PyroError } from "../errors.js";
import { pathExists, readJsonIfExists, sha256File, writeJsonAtomic } from "../util/fs.js";
import { runTool } from "../util/proc.js";

/** Kernel modules the guest needs, by module name; their dependencies are added in load order. */
export const GUEST_MODULES = ["virtio_mmio", "virtio_blk", "virtio_console", "virtio_net", "virtio-rng"] as const;

export const KERNEL_PACKAGE = "linux-image-cloud-amd64";

export interface KernelInfo {
  release: string;
  /** Uncompressed ELF kernel, booted through PVH. */
  vmlinuxPath: string;
  /** Directory with the needed `.ko` files and `load-order`. */
  modulesDir: string;
  vmlinuxSha256: string;
}

interface KernelRecord {
  release: string;
  vmlinuxSha256: string;
  vmlinuxSize: number;
  modules: string[];
}

export type ProgressFn = (message: string) => void;

/**
 * Returns the shared kernel in `kernelsDir`, fetching Debian's cloud kernel
 * (without installing it anywhere) when none is cached yet.
 */
export async function ensureKernel(kernelsDir: string, options: { mirror?: string; onProgress?: ProgressFn; signal?: AbortSignal }): Promise<KernelInfo> {
  await mkdir(kernelsDir, { recursive: true });
  const existing = await findCachedKernel(kernelsDir);
  if (existing) return existing;

  const work = join(kernelsDir, `.build-${process.pid}-${Date.now()}`);
  await mkdir(work, { recursive: true });
  try {
    const tree = join(work, "tree");
    options.onProgress?.(`fetching Debian's cloud kernel (${KERNEL_PACKAGE})`);
    const args = ["--variant=extract", `--include=${KERNEL_PACKAGE}`, "--quiet", "bookworm", tree];
    if (options.mirror) args.push(options.mirror);
    const result = await runTool("mmdebstrap", args, { signal: options.signal, timeoutMs: 15 * 60_000 });
    if (result.code !== 0) {
      throw new PyroError(ErrorCode.environmentBuildFailed, `fetching the guest kernel failed (mmdebstrap exit ${result.code ?? result.signal})`, {
        hint: "check that Debian's apt archive is reachable and mmdebstrap is installed (apt-get install mmdebstrap)",
        details: { stderrTail: result.stderr.slice(-2000) },
      });
    }
    const boot = join(tree, "boot");
    const vmlinuz = (await readdir(boot)).find((name) => name.startsWith("vmlinuz-"));
    if (!vmlinuz) throw new PyroError(ErrorCode.environmentBuildFailed, "the kernel package contained no /boot/vmlinuz-*");
    const release = vmlinuz.slice("vmlinuz-".length);
    const out = join(work, "out");
    await mkdir(join(out, "modules"), { recursive: true });
    options.onProgress?.(`unpacking kernel ${release}`);
    const vmlinux = await extractVmlinux(await readFile(join(boot, vmlinuz)));
    await writeFile(join(out, "vmlinux"), vmlinux);
    // The package ships no modules.dep (its postinst would make one); make it.
    const depmod = await runTool("depmod", ["-b", tree, release], { timeoutMs: 120_000 });
    if (depmod.code !== 0) {
      throw new PyroError(ErrorCode.environmentBuildFailed, `depmod failed for kernel ${release}`, {
        hint: "apt-get install kmod",
        details: { stderrTail: depmod.stderr.slice(-2000) },
      });
    }
    const modules = await copyModules(join(tree, "lib", "modules", release), join(out, "modules"));
    const record: KernelRecord = {
      release,
      vmlinuxSha256: await sha256File(join(out, "vmlinux")),
      vmlinuxSize: vmlinux.length,
      modules,
    };
    await writeJsonAtomic(join(out, "kernel.json"), record, 0o644);
    const final = join(kernelsDir, release);
    await rm(final, { recursive: true, force: true });
    await rename(out, final);
    return infoFor(final, record);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function findCachedKernel(kernelsDir: string): Promise<KernelInfo | undefined> {
  for (const name of (await readdir(kernelsDir)).sort(newestRelease)) {
    if (name.startsWith(".")) continue;
    const dir = join(kernelsDir, name);
    const record = await readJsonIfExists<KernelRecord>(join(dir, "kernel.json")).catch(() => undefined);
    if (!record || record.release !== name) continue;
    const complete =
      (await pathExists(join(dir, "vmlinux"))) &&
      (await Promise.all(record.modules.map((m) => pathExists(join(dir, "modules", m))))).every(Boolean);
    if (complete) return infoFor(dir, record);
  }
  return undefined;
}

function infoFor(dir: string, record: KernelRecord): KernelInfo {
  return { release: record.release, vmlinuxPath: join(dir, "vmlinux"), modulesDir: join(dir, "modules"), vmlinuxSha256: record.vmlinuxSha256 };
}

/**
 * Resolves GUEST_MODULES and their dependencies from modules.dep into load
 * order, copies the `.ko` files flat into `dest` and writes `dest/load-order`.
 */
export async function copyModules(moduleRoot: string, dest: string): Promise<string[]> {
  const depText = await readFile(join(moduleRoot, "modules.dep"), "utf8");
  const deps = new Map<string, string[]>();
  for (const line of depText.split("\n")) {
    const colon = line.indexOf(":");
    if (colon < 0) continue;
    const path = line.slice(0, colon).trim();
    deps.set(path, line.slice(colon + 1).trim().split(/\s+/).filter(Boolean));
  }
  const byName = new Map<string, string>();
  for (const path of deps.keys()) {
    const base = path.slice(path.lastIndexOf("/") + 1).replace(/\.ko(\..*)?$/, "");
    byName.set(base, path);
  }
  const order: string[] = [];
  const visit = (path: string, seen: Set<string>) => {
    if (order.includes(path)) return;
    if (seen.has(path)) throw new PyroError(ErrorCode.environmentBuildFailed, `module dependency cycle at ${path}`);
    seen.add(path);
    for (const dep of deps.get(path) ?? []) visit(dep, seen);
    order.push(path);
  };
  for (const name of GUEST_MODULES) {
    const path = byName.get(name);
    if (!path) throw new PyroError(ErrorCode.environmentBuildFailed, `kernel module ${name} is missing from the kernel package`);
    visit(path, new Set());
  }
  const files: string[] = [];
  for (const path of order) {
    if (!path.endsWith(".ko")) {
      throw new PyroError(ErrorCode.environmentBuildFailed, `compressed kernel module ${path} is not supported`);
    }
    const file = path.slice(path.lastIndexOf("/") + 1);
    await copyFile(join(moduleRoot, path), join(dest, file));
    files.push(file);
  }
  await writeFile(join(dest, "load-order"), `${files.join("\n")}\n`);
  return files;
}

const FORMATS: { magic: Buffer; decompress: (data: Buffer) => Promise<Buffer> }[] = [
  { magic: Buffer.from([0x02, 0x21, 0x4c, 0x18]), decompress: (d) => pipeThrough("lz4", ["-dc"], d) },
  { magic: Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), decompress: (d) => pipeThrough("zstd", ["-dcq"], d) },
  { magic: Buffer.from([0x1f, 0x8b, 0x08]), decompress: (d) => Promise.resolve(gunzipSync(d, { finishFlush: 2 })) },
];

/**
 * Finds the compressed payload inside a bzImage and decompresses it to the ELF
 * `vmlinux`, which QEMU boots directly (PVH) without real-mode setup.
 */
export async function extractVmlinux(bzImage: Buffer): Promise<Buffer> {
  for (const format of FORMATS) {
    let offset = bzImage.indexOf(format.magic);
    while (offset >= 0) {
      const out = await format.decompress(bzImage.subarray(offset)).catch(() => undefined);
      if (out && isX86Elf(out)) return out;
      offset = bzImage.indexOf(format.magic, offset + 1);
    }
  }
  throw new PyroError(ErrorCode.environmentBuildFailed, "could not find an uncompressed ELF kernel inside the bzImage", {
    hint: "install lz4 and zstd (apt-get install lz4 zstd)",
  });
}

function isX86Elf(data: Buffer): boolean {
  if (data.length < 64 || data.readUInt32BE(0) !== 0x7f454c46 || data[4] !== 2 || data.readUInt16LE(18) !== 62) return false;
  // The section headers sit at the end; a truncated decompression cannot reach them.
  const shoff = Number(data.readBigUInt64LE(40));
  const shentsize = data.readUInt16LE(58);
  const shnum = data.readUInt16LE(60);
  return shoff + shentsize * shnum <= data.length;
}

/** Decompressors stop with an error at the bzImage's trailing bytes; the output before it is what counts. */
function pipeThrough(command: string, args: string[], input: Buffer): Promise<Buffer> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(command, args, { stdio: ["pipe", "pipe", "ignore"] });
    const chunks: Buffer[] = [];
    child.stdout.on("data", (chunk: Buffer) => chunks.push(chunk));
    child.on("error", reject);
    child.stdin.on("error", () => undefined);
    child.on("close", () => resolvePromise(Buffer.concat(chunks)));
    child.stdin.end(input);
  });
}

/**
 * Orders kernel releases newest first, comparing their numbers as numbers:
 * 6.1.0-10 is newer than 6.1.0-9.
 */
export function newestRelease(a: string, b: string): number {
  return b.localeCompare(a, "en", { numeric: true });
}
