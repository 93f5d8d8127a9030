import { readdir, readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { inspectCgroups, removeEmptyCgroups } from "../backends/qemu/cgroup.js";
import { pathExists } from "../util/fs.js";
import { debug } from "../util/log.js";
import { killAndWait, pidAlive, processStartTime } from "../util/proc.js";
import type { VmManager } from "./vms.js";

/**
 * Cleans up what nobody will: VMs past their time to live, QEMU processes
 * whose VM is gone, and cgroups left empty by a crash. Any pyro process runs
 * it now and then (and `pyro vm reap` on demand).
 */
export class Reaper {
  constructor(private readonly vms: VmManager) {}

  /** Deletes every VM whose time to live has passed; returns their ids. */
  async reap(now = Date.now()): Promise<string[]> {
    const reaped: string[] = [];
    for (const id of await this.vms.store.ids()) {
      const record = await this.vms.store.read(id).catch(() => undefined);
      if (!record || new Date(record.expiresAt).getTime() > now) continue;
      try {
        if (await this.vms.delete(id)) reaped.push(id);
      } catch (error) {
        debug("reaper", `could not reap ${id}: ${String(error)}`);
      }
    }
    await this.killOrphans();
    const { support } = await inspectCgroups();
    if (support) await removeEmptyCgroups(support);
    return reaped;
  }

  /**
   * Kills pyro's QEMU processes that nothing can reach any more: a VM whose
   * directory (or whole state directory) was removed from under it, or a
   * template build whose builder died. Any state directory counts, not only
   * this one: a VM without its record is unreachable by every pyro process.
   * Without this they would run until the host reboots. Another user's QEMU
   * cannot be signalled, so it is left alone.
   */
  private async killOrphans(): Promise<void> {
    for (const qemu of await listPyroQemus()) {
      // Sockets live in the VM's (or template build's) qemu/ directory, beside which the record is.
      const vm = /\/vms\/[0-9a-f]{12}\/qemu\/qmp\.sock$/.test(qemu.qmpSocket);
      const build = /\/templates\/\.build-(\d+)-\d+\/qemu\/qmp\.sock$/.exec(qemu.qmpSocket);
      let orphan = false;
      // A record we cannot even look at (another user's state) is not ours to judge.
      if (vm) orphan = (await pathExists(join(dirname(dirname(qemu.qmpSocket)), "vm.json")).catch(() => true)) === false;
      else if (build) orphan = !pidAlive(Number(build[1]));
      if (orphan) {
        debug("reaper", `killing orphaned QEMU ${qemu.pid} (${qemu.qmpSocket})`);
        await killAndWait(qemu.pid, qemu.startTime);
      }
    }
  }
}

/** Running QEMU processes started by pyro, with the QMP socket that identifies each. */
async function listPyroQemus(): Promise<{ pid: number; startTime: string | undefined; qmpSocket: string }[]> {
  const found: { pid: number; startTime: string | undefined; qmpSocket: string }[] = [];
  for (const entry of await readdir("/proc").catch(() => [] as string[])) {
    if (!/^\d+$/.test(entry)) continue;
    // The start time before and after the command line: a pid reused in between is not the process we read.
    const startTime = await processStartTime(Number(entry));
    const argv = (await readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "")).split("\0");
    if (!argv[0]?.includes("qemu-system") || argv[1] !== "-name" || argv[2] !== "pyro") continue;
    const qmp = argv[argv.indexOf("-qmp") + 1];
    const match = qmp ? /^unix:([^,]+),/.exec(qmp) : null;
    if (match?.[1] && startTime !== undefined && (await processStartTime(Number(entry))) === startTime) found.push({ pid: Number(entry), startTime, qmpSocket: match[1] });
  }
  return found;
}
