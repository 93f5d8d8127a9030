import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Pyro } from "../../src/index.js";
import { VmManager } from "../../src/runtime/vms.js";
import { ensureEnvironment, qemuProcessesUnder, removeDir, tempStateDir, vmDirsUnder } from "../helpers.js";

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

describe("the pool of warm VMs (PYRO_POOL_SIZE)", () => {
  before(() => ensureEnvironment());

  after(async () => {
    await settle();
    for (const record of await runtime.list()) await runtime.delete(record.vmId);
    assert.deepEqual(qemuProcessesUnder(stateDir), []);
    removeDir(stateDir);
  });

  test("off unless asked for", async () => {
    const dir = tempStateDir();
    try {
      const plain = new Pyro({ stateDir: dir, env: { ...process.env, PYRO_POOL_SIZE: "" } });
      assert.deepEqual(await plain.fillPool({ environment: "debian:12" }), { enabled: false, size: 0, made: 0, pooled: 0 });
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
});
