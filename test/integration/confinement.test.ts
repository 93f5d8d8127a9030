import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import { spawnSync } from "node:child_process";
import { inspectJail } from "../../src/backends/qemu/jail.js";
import { QmpClient } from "../../src/backends/qemu/qmp.js";
import { Pyro } from "../../src/index.js";
import { assertNothingLeft, ensureEnvironment, qemuProcessesUnder, removeDir, tempStateDir } from "../helpers.js";

const stateDir = tempStateDir();
const pyro = new Pyro({ stateDir });
const root = process.getuid?.() === 0;

async function startedVm(): Promise<string> {
  return (await pyro.startVm((await pyro.createVm({ environment: "debian:12" })).vmId)).vmId;
}

function status(pid: number): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const line of readFileSync(`/proc/${pid}/status`, "utf8").split("\n")) {
    const colon = line.indexOf(":");
    if (colon > 0) fields[line.slice(0, colon)] = line.slice(colon + 1).trim();
  }
  return fields;
}

const namespace = (pid: number | "self", kind: string) => readlinkSync(`/proc/${pid}/ns/${kind}`);

/** The QEMU of the one VM running under this test's state directory. */
function onlyQemu(): number {
  const pids = qemuProcessesUnder(stateDir);
  assert.equal(pids.length, 1, `expected one QEMU, found ${pids.join(", ")}`);
  return pids[0]!;
}

// Both suites below use the state directory; it goes once both are done.
after(() => removeDir(stateDir));

describe("QEMU is confined", () => {
  let vmId = "";
  let qemuPid = 0;

  before(async () => {
    await ensureEnvironment();
    const vm = await pyro.createVm({ environment: "debian:12" });
    vmId = (await pyro.startVm(vm.vmId)).vmId;
    qemuPid = onlyQemu();
  });

  after(async () => {
    await pyro.deleteVm(vmId).catch(() => undefined);
    assertNothingLeft(stateDir);
  });

  test("doctor reports every layer, and as root every layer is active", async () => {
    const report = await pyro.doctor({ bootCheck: false });
    assert.deepEqual(report.confinement.map((l) => l.layer), ["user", "seccomp", "namespaces", "cgroup"]);
    for (const layer of report.confinement) {
      assert.ok(layer.detail.length > 10, `${layer.layer} says what it does or why not`);
      if (root) assert.equal(layer.active, true, `${layer.layer}: ${layer.detail}`);
    }
  });

  test("an unprivileged user, QEMU's seccomp filter, no capabilities", { skip: !root && "needs root" }, () => {
    const s = status(qemuPid);
    const [realUid, effectiveUid] = (s.Uid ?? "").split(/\s+/).map(Number);
    assert.notEqual(realUid, 0);
    assert.notEqual(effectiveUid, 0);
    assert.equal(s.Seccomp, "2", "seccomp filter mode");
    assert.equal(s.NoNewPrivs, "1");
    assert.equal(s.CapEff, "0000000000000000");
    assert.equal(s.CapBnd, "0000000000000000");
  });

  test("its own mount, PID, IPC, UTS and network namespaces", { skip: !root && "needs root" }, () => {
    for (const kind of ["mnt", "pid", "ipc", "uts", "net"]) assert.notEqual(namespace(qemuPid, kind), namespace("self", kind), kind);
  });

  test("a cgroup with memory, process and CPU limits from the VM's shape", { skip: !root && "needs root" }, () => {
    const cgroups = readFileSync(`/proc/${qemuPid}/cgroup`, "utf8");
    assert.match(cgroups, new RegExp(`memory:/pyro/${vmId}$`, "m"));
    assert.match(cgroups, new RegExp(`pids:/pyro/${vmId}$`, "m"));
    const memoryLimit = Number(readFileSync(`/sys/fs/cgroup/memory/pyro/${vmId}/memory.limit_in_bytes`, "utf8"));
    assert.ok(memoryLimit >= 1024 * 1024 * 1024 && memoryLimit <= 2 * 1024 * 1024 * 1024, `memory limit ${memoryLimit}`);
    assert.ok(Number(readFileSync(`/sys/fs/cgroup/pids/pyro/${vmId}/pids.max`, "utf8")) < 1000);
  });

  test("a restored 1024 MiB guest holds the memory its guest uses, not all of it", () => {
    const rssKib = Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${qemuPid}/status`, "utf8"))?.[1]);
    // The template's guest had used under 100 MiB; restoring must not make all 1024 MiB resident
    // (no huge pages for guest RAM, and zero pages never read back in).
    assert.ok(rssKib < 400 * 1024, `QEMU holds ${Math.round(rssKib / 1024)} MiB`);
    assert.match(readFileSync(`/proc/${qemuPid}/status`, "utf8"), /THP_enabled:\s+0/);
  });

  test("QEMU inherits nothing of pyro's environment", { skip: !root && "needs root to read another user's environ" }, () => {
    const environ = readFileSync(`/proc/${qemuPid}/environ`, "utf8").split("\0").filter(Boolean);
    // bubblewrap adds PWD for the directory it starts QEMU in.
    assert.deepEqual(environ.map((e) => e.split("=")[0]).sort(), ["LC_ALL", "PATH", "PWD"]);
  });

  test("QEMU's sockets are moved where it cannot replace them before the guest runs", () => {
    const vmDir = join(stateDir, "vms", vmId);
    assert.deepEqual(readdirSync(join(vmDir, "sock")).sort(), ["agent0.sock", "agent1.sock", "agent2.sock", "agent3.sock", "qmp.sock", "serial.sock"]);
    assert.deepEqual(readdirSync(join(vmDir, "qemu")), ["disk.qcow2"]);
    assert.equal(statSync(join(vmDir, "sock")).mode & 0o777, 0o700);
    if (root) assert.equal(statSync(join(vmDir, "sock")).uid, 0);
  });

  test("QEMU cannot open a host file outside its own set", async () => {
    const environment = await pyro.inspectEnvironment("debian:12");
    const qmp = await QmpClient.connect(join(stateDir, "vms", vmId, "sock", "qmp.sock"), Date.now() + 10_000);
    const open = (filename: string) =>
      qmp.execute("blockdev-add", { driver: "file", "node-name": `probe${Math.random().toString(36).slice(2, 8)}`, filename, "read-only": true }).then(
        () => "opened",
        (error: unknown) => String(error),
      );
    try {
      // The probe works: a file QEMU is given can be opened this way.
      assert.equal(await open(join(environment.cachePath, "vmlinux")), "opened");
      // World-readable on the host, invisible to QEMU.
      for (const hostFile of ["/etc/passwd", "/etc/hostname", join(stateDir, "vms", vmId, "vm.json"), join(environment.cachePath, "manifest.json")]) {
        assert.match(await open(hostFile), /Could not open|No such file|Permission denied/, hostFile);
      }
    } finally {
      qmp.close();
    }
    // The VM still works after the probing.
    assert.equal((await pyro.execVm(vmId, { command: "echo alive" })).stdout, "alive\n");
    vmId = "";
  });
});

describe("templates and VM files", () => {
  afterEach(() => assertNothingLeft(stateDir));

  test("what a taken-over QEMU leaves in its directory cannot redirect pyro", { skip: !root && "needs root" }, async () => {
    await ensureEnvironment();
    const [a, b] = await Promise.all([startedVm(), startedVm()]);
    try {
      // Links in A's QEMU directory to B's sockets: pyro must keep talking to A.
      for (let i = 0; i < 4; i++) symlinkSync(join(stateDir, "vms", b, "sock", `agent${i}.sock`), join(stateDir, "vms", a, "qemu", `agent${i}.sock`));
      assert.equal((await pyro.execVm(a, { command: "hostname" })).stdout, `pyro-${a}\n`);
    } finally {
      await pyro.deleteVm(a).catch(() => undefined);
    }
    try {
      // B's disk replaced by a link to a host file: the next start refuses, and the host file keeps its owner.
      const victim = join(stateDir, "victim");
      writeFileSync(victim, "root's own\n", { mode: 0o600 });
      await pyro.stopVm(b);
      const disk = join(stateDir, "vms", b, "qemu", "disk.qcow2");
      rmSync(disk);
      symlinkSync(victim, disk);
      await assert.rejects(pyro.startVm(b), /not a regular file/);
      assert.equal(statSync(victim).uid, 0);
      assert.equal(statSync(victim).mode & 0o777, 0o600);
      // A link to a file that does not exist: nothing is created through it.
      rmSync(disk);
      symlinkSync(join(stateDir, "created-through-link"), disk);
      await assert.rejects(pyro.startVm(b), /not a regular file/);
      assert.ok(!existsSync(join(stateDir, "created-through-link")));
    } finally {
      await pyro.deleteVm(b).catch(() => undefined);
    }
  });

  test("restores work under confinement, and templates are readable by pyro's user only", async () => {
    await ensureEnvironment();
    const result = await pyro.runInVm({ environment: "debian:12", command: "echo restored" });
    assert.equal(result.stdout, "restored\n");
    const templates = join(pyro.paths.cacheDir, "templates");
    assert.equal(statSync(templates).mode & 0o777, 0o700);
    for (const name of readdirSync(templates).filter((n) => n.startsWith("debian-12-") && !n.endsWith(".lock"))) {
      const dir = join(templates, name);
      assert.equal(statSync(dir).mode & 0o777, 0o700, dir);
      for (const file of readdirSync(dir)) assert.equal(statSync(join(dir, file)).mode & 0o777, 0o600, join(dir, file));
    }
  });
});

describe("the QEMU user", () => {
  test("is created on a host that does not have it yet", { skip: !root && "creating a system user needs root" }, async () => {
    // A name no host has: inspectJail must create it as it would pyro-qemu on a fresh machine.
    const name = `pyro-t${process.pid.toString(36)}`;
    try {
      const host = await inspectJail("qemu-system-x86_64", { ...process.env, PYRO_QEMU_USER: name });
      const layer = host.layers.find((l) => l.layer === "user");
      assert.equal(layer?.active, true, layer?.detail);
      assert.equal(host.qemuUser?.name, name);
      assert.match(readFileSync("/etc/passwd", "utf8"), new RegExp(`^${name}:x:${host.qemuUser.uid}:`, "m"));
    } finally {
      spawnSync("userdel", [name]);
    }
  });
});
