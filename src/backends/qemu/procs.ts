import { readdir, readFile } from "node:fs/promises";
import { processStartTime } from "../../util/proc.js";

/** A process of a VM's (or template build's) sandbox: QEMU, bubblewrap around it or its network helper, the helper itself. */
export interface SandboxProcess {
  pid: number;
  startTime: string;
  /** The VM's (or template build's) directory, the one holding the qemu/ directory its command line names. */
  dir: string;
  /** bubblewrap's child (pid 1 of the sandbox) left waiting for a parent that died: it never starts anything and never exits. */
  stranded: boolean;
}

/** A pyro VM's (or template build's) qemu/ directory in a command line; the last one named is the process's own (its writable directory comes after read-only files). */
const SANDBOX_DIR = /(\/[^\0]*\/(?:vms\/[0-9a-f]{12}|templates\/\.build-\d+-\d+))\/qemu(?=[/\0,]|$)/g;

/**
 * Every running process whose command line names a pyro VM's (or template
 * build's) qemu/ directory, in any state directory: QEMU, what runs around
 * it, and what a start killed half-way left (a sandbox whose QEMU never
 * started, a network helper nobody recorded).
 */
export async function listSandboxProcesses(): Promise<SandboxProcess[]> {
  const pids = (await readdir("/proc").catch(() => [] as string[])).filter((entry) => /^\d+$/.test(entry) && Number(entry) !== process.pid);
  const cmdline = (pid: string) => readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
  const found = await Promise.all(
    pids.map(async (entry): Promise<SandboxProcess | undefined> => {
      const line = await cmdline(entry);
      const dir = [...line.matchAll(SANDBOX_DIR)].pop()?.[1];
      if (!dir) return undefined;
      const startTime = await processStartTime(Number(entry));
      if (startTime === undefined || (await cmdline(entry)) !== line) return undefined;
      return { pid: Number(entry), startTime, dir, stranded: await isStrandedSandbox(entry, line) };
    }),
  );
  return found.filter((process) => process !== undefined);
}

/**
 * bubblewrap forks the sandbox's pid 1, which waits (still bubblewrap, same
 * command line) until its parent says go; a parent that died first never
 * does. Such a process is pid 1 of its own PID namespace and its parent is
 * no longer the bubblewrap that forked it. While bubblewrap runs normally
 * its child is either that waiting copy under its parent, or the program it
 * started (another command line).
 */
async function isStrandedSandbox(pid: string, line: string): Promise<boolean> {
  if (!line.slice(0, line.indexOf("\0")).endsWith("bwrap")) return false;
  const status = await readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
  const nsPids = /^NSpid:\s*(.*)$/m.exec(status)?.[1]?.trim().split(/\s+/) ?? [];
  const parent = /^PPid:\s*(\d+)$/m.exec(status)?.[1];
  if (nsPids.length < 2 || nsPids[nsPids.length - 1] !== "1" || !parent) return false;
  return (await readFile(`/proc/${parent}/cmdline`, "utf8").catch(() => "")) !== line;
}
