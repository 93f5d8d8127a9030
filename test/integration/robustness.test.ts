import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Pyro, PyroError, type Workspace } from "../../src/index.js";
import { assertNothingLeft, ensureEnvironment, PYRO_BIN, qemuProcessesUnder, vmProcessesUnder, removeDir, ROOT, runCli, tempStateDir, vmDirsUnder, waitFor } from "../helpers.js";
import { makeTar } from "../tar.js";

const stateDir = tempStateDir();
const scratch = mkdtempSync(join(tmpdir(), "pyro-robust-"));
const pyro = new Pyro({ stateDir });
const cliEnv = { ...process.env, PYRO_STATE_DIR: stateDir, PYRO_PROGRESS: "0" };

function json<T>(text: string): T {
  return JSON.parse(text) as T;
}

/** Starts the CLI and resolves once its stdout contains `marker`. */
async function startedCli(args: string[], marker: string): Promise<{ child: ChildProcess; stdout: () => string }> {
  const child = spawn(process.execPath, [PYRO_BIN, ...args], { env: cliEnv, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout.setEncoding("utf8").on("data", (c: string) => (out += c));
  child.stderr.setEncoding("utf8").on("data", (c: string) => (err += c));
  const deadline = Date.now() + 120_000;
  while (!out.includes(marker)) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`pyro ${args.join(" ")} ended before "${marker}": ${out}\n${err}`);
    await sleep(50);
  }
  return { child, stdout: () => out };
}

function exited(child: ChildProcess): Promise<number | null> {
  return child.exitCode !== null ? Promise.resolve(child.exitCode) : new Promise((r) => child.once("exit", (code) => r(code)));
}

function recordOf(vmId: string): { state: string; qemu: { pid: number } | null; failure: string | null } {
  return json(readFileSync(join(stateDir, "vms", vmId, "vm.json"), "utf8"));
}

describe("one workspace: hostile commands, stalled pushes, long output", () => {
  // Its own state directory: the other tests check theirs is empty after each.
  const wsState = tempStateDir();
  const owner = new Pyro({ stateDir: wsState });
  let ws: Workspace;
  before(async () => {
    await ensureEnvironment();
    ws = await owner.createWorkspace({ environment: "debian:12" });
  });
  after(async () => {
    await ws[Symbol.asyncDispose]();
    await owner.close();
    assertNothingLeft(wsState);
    removeDir(wsState);
  });

  for (const [name, command] of [
    ["a fork bomb", ":(){ :|:& };:"],
    ["a memory hog", "tail /dev/zero"],
    ["a sleeper", "sleep 60"],
  ] as const) {
    test(`${name} ends at its 5 s timeout, and the next command runs`, async () => {
      const started = Date.now();
      const result = await ws.exec(command, { timeoutSeconds: 5 });
      const seconds = (Date.now() - started) / 1000;
      assert.equal(result.timedOut, true, JSON.stringify(result));
      assert.equal(result.exitCode, 124);
      assert.ok(seconds < 10, `took ${seconds} s`);
      const next = await ws.exec("echo alive; ps --ppid 2 -p 2 --deselect --no-headers | wc -l");
      assert.equal(next.exitCode, 0, next.stderr);
      const [alive, processes] = next.stdout.trim().split("\n");
      assert.equal(alive, "alive");
      // Nothing of the bomb survived its command.
      assert.ok(Number(processes) < 30, `${processes} user processes in the guest`);
    });
  }

  test("a guest that stops reading fails the push at its deadline; the workspace is usable afterwards", async () => {
    const tree = join(scratch, "big");
    mkdirSync(join(tree, "data"), { recursive: true });
    for (let i = 0; i < 40; i++) writeFileSync(join(tree, "data", `blob${i}`), Buffer.alloc(1024 * 1024, i));
    const [qemu] = qemuProcessesUnder(ws.workspaceId);
    assert.ok(qemu);
    const started = Date.now();
    const push = ws.push(tree, { dest: "big", timeoutSeconds: 4 });
    await sleep(500);
    process.kill(qemu, "SIGSTOP");
    try {
      const error = await push.then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(error instanceof PyroError, `the push failed: ${String(error)}`);
      assert.ok(Date.now() - started < 15_000, `failed after ${Date.now() - started} ms`);
    } finally {
      process.kill(qemu, "SIGCONT");
    }
    const after = await ws.exec("ls /workspace");
    assert.equal(after.exitCode, 0, after.stderr);
    assert.equal(after.stdout, "", "a failed push leaves nothing");
    const small = join(scratch, "small");
    mkdirSync(small);
    writeFileSync(join(small, "ok.txt"), "ok\n");
    await ws.push(small, { dest: "small" });
    assert.equal((await ws.exec("cat small/ok.txt")).stdout, "ok\n");
  });

  test("a tree whose files turn into links to host files during a push fails that push only", async () => {
    const tree = join(scratch, "racy");
    mkdirSync(tree);
    for (let i = 0; i < 24; i++) writeFileSync(join(tree, `blob${String(i).padStart(2, "0")}`), Buffer.alloc(1024 * 1024, i));
    const push = ws.push(tree, { dest: "racy" });
    await sleep(300);
    // Files not sent yet now lead to a host file (the first ones are already on their way).
    for (let i = 12; i < 24; i++) {
      const name = join(tree, `blob${String(i).padStart(2, "0")}`);
      rmSync(name);
      symlinkSync("/etc/shadow", name);
    }
    const error = await push.then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(error instanceof PyroError, `the push failed: ${String(error)}`);
    assert.equal(error.code, "source_refused", error.message);
    assert.match(error.message, /^blob\d+ became a symlink after it was checked/);
    const check = await ws.exec("test -e /workspace/racy && echo present || echo absent");
    assert.equal(check.stdout, "absent\n");
  });

  test("output past 16 KiB: head and tail for a model, the whole of it in the journal", async () => {
    const result = await ws.exec("seq 1 30000");
    assert.equal(result.stdout.split("\n").length, 30001, "the SDK result holds it all");
    const { entries } = await ws.logs();
    const entry = entries.find((e) => e.sequence === result.sequence)!;
    assert.equal(entry.stdoutTruncated, true);
    assert.match(entry.stdout, /^1\n2\n3\n/);
    assert.match(entry.stdout, /\n29999\n30000\n$/);
    assert.match(entry.stdout, /bytes cut from the middle; the whole output is in the workspace's journal, sequence \d+/);
    const whole = await ws.logs({ sequence: result.sequence });
    assert.equal(whole.entries.length, 1);
    assert.equal(whole.entries[0]!.stdout, result.stdout);
    assert.equal(whole.entries[0]!.stdoutTruncated, false);
    await assert.rejects(ws.logs({ sequence: 99_999 }), /no command 99999/);
  });
});

describe("robustness on real guests", () => {
  before(() => ensureEnvironment());

  afterEach(() => assertNothingLeft(stateDir));

  after(async () => {
    await pyro.close();
    removeDir(stateDir);
    removeDir(scratch);
  });

  test("a gzip archive seeds whatever its name: .tar, or no extension at all", async () => {
    const tgz = makeTar([{ path: "hello.txt", data: "from gzip\n" }], { gzip: true });
    for (const name of ["seed.tar", "seed"]) {
      const path = join(scratch, name);
      writeFileSync(path, tgz);
      await using ws = await pyro.createWorkspace({ environment: "debian:12", seedPath: path });
      assert.equal(ws.workspaceSeed.mode, "tar_archive");
      assert.equal((await ws.exec("cat hello.txt")).stdout, "from gzip\n", name);
    }
  });

  test("await using deletes a workspace when the block ends, even when it throws", async () => {
    let id = "";
    await assert.rejects(
      (async () => {
        await using ws = await pyro.createWorkspace({ environment: "debian:12" });
        id = ws.workspaceId;
        assert.equal((await ws.exec("echo hi")).stdout, "hi\n");
        throw new Error("the block failed");
      })(),
      /the block failed/,
    );
    assert.match(id, /^[0-9a-f]{12}$/);
    await assert.rejects(pyro.statusWorkspace(id), (e: unknown) => e instanceof PyroError && e.code === "workspace_not_found");
  });

  test("a killed `pyro run` leaves a VM the next pyro command removes, and `pyro vm reap` too", async () => {
    for (const next of [["run", "debian:12", "--json", "--", "true"], ["vm", "reap", "--json"]]) {
      const { child } = await startedCli(["run", "debian:12", "--", "sh", "-c", "echo started; sleep 60"], "started");
      child.kill("SIGKILL");
      await exited(child);
      assert.equal(qemuProcessesUnder(stateDir).length, 1, "its VM runs on for now");
      const result = await runCli(next, { stateDir });
      assert.equal(result.code, 0, result.stderr);
      assert.deepEqual(vmProcessesUnder(stateDir), [], `after pyro ${next.join(" ")}`);
      assert.deepEqual(vmDirsUnder(stateDir), []);
    }
  });

  test("a killed `pyro vm exec` leaves a VM the next pyro command removes", async () => {
    const created = await runCli(["vm", "create", "debian:12", "--json"], { stateDir });
    const vmId = json<{ vm_id: string }>(created.stdout).vm_id;
    assert.equal((await runCli(["vm", "start", vmId, "--json"], { stateDir })).code, 0);
    const { child } = await startedCli(["vm", "exec", vmId, "--", "sh", "-c", "echo started; sleep 60"], "started");
    child.kill("SIGKILL");
    await exited(child);
    assert.equal((await runCli(["vm", "reap", "--json"], { stateDir })).code, 0);
    assert.deepEqual(vmProcessesUnder(stateDir), []);
    assert.deepEqual(vmDirsUnder(stateDir), []);
  });

  test("two concurrent starts of one VM run one QEMU, and the record names it", async () => {
    const vm = await pyro.createVm({ environment: "debian:12" });
    const starts = await Promise.all([runCli(["vm", "start", vm.vmId, "--json"], { stateDir }), runCli(["vm", "start", vm.vmId, "--json"], { stateDir })]);
    assert.ok(
      starts.some((s) => s.code === 0),
      starts.map((s) => s.stdout + s.stderr).join("\n"),
    );
    for (const s of starts.filter((r) => r.code !== 0)) assert.equal(json<{ error: { code: string } }>(s.stdout).error.code, "vm_not_running");
    const pids = qemuProcessesUnder(vm.vmId);
    assert.equal(pids.length, 1, `QEMUs: ${pids.join(", ")}`);
    const record = recordOf(vm.vmId);
    assert.equal(record.state, "started");
    // The record names the host's pid of QEMU, which may sit below its sandbox.
    assert.equal(record.qemu?.pid, pids[0]);
    assert.equal((await vm.exec("echo one")).stdout, "one\n");
  });

  test("a start whose process is killed half-way is reported failed, leaves no QEMU, and can be started again", async () => {
    const vm = await pyro.createVm({ environment: "debian:12" });
    const child = spawn(process.execPath, [PYRO_BIN, "vm", "start", vm.vmId], { env: cliEnv, stdio: "ignore" });
    await waitFor("its QEMU", () => qemuProcessesUnder(vm.vmId).length > 0);
    child.kill("SIGKILL");
    await exited(child);
    const status = await vm.status();
    assert.equal(status.state, "failed");
    assert.match(String(status.failure), /ended before it was up/);
    await waitFor("the orphaned QEMU to go", () => qemuProcessesUnder(vm.vmId).length === 0, 10_000);
    await vm.start();
    assert.equal(vm.state, "started");
    assert.equal((await vm.exec("echo again")).stdout, "again\n");
  });

  test("a script that creates and starts a VM, then returns, exits on its own", async () => {
    const script = join(scratch, "starts.mjs");
    writeFileSync(
      script,
      [
        `import { Pyro } from ${JSON.stringify(join(ROOT, "dist", "index.js"))};`,
        "const vm = await new Pyro().createVm({ environment: 'debian:12' });",
        "await vm.start();",
        "console.log(vm.vmId, vm.state);",
      ].join("\n"),
    );
    const child = spawn(process.execPath, [script], { env: cliEnv, stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => (out += c));
    const killer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    const code = await exited(child);
    clearTimeout(killer);
    assert.equal(code, 0, "the script exited by itself");
    const [vmId, state] = out.trim().split(" ");
    assert.equal(state, "started");
    await pyro.deleteVm(vmId!);
  });
});

describe("a pyro killed while it starts a VM's sandbox", () => {
  const killState = tempStateDir();
  const env = { ...process.env, PYRO_STATE_DIR: killState, PYRO_PROGRESS: "0" };
  before(() => ensureEnvironment());
  afterEach(() => assertNothingLeft(killState));
  after(() => removeDir(killState));

  const cmdline = (pid: string) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    } catch {
      return [];
    }
  };
  const childrenOf = (pid: number) => {
    try {
      return readdirSync(`/proc/${pid}/task`).flatMap((task) => readFileSync(`/proc/${pid}/task/${task}/children`, "utf8").split(" ").filter(Boolean));
    } catch {
      return [];
    }
  };
  /** What of this state directory has not started what it confines yet: the launcher, or bubblewrap with no child but bubblewrap. */
  const unstarted = () =>
    vmProcessesUnder(killState).filter((pid) => {
      const program = cmdline(String(pid))[0] ?? "";
      return program.endsWith("pyro-launch") || (program.endsWith("bwrap") && !childrenOf(pid).some((child) => !cmdline(child)[0]?.endsWith("bwrap")));
    });

  // Killed the moment its launcher (or bubblewrap) exists, before bubblewrap reports the pid of what it confines;
  // and once QEMU runs. With a network, the first sandbox is the network helper's.
  const points = [
    { what: "its sandbox is spawned", args: ["run", "debian:12", "--", "true"], launcher: true },
    { what: "the network helper's sandbox is spawned", args: ["run", "--network", "debian:12", "--", "true"], launcher: true },
    { what: "its QEMU runs", args: ["run", "debian:12", "--", "true"], launcher: false },
  ];
  for (const point of points) {
    test(`killed when ${point.what}: no sandbox is stranded, and the next pyro command removes the rest`, async () => {
      const child = spawn(process.execPath, [PYRO_BIN, ...point.args], { env, stdio: "ignore" });
      const deadline = Date.now() + 120_000;
      const fired = () =>
        point.launcher
          ? childrenOf(child.pid!).some((pid) => {
              const argv = cmdline(pid);
              return argv[0]?.endsWith("pyro-launch") || (argv[0]?.endsWith("bwrap") && argv.join(" ").includes(killState));
            })
          : qemuProcessesUnder(killState).length > 0;
      // Looked for without yielding: the moment lasts a few milliseconds (pyro's exit shows as a zombie meanwhile).
      const running = () => !/^\S+ \(.*\) Z/.test(readFileSync(`/proc/${child.pid}/stat`, "utf8"));
      while (!fired()) assert.ok(running() && Date.now() < deadline, `pyro ${point.args.join(" ")} never reached the point`);
      child.kill("SIGKILL");
      await exited(child);
      // What bubblewrap was starting goes on starting (a stranded one never would), until the next command removes it.
      await waitFor("every sandbox to start what it confines", () => unstarted().length === 0, 30_000);
      const next = await runCli(["vm", "list", "--json"], { stateDir: killState });
      assert.equal(next.code, 0, next.stderr);
      assert.deepEqual(vmProcessesUnder(killState), []);
      assert.deepEqual(vmDirsUnder(killState), []);
    });
  }

  test("a sandbox stranded by its parent's death is killed by the next pyro command", async () => {
    // bubblewrap as pyro's VMs use it, held before it lets its child (the sandbox's pid 1) go on; killing it
    // there leaves that child waiting for ever, as a pid report that could not be written did before.
    const jailDir = join(killState, "vms", "0123456789ab", "qemu");
    mkdirSync(jailDir, { recursive: true });
    const bwrap = spawn(
      "bwrap",
      ["--unshare-user", "--unshare-pid", "--as-pid-1", "--ro-bind", "/", "/", "--bind", jailDir, jailDir, "--info-fd", "3", "--userns-block-fd", "4", "--", "true"],
      { stdio: ["ignore", "ignore", "ignore", "pipe", "pipe"] },
    );
    let info = "";
    (bwrap.stdio[3] as NodeJS.ReadableStream).setEncoding("utf8").on("data", (chunk: string) => (info += chunk));
    await waitFor("bubblewrap's pid report", () => /"child-pid": \d+/.test(info), 10_000);
    const stranded = Number(/"child-pid": (\d+)/.exec(info)![1]);
    bwrap.kill("SIGKILL");
    await exited(bwrap);
    (bwrap.stdio[4] as NodeJS.WritableStream).end();
    assert.deepEqual(vmProcessesUnder(killState), [stranded], "its child waits on");
    const next = await runCli(["vm", "list", "--json"], { stateDir: killState });
    assert.equal(next.code, 0, next.stderr);
    await waitFor("the stranded sandbox to be reaped by init", () => vmProcessesUnder(killState).length === 0, 10_000);
    rmSync(join(killState, "vms", "0123456789ab"), { recursive: true, force: true });
  });
});
