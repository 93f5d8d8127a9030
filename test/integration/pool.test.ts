import assert from "node:assert/strict";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Pyro } from "../../src/index.js";
import { VmManager } from "../../src/runtime/vms.js";
import { ensureEnvironment, PYRO_BIN, qemuProcessesUnder, vmProcessesUnder, rejectsWith, removeDir, runCli, tempStateDir, vmDirsUnder, waitFor } from "../helpers.js";

const stateDir = tempStateDir();
const env = { ...process.env, PYRO_POOL_SIZE: "2" };
const pyro = new Pyro({ stateDir, env });
const runtime = new VmManager(pyro.paths, env);

async function pooled(): Promise<string[]> {
  return (await runtime.list()).filter((r) => r.state === "pooled").map((r) => r.vmId);
}

/** Background fillers of this test's state directory. */
function fillers(): number {
  const out = execFileSync("sh", ["-c", "pgrep -f '[b]in/pyro pool fill' || true"]).toString().trim();
  return out ? out.split("\n").length : 0;
}

async function settle(): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (fillers() > 0 && Date.now() < deadline) await sleep(200);
}

/** The CLI as a process of its own, with progress lines on stderr, for tests that kill it part-way. */
function startCli(args: string[]): { child: ChildProcess; stderr: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [PYRO_BIN, ...args], { env: { ...env, PYRO_STATE_DIR: stateDir, PYRO_PROGRESS: "1" }, stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  return { child, stderr: () => stderr, exited };
}

/** Ids of the pool's VMs in each state, read straight from the records. */
async function poolStates(): Promise<Record<string, string[]>> {
  const states: Record<string, string[]> = {};
  for (const record of await runtime.list()) if (record.pool) (states[record.state] ??= []).push(record.vmId);
  return states;
}

describe("the pool of warm VMs (PYRO_POOL_SIZE)", () => {
  before(() => ensureEnvironment());

  after(async () => {
    await settle();
    for (const record of await runtime.list()) await runtime.delete(record.vmId);
    assert.deepEqual(vmProcessesUnder(stateDir), []);
    removeDir(stateDir);
  });

  test("off unless asked for", async () => {
    const dir = tempStateDir();
    try {
      const plain = new Pyro({ stateDir: dir, env: { ...process.env, PYRO_POOL_SIZE: "" } });
      assert.deepEqual(await plain.fillPool({ environment: "debian:12" }), { enabled: false, size: 0, made: 0, pooled: 0 });
      const listed = await plain.listPool();
      assert.deepEqual({ ...listed, capMib: 0 }, { enabled: false, size: 0, maxMib: 4096, capMib: 0, ttlSeconds: 3600, vms: [], count: 0, memMib: 0 });
      assert.ok(listed.capMib > 0 && listed.capMib <= 4096);
      assert.deepEqual(await plain.drainPool(), { deleted: [], count: 0, freedMib: 0 });
      // A disabled, empty pool says so, and how a pool comes about.
      const list = await runCli(["pool", "list"], { stateDir: dir, env: { PYRO_POOL_SIZE: "" } });
      assert.equal(list.code, 0, list.stderr);
      assert.match(list.stdout, /^no warm VMs in this state directory; this process keeps none \(PYRO_POOL_SIZE is not set\)/);
      const drain = await runCli(["pool", "drain"], { stateDir: dir });
      assert.equal(drain.code, 0, drain.stderr);
      assert.equal(drain.stdout, "no warm VMs to delete\n");
      const drainJson = await runCli(["pool", "drain", "--json"], { stateDir: dir });
      assert.deepEqual(JSON.parse(drainJson.stdout), { deleted: [], count: 0, freed_mib: 0 });
      // An environment not in the catalog is refused, not silently drained as nothing.
      await rejectsWith(plain.drainPool({ environment: "debian:99" }), "unknown_environment");
      const bad = await runCli(["pool", "drain", "debian:99"], { stateDir: dir });
      assert.equal(bad.code, 65);
    } finally {
      removeDir(dir);
    }
  });

  test("fill makes warm VMs that listings do not show", async () => {
    const filled = await pyro.fillPool({ environment: "debian:12" });
    assert.equal(filled.enabled, true);
    assert.equal(filled.pooled, 2);
    assert.equal((await pooled()).length, 2);
    assert.deepEqual(await pyro.listVms(), []);
  });

  test("listPool shows what the fill made: shape, memory held, age, owner, expiry, totals", async () => {
    const pool = await pyro.listPool();
    assert.equal(pool.enabled, true);
    assert.equal(pool.size, 2);
    assert.equal(pool.count, 2);
    assert.equal(pool.memMib, 2048);
    assert.deepEqual(pool.vms.map((vm) => vm.vmId).sort(), (await pooled()).sort());
    for (const vm of pool.vms) {
      assert.deepEqual(
        { environment: vm.environment, vcpuCount: vm.vcpuCount, memMib: vm.memMib, network: vm.network, networkPolicy: vm.networkPolicy, allowHosts: vm.allowHosts, state: vm.state, owner: vm.owner, ownerPid: vm.ownerPid },
        // Made by a fill in no long-lived process: nobody owns it; it waits until taken, drained or expired.
        { environment: "debian:12", vcpuCount: 1, memMib: 1024, network: false, networkPolicy: "off", allowHosts: [], state: "pooled", owner: "none", ownerPid: null },
      );
      assert.ok(vm.residentMib !== null && vm.residentMib > 0, "a running QEMU has memory resident");
      assert.ok(vm.ageSeconds >= 0);
      assert.equal(new Date(vm.expiresAt).getTime() - new Date(vm.createdAt).getTime(), 3600 * 1000);
    }
    // The same through the CLI, in the JSON surface's words and as a table with a line of totals.
    const json = await runCli(["pool", "list", "--json"], { stateDir, env });
    assert.equal(json.code, 0, json.stderr);
    const doc = JSON.parse(json.stdout) as { count: number; mem_mib: number; cap_mib: number; max_mib: number; ttl_seconds: number; vms: Record<string, unknown>[] };
    assert.equal(doc.count, 2);
    assert.equal(doc.mem_mib, 2048);
    assert.deepEqual(Object.keys(doc.vms[0]!).sort(), [
      "age_seconds", "allow_hosts", "created_at", "environment", "expires_at", "mem_mib", "network", "network_policy", "owner", "owner_pid", "resident_mib", "state", "vcpu_count", "vm_id",
    ]);
    const human = await runCli(["pool", "list"], { stateDir, env });
    assert.match(human.stdout, /^SHAPE +STATE +VMS +MEMORY +RESIDENT +AGE +OWNER\n/);
    assert.match(human.stdout, /\ndebian:12, 1 vCPU, 1024 MiB, network off +pooled +2 +2048 MiB +\d+ MiB +\d+[smh]\S* +none/);
    assert.match(human.stdout, /\ntotal: 2 VM\(s\) holding 2048 MiB of guest memory \(cap \d+ MiB now: PYRO_POOL_MAX_MIB 4096/);
  });

  test("a run takes a pooled VM, is its own machine, and a replacement is made", async () => {
    const before = await pooled();
    const probe = "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; hostname";
    const a = await pyro.runInVm({ environment: "debian:12", command: probe });
    assert.ok(before.includes(a.vmId), "the run used a pooled VM");
    const b = await pyro.runInVm({ environment: "debian:12", command: probe });
    assert.ok(before.includes(b.vmId));
    const [randA, hostA] = a.stdout.trim().split("\n");
    const [randB, hostB] = b.stdout.trim().split("\n");
    assert.notEqual(randA, randB);
    assert.equal(hostA, `pyro-${a.vmId}`);
    assert.equal(hostB, `pyro-${b.vmId}`);
    assert.ok(!vmDirsUnder(stateDir).includes(a.vmId), "the used VM is gone");
    // The background filler brings the pool back to size.
    const deadline = Date.now() + 60_000;
    while ((await pooled()).length < 2 && Date.now() < deadline) await sleep(250);
    const now = await pooled();
    assert.equal(now.length, 2);
    assert.ok(!now.includes(a.vmId) && !now.includes(b.vmId));
  });

  test("another shape is not served from this pool", async () => {
    await settle();
    const other = await pyro.runInVm({ environment: "debian:12", memMib: 512, command: "true" });
    assert.ok(!(await pooled()).includes(other.vmId));
    await settle();
  });

  test("the memory cap limits how many VMs wait", async () => {
    const dir = tempStateDir();
    const cappedEnv = { ...process.env, PYRO_POOL_SIZE: "3", PYRO_POOL_MAX_MIB: "2048" };
    const capped = new Pyro({ stateDir: dir, env: cappedEnv });
    const cappedRuntime = new VmManager(capped.paths, cappedEnv);
    try {
      const result = await capped.fillPool({ environment: "debian:12" });
      assert.deepEqual(result, { enabled: true, size: 3, made: 2, pooled: 2 });
    } finally {
      for (const record of await cappedRuntime.list()) await cappedRuntime.delete(record.vmId);
      assert.deepEqual(qemuProcessesUnder(dir), []);
      removeDir(dir);
    }
  });

  test("a drain deletes every pooled VM, and a run taking one at the same moment keeps it", async () => {
    await settle();
    await pyro.fillPool({ environment: "debian:12" });
    const before = await pooled();
    assert.equal(before.length, 2);
    // A drain of another environment leaves these alone.
    assert.deepEqual(await pyro.drainPool({ environment: "debian:12-base" }), { deleted: [], count: 0, freedMib: 0 });
    assert.deepEqual((await pooled()).sort(), [...before].sort());
    const [run, drained] = await Promise.all([pyro.runInVm({ environment: "debian:12", command: "echo ran" }), pyro.drainPool()]);
    assert.equal(run.exitCode, 0);
    assert.equal(run.stdout, "ran\n");
    // Whichever won each VM's lock: the run's VM was never the drain's, and the drain deleted every other one.
    const deletedIds = drained.deleted.map((vm) => vm.vmId);
    assert.ok(!deletedIds.includes(run.vmId));
    assert.deepEqual([...deletedIds, ...(before.includes(run.vmId) ? [run.vmId] : [])].sort(), [...before].sort());
    assert.equal(drained.freedMib, 1024 * drained.count);
    for (const id of before) assert.ok(!vmDirsUnder(stateDir).includes(id));
    // The run's refill began after the drain: it is not the drain's business. Drain what it made.
    await settle();
    await pyro.drainPool();
    assert.deepEqual(await poolStates(), {});
    assert.deepEqual(vmProcessesUnder(stateDir), []);
  });

  test("a refill that began before the drain leaves nothing behind", async () => {
    await settle();
    const fill = startCli(["pool", "fill", "debian:12"]);
    await waitFor("the refill to make a VM", async () => Object.keys(await poolStates()).some((state) => state === "starting" || state === "started"), 120_000);
    const making = (await pyro.listPool()).vms;
    assert.equal(making.length, 1);
    assert.equal(making[0]!.state, "warming");
    // Owned by the refill while it is made: should the refill die, the VM goes with it.
    assert.deepEqual([making[0]!.owner, making[0]!.ownerPid], ["process", fill.child.pid]);
    const drained = await pyro.drainPool();
    assert.deepEqual(drained.deleted.map((vm) => vm.vmId), [making[0]!.vmId]);
    // Whichever of the two deleted it, its id says a drain took it.
    await rejectsWith(pyro.statusVm(making[0]!.vmId), "vm_not_found", /deleted by a drain/);
    assert.equal(await fill.exited, 0, fill.stderr());
    assert.deepEqual(await poolStates(), {});
    assert.deepEqual(vmProcessesUnder(stateDir), []);
  });

  test("a drain killed part-way leaves only whole pooled VMs, which the next drain deletes", async () => {
    await settle();
    assert.equal((await pyro.fillPool({ environment: "debian:12" })).pooled, 2);
    const drain = startCli(["pool", "drain"]);
    await waitFor("the drain to delete a VM", () => /deleted pooled VM/.test(drain.stderr()) || drain.child.exitCode !== null, 120_000);
    drain.child.kill("SIGKILL");
    await drain.exited;
    // What the killed drain did not finish is either still a working pooled VM, or removed by the next command.
    const next = new Pyro({ stateDir, env });
    try {
      const left = await next.listPool();
      assert.ok(left.count <= 1, `the drain deleted one before it was killed (${left.count} left)`);
      for (const vm of left.vms) {
        assert.equal(vm.state, "pooled");
        assert.ok(vm.residentMib !== null, "its QEMU runs");
      }
      const again = await runCli(["pool", "drain", "--json"], { stateDir, env });
      assert.equal(again.code, 0, again.stderr);
      const doc = JSON.parse(again.stdout) as { deleted: { vm_id: string; mem_mib: number }[]; count: number; freed_mib: number };
      assert.deepEqual(doc.deleted.map((vm) => vm.vm_id).sort(), left.vms.map((vm) => vm.vmId).sort());
      assert.equal(doc.freed_mib, 1024 * doc.count);
    } finally {
      await next.close();
    }
    assert.deepEqual(await poolStates(), {});
    assert.deepEqual(vmProcessesUnder(stateDir), []);
  });
  test("a server's warm VMs show as its own, and a drain from another process deletes them", async () => {
    await settle();
    const { PYRO_POOL_SIZE: _size, ...serverEnv } = env;
    const server = new Pyro({ stateDir, env: serverEnv, keepWarm: 1 });
    try {
      assert.equal((await server.runInVm({ environment: "debian:12", command: "true" })).exitCode, 0);
      // The server refills in itself after the run.
      await waitFor("the server to have a warm VM", async () => (await poolStates()).pooled?.length === 1, 120_000);
      const own = await server.listPool();
      assert.deepEqual([own.enabled, own.size, own.count, own.vms[0]!.owner, own.vms[0]!.ownerPid], [true, 1, 1, "this_process", process.pid]);
      const list = await runCli(["pool", "list", "--json"], { stateDir, env: { PYRO_POOL_SIZE: "" } });
      const doc = JSON.parse(list.stdout) as { enabled: boolean; vms: { owner: string; owner_pid: number }[] };
      assert.deepEqual([doc.enabled, doc.vms[0]!.owner, doc.vms[0]!.owner_pid], [false, "process", process.pid]);
      const human = await runCli(["pool", "list"], { stateDir, env: { PYRO_POOL_SIZE: "" } });
      assert.match(human.stdout, new RegExp(`pooled +1 +1024 MiB .* pid ${process.pid}\\n`));
      assert.match(human.stdout, /this process keeps none \(PYRO_POOL_SIZE is not set\)/);
      const drain = await runCli(["pool", "drain"], { stateDir, env: { PYRO_POOL_SIZE: "" } });
      assert.equal(drain.code, 0, drain.stderr);
      assert.match(drain.stdout, /\ndeleted 1 VM\(s\), freeing 1024 MiB of guest memory\n$/);
      assert.deepEqual(await poolStates(), {});
    } finally {
      // The server's own cleanup finds its VM gone and does not mind.
      await server.close();
    }
    assert.deepEqual(vmProcessesUnder(stateDir), []);
  });
  test("a refill killed part-way leaves nothing the next pyro command does not remove", async () => {
    await settle();
    const fill = startCli(["pool", "fill", "debian:12"]);
    await waitFor("the refill to make a VM", async () => Object.keys(await poolStates()).some((state) => state === "starting" || state === "started"), 120_000);
    fill.child.kill("SIGKILL");
    await fill.exited;
    // A fresh process (as the next pyro command would be) reaps the VM whose maker died before listing.
    const next = new Pyro({ stateDir, env });
    try {
      assert.deepEqual((await next.listPool()).vms, []);
    } finally {
      await next.close();
    }
    assert.deepEqual(await poolStates(), {});
    assert.deepEqual(vmProcessesUnder(stateDir), []);
  });


});
