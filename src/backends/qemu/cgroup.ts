import { access, constants, mkdir, readdir, readFile, rmdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { isErrno } from "../../util/fs.js";
import { debug } from "../../util/log.js";

/**
 * A cgroup of its own for each QEMU, with memory, process-count and CPU
 * limits taken from the VM's shape, so a guest that breaks out of its
 * emulated hardware still cannot take the host's memory or CPU. cgroup v2
 * where the host has it; these machines mount the v1 controllers.
 */
export type CgroupSupport =
  | { version: 2; root: string }
  | { version: 1; memory: string; pids: string; cpu: string };

/** Everything under this name in each hierarchy is pyro's. */
const PARENT = "pyro";

export interface CgroupLimits {
  memoryBytes: number;
  pidsMax: number;
  /** CPU time per period, in microseconds (the cap is quota / period CPUs). */
  cpuQuotaUs: number;
  cpuPeriodUs: number;
}

interface Mount {
  path: string;
  type: string;
  options: string[];
}

async function mounts(): Promise<Mount[]> {
  const text = await readFile("/proc/self/mounts", "utf8").catch(() => "");
  return text
    .split("\n")
    .map((line) => line.split(" "))
    .filter((f) => f.length >= 4)
    .map((f) => ({ path: f[1]!.replace(/\\040/g, " "), type: f[2]!, options: f[3]!.split(",") }));
}

async function writable(path: string): Promise<boolean> {
  try {
    await access(path, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** Which cgroup hierarchy pyro can use here, or why none. */
export async function inspectCgroups(): Promise<{ support: CgroupSupport | undefined; detail: string }> {
  const all = await mounts();
  const v1 = (controller: string) => all.find((m) => m.type === "cgroup" && m.options.includes(controller))?.path;
  const memory = v1("memory");
  const pids = v1("pids");
  const cpu = v1("cpu");
  if (memory && pids && cpu) {
    if (!(await writable(memory)) || !(await writable(pids)) || !(await writable(cpu))) {
      return { support: undefined, detail: "the cgroup v1 controllers are not writable by this user (run pyro as root)" };
    }
    return { support: { version: 1, memory, pids, cpu }, detail: `cgroup v1 (memory, pids, cpu) under ${memory}/${PARENT}` };
  }
  const unified = all.find((m) => m.type === "cgroup2");
  if (unified) {
    const controllers = (await readFile(join(unified.path, "cgroup.controllers"), "utf8").catch(() => "")).split(/\s+/);
    const missing = ["memory", "pids", "cpu"].filter((c) => !controllers.includes(c));
    if (missing.length) return { support: undefined, detail: `cgroup v2 at ${unified.path} lacks the ${missing.join(", ")} controller(s)` };
    if (!(await writable(unified.path))) return { support: undefined, detail: `cgroup v2 at ${unified.path} is not writable by this user (run pyro as root)` };
    return { support: { version: 2, root: unified.path }, detail: `cgroup v2 under ${unified.path}/${PARENT}` };
  }
  return { support: undefined, detail: "no cgroup hierarchy is mounted" };
}

function dirsOf(support: CgroupSupport, name: string): string[] {
  return support.version === 2 ? [join(support.root, PARENT, name)] : [support.memory, support.pids, support.cpu].map((root) => join(root, PARENT, name));
}

async function write(path: string, value: string): Promise<void> {
  await writeFile(path, value);
}

/** Creates the cgroup `name` with these limits; returns the directories a process joins by writing its pid to their cgroup.procs. */
export async function createCgroup(support: CgroupSupport, name: string, limits: CgroupLimits): Promise<string[]> {
  if (support.version === 2) {
    const parent = join(support.root, PARENT);
    await mkdir(parent, { recursive: true });
    // Controllers must be enabled on every level above the leaf.
    for (const dir of [support.root, parent]) {
      const enabled = await readFile(join(dir, "cgroup.subtree_control"), "utf8").catch(() => "");
      const wanted = ["memory", "pids", "cpu"].filter((c) => !enabled.split(/\s+/).includes(c));
      if (wanted.length) await write(join(dir, "cgroup.subtree_control"), wanted.map((c) => `+${c}`).join(" "));
    }
    const dir = join(parent, name);
    await mkdir(dir, { recursive: true });
    await write(join(dir, "memory.max"), String(limits.memoryBytes));
    await write(join(dir, "memory.swap.max"), "0").catch(() => undefined);
    await write(join(dir, "pids.max"), String(limits.pidsMax));
    await write(join(dir, "cpu.max"), `${limits.cpuQuotaUs} ${limits.cpuPeriodUs}`);
    return [dir];
  }
  const [memory, pids, cpu] = dirsOf(support, name) as [string, string, string];
  for (const dir of [memory, pids, cpu]) await mkdir(dir, { recursive: true });
  await write(join(memory, "memory.limit_in_bytes"), String(limits.memoryBytes));
  await write(join(pids, "pids.max"), String(limits.pidsMax));
  await write(join(cpu, "cpu.cfs_period_us"), String(limits.cpuPeriodUs));
  await write(join(cpu, "cpu.cfs_quota_us"), String(limits.cpuQuotaUs));
  return [memory, pids, cpu];
}

/**
 * Removes the cgroup once its processes are gone. The kernel refuses (EBUSY)
 * while a dying process is still being torn down, so this retries briefly.
 */
export async function removeCgroup(support: CgroupSupport, name: string, waitMs = 3000): Promise<void> {
  const deadline = Date.now() + waitMs;
  for (const dir of dirsOf(support, name)) {
    for (;;) {
      try {
        await rmdir(dir);
        break;
      } catch (error) {
        if (isErrno(error, "ENOENT")) break;
        if (!isErrno(error, "EBUSY") || Date.now() >= deadline) {
          debug("cgroup", `could not remove ${dir}: ${String(error)}`);
          break;
        }
        await sleep(20);
      }
    }
  }
}

/**
 * Removes pyro's cgroups that have no process left and are older than
 * `minAgeMs` (younger ones may be about to receive their QEMU). Their VMs are
 * gone; nothing else would ever remove them.
 */
export async function removeEmptyCgroups(support: CgroupSupport, minAgeMs = 60_000): Promise<void> {
  const roots = support.version === 2 ? [join(support.root, PARENT)] : [support.memory, support.pids, support.cpu].map((r) => join(r, PARENT));
  for (const root of roots) {
    let names: string[];
    try {
      names = await readdir(root);
    } catch {
      continue;
    }
    for (const name of names) {
      const dir = join(root, name);
      const info = await stat(dir).catch(() => undefined);
      if (!info?.isDirectory() || Date.now() - info.mtimeMs < minAgeMs) continue;
      const procs = await readFile(join(dir, "cgroup.procs"), "utf8").catch(() => "x");
      if (procs.trim() === "") await rmdir(dir).catch(() => undefined);
    }
  }
}

/** Limits for a VM of this shape: its memory plus QEMU's own (the TCG translation cache is 256 MiB), vCPUs plus one for QEMU's I/O. */
export function limitsFor(shape: { vcpuCount: number; memMib: number }, accel: "kvm" | "tcg"): CgroupLimits {
  const overheadMib = accel === "tcg" ? 512 : 256;
  const period = 100_000;
  return {
    memoryBytes: (shape.memMib + overheadMib) * 1024 * 1024,
    pidsMax: 128 + 2 * shape.vcpuCount,
    cpuQuotaUs: (shape.vcpuCount + 1) * period,
    cpuPeriodUs: period,
  };
}
