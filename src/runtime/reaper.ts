import { readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { inspectCgroups, removeEmptyCgroups } from "../backends/qemu/cgroup.js";
import { pathExists } from "../util/fs.js";
import { debug } from "../util/log.js";
import { isSameProcessAlive, killAndWait, pidAlive } from "../util/proc.js";
import { listSandboxProcesses } from "../backends/qemu/procs.js";
import type { VmRecord } from "./store.js";
import type { VmManager } from "./vms.js";

/**
 * Cleans up what nobody will: VMs past their time to live, QEMU processes
 * whose VM is gone, and cgroups left empty by a crash. Any pyro process runs
 * it now and then (and `pyro vm reap` on demand).
 */
export class Reaper {
  constructor(private readonly vms: VmManager) {}

  /**
   * Deletes every VM whose time to live has passed, every one-shot VM
   * whose owner process is gone (a run killed before it could clean up), and
   * every VM of the pool that failed; returns their ids.
   */
  async reap(now = Date.now()): Promise<string[]> {
    const reaped: string[] = [];
    for (const id of await this.vms.store.ids()) {
      const record = await this.vms.store.read(id).catch(() => undefined);
      if (!record) continue;
      // A start whose process died, or a QEMU that exited: recorded as failed, what was left stopped.
      const refreshed = await this.vms.refresh(record).catch((error: unknown) => {
        debug("reaper", `could not refresh ${id}: ${String(error)}`);
        return record;
      });
      const expired = (r: VmRecord) => new Date(r.expiresAt).getTime() <= now;
      const orphaned = async (r: VmRecord) => !!r.owner && !(await isSameProcessAlive(r.owner.pid, r.owner.startTime));
      // A pool VM that failed (its QEMU died, or its refill with it) will never be taken.
      const brokenInPool = (r: VmRecord) => !!r.pool && r.state === "failed";
      const reason = expired(refreshed) ? "expired" : (await orphaned(refreshed)) || brokenInPool(refreshed) ? "reaped" : undefined;
      if (!reason) continue;
      try {
        if (await this.vms.delete(id, undefined, { reason, onlyIf: async (current) => expired(current) || (await orphaned(current)) || brokenInPool(current) })) reaped.push(id);
      } catch (error) {
        debug("reaper", `could not reap ${id}: ${String(error)}`);
      }
    }
    await this.killOrphans();
    await this.vms.store.pruneTombstones(now);
    await this.removeDeadForks();
    const { support } = await inspectCgroups();
    if (support) await removeEmptyCgroups(support);
    return reaped;
  }

  /** Removes what a fork whose process died left (its saved memory and disk copy). */
  private async removeDeadForks(): Promise<void> {
    const dir = join(this.vms.store.stateDir, "forks");
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      const pid = /^[0-9a-f]{12}-(\d+)-[0-9a-f]+$/.exec(name)?.[1];
      if (pid && !pidAlive(Number(pid))) await rm(join(dir, name), { recursive: true, force: true });
    }
  }

  /**
   * Kills pyro's QEMU processes, and what runs around them (their sandboxes,
   * network helpers), that nothing can reach any more: a VM whose directory
   * (or whole state directory) was removed from under it, a template build
   * whose builder died, and a sandbox stranded before it started anything (a
   * pyro killed while starting a VM can leave one). Any state directory
   * counts, not only this one: a VM without its record is unreachable by
   * every pyro process. Without this they would run until the host reboots.
   * Another user's processes cannot be signalled, so they are left alone.
   */
  private async killOrphans(): Promise<void> {
    const records = new Map<string, Promise<boolean>>();
    // A record we cannot even look at (another user's state) is not ours to judge.
    const recordGone = (dir: string) => records.get(dir) ?? records.set(dir, pathExists(join(dir, "vm.json")).then((exists) => !exists, () => false)).get(dir)!;
    for (const process of await listSandboxProcesses()) {
      const build = /\/templates\/\.build-(\d+)-\d+$/.exec(process.dir);
      const orphan = process.stranded || (build ? !pidAlive(Number(build[1])) : await recordGone(process.dir));
      if (orphan) {
        debug("reaper", `killing orphaned ${process.stranded ? "stranded sandbox" : "VM process"} ${process.pid} (${process.dir})`);
        await killAndWait(process.pid, process.startTime);
      }
    }
  }
}
