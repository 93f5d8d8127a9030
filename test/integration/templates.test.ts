import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import { Pyro, type VmInfo } from "../../src/index.js";
import { assertNothingLeft, ensureEnvironment, removeDir, runCli, tempStateDir } from "../helpers.js";

const stateDir = tempStateDir();
/** Templates of our own (they live in the cache dir), environments shared with the other tests. */
const cacheDir = tempStateDir("pyro-test-templates-");
let env: NodeJS.ProcessEnv;
let pyro: Pyro;

function templateDirs(): string[] {
  try {
    return readdirSync(join(cacheDir, "templates")).filter((name) => name.startsWith("debian-12-") && !name.endsWith(".lock"));
  } catch {
    return [];
  }
}

async function startedVm(options: { network?: boolean } = {}): Promise<VmInfo> {
  const vm = await pyro.createVm({ environment: "debian:12", ...options });
  return pyro.startVm(vm.vmId);
}

describe("template snapshots", () => {
  before(async () => {
    await ensureEnvironment();
    const environmentsDir = new Pyro().paths.environmentsDir;
    env = { ...process.env, PYRO_CACHE_DIR: cacheDir, PYRO_ENVIRONMENT_CACHE_DIR: environmentsDir };
    pyro = new Pyro({ stateDir, env });
    // The first start makes the template.
    const first = await startedVm();
    assert.equal(first.bootMode, "restore");
    await pyro.deleteVm(first.vmId);
    assert.equal(templateDirs().length, 1);
  });

  afterEach(() => {
    assertNothingLeft(stateDir);
  });

  after(() => {
    removeDir(stateDir);
    removeDir(cacheDir);
  });

  test("two restored VMs are two machines: own entropy, hostname, machine id", async () => {
    const [a, b] = await Promise.all([startedVm(), startedVm()]);
    assert.equal(a.bootMode, "restore");
    assert.equal(b.bootMode, "restore");
    const probe = "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; hostname; cat /etc/machine-id";
    const [ra, rb] = await Promise.all([pyro.execVm(a.vmId, { command: probe }), pyro.execVm(b.vmId, { command: probe })]);
    const [randA, hostA, idA] = ra.stdout.trim().split("\n");
    const [randB, hostB, idB] = rb.stdout.trim().split("\n");
    assert.match(String(randA), /^[0-9a-f]{32}$/);
    assert.notEqual(randA, randB, "restored clones produced the same random bytes");
    assert.equal(hostA, `pyro-${a.vmId}`);
    assert.equal(hostB, `pyro-${b.vmId}`);
    assert.match(String(idA), /^[0-9a-f]{32}$/);
    assert.notEqual(idA, idB);
  });

  test("under TCG, guest programs map at fixed addresses (translated code is reused); under KVM they keep randomization", async () => {
    const accel = (await pyro.doctor({ bootCheck: false })).accel.accel;
    const vm = await startedVm();
    const result = await pyro.execVm(vm.vmId, { command: "cat /proc/sys/kernel/randomize_va_space; for i in 1 2; do grep -m1 libc /proc/self/maps | cut -d- -f1; done" });
    const [setting, first, second] = result.stdout.trim().split("\n");
    if (accel === "tcg") {
      assert.equal(setting, "0");
      assert.equal(first, second, "two processes mapped libc at different addresses");
    } else {
      assert.equal(setting, "2");
    }
  });

  test("the guest clock matches the host's right after restore", async () => {
    const vm = await startedVm();
    const before = Date.now() / 1000;
    const result = await pyro.execVm(vm.vmId, { command: "date +%s.%N" });
    const after = Date.now() / 1000;
    const guest = Number(result.stdout.trim());
    assert.ok(guest >= before - 2 && guest <= after + 2, `guest ${guest}, host ${before}..${after}`);
  });

  test("four parallel restores see only their own disks; nothing carries over to the next run", async () => {
    const vms = await Promise.all([1, 2, 3, 4].map(() => startedVm()));
    for (const vm of vms) assert.equal(vm.bootMode, "restore");
    const results = await Promise.all(
      vms.map((vm, i) => pyro.execVm(vm.vmId, { command: `echo ${i} > /root/mine-${i}; sync; ls /root | grep mine- | tr '\\n' ' '` })),
    );
    results.forEach((r, i) => assert.equal(r.stdout, `mine-${i} `));
    const next = await pyro.runInVm({ environment: "debian:12", command: "ls /root | grep -c mine- || true" });
    assert.equal(next.stdout.trim(), "0");
  });

  test("a truncated template is not used: the run boots cold, and the next one restores from a rebuilt template", async () => {
    const [dir] = templateDirs();
    const state = join(cacheDir, "templates", String(dir), "state");
    truncateSync(state, Math.floor(statSync(state).size / 2));
    const cold = await runCli(["run", "debian:12", "--json", "--", "echo", "still-works"], { stateDir, env: { ...env, PYRO_DEBUG: "1" } });
    assert.equal(cold.code, 0, cold.stderr);
    assert.equal((JSON.parse(cold.stdout) as { stdout: string }).stdout, "still-works\n");
    assert.match(cold.stderr, /discarding .*state has \d+ bytes/);
    assert.match(cold.stderr, /started \(cold/);
    const again = await startedVm();
    assert.equal(again.bootMode, "restore");
    await pyro.deleteVm(again.vmId);
  });

  test("a template whose state QEMU cannot load falls back to a cold boot and is remade", async () => {
    const [dir] = templateDirs();
    const templateDir = join(cacheDir, "templates", String(dir));
    const state = join(templateDir, "state");
    // Garbage that passes the size and digest checks: only the restore itself can fail.
    const garbage = Buffer.alloc(statSync(state).size, 0x5a);
    writeFileSync(state, garbage);
    const manifestPath = join(templateDir, "manifest.json");
    const manifest = JSON.parse(readFileSync(manifestPath, "utf8")) as { files: { state: { sha256: string; stamp: string } } };
    manifest.files.state.sha256 = createHash("sha256").update(garbage).digest("hex");
    manifest.files.state.stamp = "";
    writeFileSync(manifestPath, JSON.stringify(manifest));

    const phases: string[] = [];
    const vm = await pyro.createVm({ environment: "debian:12" });
    const started = await pyro.startVm(vm.vmId, { onProgress: (e) => phases.push(e.message) });
    assert.equal(started.bootMode, "cold");
    assert.ok(phases.some((p) => /restoring the template failed; booting cold/.test(p)), phases.join("\n"));
    assert.equal((await pyro.execVm(vm.vmId, { command: "echo ok" })).stdout, "ok\n");
    const again = await startedVm();
    assert.equal(again.bootMode, "restore");
    await pyro.deleteVm(again.vmId);
  });

  test("a stopped VM keeps its own disk and boots cold", async () => {
    const vm = await startedVm();
    await pyro.stopVm(vm.vmId);
    const restarted = await pyro.startVm(vm.vmId);
    assert.equal(restarted.bootMode, "cold");
    await pyro.deleteVm(vm.vmId);
  });

  test("each machine shape has its own template; pull --warm makes the default one ahead of time", async () => {
    const net = await startedVm({ network: true });
    assert.equal(net.bootMode, "restore");
    await pyro.deleteVm(net.vmId);
    assert.equal(templateDirs().filter((d) => d.includes("-net-")).length, 1);

    const fresh = tempStateDir("pyro-test-warm-");
    try {
      const warmEnv = { ...env, PYRO_CACHE_DIR: fresh };
      const pull = await runCli(["env", "pull", "debian:12", "--warm", "--json"], { stateDir, env: warmEnv });
      assert.equal(pull.code, 0, pull.stderr);
      assert.equal(readdirSync(join(fresh, "templates")).filter((n) => n.startsWith("debian-12-1cpu-1024m-nonet-")).length, 1);
      const vm = await new Pyro({ stateDir, env: warmEnv }).createVm({ environment: "debian:12" });
      const started = await new Pyro({ stateDir, env: warmEnv }).startVm(vm.vmId);
      assert.equal(started.bootMode, "restore");
      await pyro.deleteVm(vm.vmId);
    } finally {
      removeDir(fresh);
    }
  });
});
