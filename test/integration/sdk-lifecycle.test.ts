import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { rmSync } from "node:fs";
import { release } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Pyro } from "../../src/index.js";
import { processStartTime } from "../../src/util/proc.js";
import { assertNothingLeft, ensureEnvironment, qemuProcessesUnder, vmProcessesUnder, removeDir, runCli, tempStateDir, rejectsWith } from "../helpers.js";

const stateDir = tempStateDir();
const pyro = new Pyro({ stateDir });

function qemuPidOf(vmId: string): number {
  const pids = qemuProcessesUnder(vmId);
  assert.equal(pids.length, 1, `QEMU processes of ${vmId}: ${pids.join(",")}`);
  return pids[0]!;
}

describe("the SDK on real guests", () => {
  before(() => ensureEnvironment());

  afterEach(() => {
    assertNothingLeft(stateDir);
  });

  after(() => removeDir(stateDir));

  test("runInVm streams output and reports the guest", async () => {
    const chunks: string[] = [];
    const phases: string[] = [];
    const result = await pyro.runInVm({
      environment: "debian:12",
      command: "git --version; echo done >&2",
      onOutput: (stream, chunk) => chunks.push(`${stream}:${chunk.toString()}`),
      onProgress: (event) => phases.push(event.phase),
    });
    assert.equal(result.exitCode, 0);
    assert.match(result.stdout, /^git version 2\.\d+/);
    assert.equal(result.stderr, "done\n");
    assert.equal(result.executionMode, "guest");
    assert.deepEqual(result.cleanup, { vmDeleted: true });
    assert.ok(chunks.some((c) => c.startsWith("stdout:git version")));
    assert.ok(phases.includes("boot") && phases.includes("cleanup"));
  });

  test("create, start, status, network info, exec (auto-clean)", async () => {
    const created = await pyro.createVm({ environment: "debian:12", network: true, memMib: 512 });
    assert.equal(created.state, "created");
    assert.equal(created.memMib, 512);
    assert.equal(new Date(created.expiresAt).getTime() - new Date(created.createdAt).getTime(), 600_000);
    const started = await pyro.startVm(created.vmId);
    assert.equal(started.state, "started");
    assert.match(String(started.accel), /^(kvm|tcg)$/);
    assert.equal((await pyro.statusVm(created.vmId)).state, "started");
    const net = await pyro.networkInfoVm(created.vmId);
    assert.deepEqual([net.mode, net.interface, net.guestIp, net.gateway], ["egress", "eth0", "10.0.2.15", "10.0.2.2"]);
    const result = await pyro.execVm(created.vmId, { command: "ip -4 addr show eth0 2>/dev/null || cat /sys/class/net/eth0/operstate; cat /proc/meminfo | head -1" });
    assert.equal(result.exitCode, 0, result.stderr);
    assert.deepEqual(result.cleanup, { vmDeleted: true });
    const kib = Number(/MemTotal:\s+(\d+)/.exec(result.stdout)?.[1]);
    assert.ok(kib > 300_000 && kib <= 512 * 1024, `MemTotal ${kib} kB`);
    await rejectsWith(pyro.statusVm(created.vmId), "vm_not_found");
  });

  test("stop keeps the VM, start boots it again", async () => {
    const vm = await pyro.createVm({ environment: "debian:12" });
    await pyro.startVm(vm.vmId);
    const stopped = await pyro.stopVm(vm.vmId);
    assert.equal(stopped.state, "stopped");
    assert.deepEqual(vmProcessesUnder(vm.vmId), []);
    await rejectsWith(pyro.execVm(vm.vmId, { command: "true" }), "vm_not_running", /stopped/);
    // A refused exec ran nothing, so it cleans nothing up: the VM is as it was.
    assert.equal((await pyro.statusVm(vm.vmId)).state, "stopped");
    await pyro.deleteVm(vm.vmId);

    const again = await pyro.createVm({ environment: "debian:12" });
    await pyro.startVm(again.vmId);
    await pyro.stopVm(again.vmId);
    assert.equal((await pyro.startVm(again.vmId)).state, "started");
    const result = await pyro.execVm(again.vmId, { command: "echo back" });
    assert.equal(result.stdout, "back\n");
  });

  test("a VM whose QEMU is killed is reported failed, exec errors clearly, delete cleans up", async () => {
    const vm = await pyro.createVm({ environment: "debian:12" });
    await pyro.startVm(vm.vmId);
    process.kill(qemuPidOf(vm.vmId), "SIGKILL");
    await sleep(200);
    const status = await pyro.statusVm(vm.vmId);
    assert.equal(status.state, "failed");
    assert.match(String(status.failure), /QEMU process exited/);
    const again = await pyro.createVm({ environment: "debian:12" });
    await pyro.startVm(again.vmId);
    process.kill(qemuPidOf(again.vmId), "SIGKILL");
    await sleep(200);
    await rejectsWith(pyro.execVm(again.vmId, { command: "true" }), "vm_not_running", /failed/);
    assert.equal((await pyro.statusVm(again.vmId)).state, "failed");
    assert.deepEqual(await pyro.deleteVm(again.vmId), { vmId: again.vmId, deleted: true });
    assert.deepEqual(await pyro.deleteVm(vm.vmId), { vmId: vm.vmId, deleted: true });
    await rejectsWith(pyro.deleteVm(vm.vmId), "vm_not_found");
  });

  test("expired VMs are reaped, and by the next pyro call too", async () => {
    const vm = await pyro.createVm({ environment: "debian:12", ttlSeconds: 1 });
    await pyro.startVm(vm.vmId);
    const other = await pyro.createVm({ environment: "debian:12", ttlSeconds: 1 });
    await sleep(1500);
    const reaped = await pyro.reapExpired();
    assert.deepEqual(reaped.reapedVmIds.sort(), [vm.vmId, other.vmId].sort());
    assert.equal(reaped.count, 2);

    const third = await pyro.createVm({ environment: "debian:12", ttlSeconds: 1 });
    await sleep(1500);
    // A fresh process reaps opportunistically before doing its own work.
    const list = await runCli(["vm", "list", "--json"], { stateDir });
    assert.equal(list.code, 0, list.stderr);
    assert.deepEqual((JSON.parse(list.stdout) as { vms: unknown[] }).vms, []);
    await rejectsWith(pyro.statusVm(third.vmId), "vm_not_found");
  });

  test("a QEMU whose VM directory vanished is found and killed by the reaper", async () => {
    const vm = await pyro.createVm({ environment: "debian:12" });
    await pyro.startVm(vm.vmId);
    const pid = qemuPidOf(vm.vmId);
    rmSync(join(stateDir, "vms", vm.vmId), { recursive: true, force: true });
    await pyro.reapExpired();
    // Gone, or a zombie waiting for this test process (its parent) to collect it.
    assert.equal(await processStartTime(pid), undefined);
  });

  test("one process creates and starts, another inspects, a third execs", async () => {
    const created = await runCli(["vm", "create", "debian:12", "--id-only"], { stateDir });
    assert.equal(created.code, 0, created.stderr);
    const vmId = created.stdout.trim();
    assert.match(vmId, /^[0-9a-f]{12}$/);
    const started = await runCli(["vm", "start", vmId, "--json"], { stateDir });
    assert.equal(started.code, 0, started.stderr);
    // The CLI process that booted it has exited; QEMU lives on, detached.
    assert.equal((await pyro.statusVm(vmId)).state, "started");
    const exec = await runCli(["vm", "exec", vmId, "--json", "--", "cat", "/etc/hostname"], { stateDir });
    assert.equal(exec.code, 0, exec.stderr);
    assert.equal((JSON.parse(exec.stdout) as { stdout: string }).stdout, `pyro-${vmId}\n`);
  });

  test("cancelling a run kills the command and removes the VM", async () => {
    const controller = new AbortController();
    const started = Date.now();
    const run = pyro.runInVm({
      environment: "debian:12",
      command: "echo begun; sleep 60",
      signal: controller.signal,
      onOutput: () => controller.abort(),
    });
    await rejectsWith(run, "cancelled");
    assert.ok(Date.now() - started < 40_000);
  });

  test("without a guest: a clear error, or host_compat when allowed", async () => {
    const noQemu = new Pyro({ stateDir, env: { ...process.env, PYRO_QEMU_BINARY: "/nonexistent/qemu-system-x86_64" } });
    const error = await rejectsWith(noQemu.runInVm({ environment: "debian:12", command: "true" }), "guest_unavailable", /QEMU/);
    assert.match(String(error.hint), /apt-get install qemu-system-x86/);
    // The hint says how to fix the host; it never suggests giving up isolation (a model may read it).
    assert.doesNotMatch(String(error.hint), /host.?compat|isolation/i);

    const result = await noQemu.runInVm({ environment: "debian:12", command: "uname -r; pwd; exit 3", allowHostCompat: true });
    assert.equal(result.executionMode, "host_compat");
    assert.equal(result.accel, null);
    assert.equal(result.exitCode, 3);
    const [kernel, cwd] = result.stdout.split("\n");
    assert.equal(kernel, release());
    assert.match(String(cwd), new RegExp(`${stateDir}/vms/${result.vmId}/work$`));
    const timedOut = await noQemu.runInVm({ environment: "debian:12", command: "sleep 30 & sleep 30", timeoutSeconds: 1, allowHostCompat: true });
    assert.equal(timedOut.timedOut, true);
    assert.equal(timedOut.exitCode, 124);
    assert.equal(execFileSync("sh", ["-c", `pgrep -f '^sleep 30$' || true`]).toString().trim(), "");
  });
});
