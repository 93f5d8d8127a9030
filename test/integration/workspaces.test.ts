import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Pyro } from "../../src/index.js";
import { assertNothingLeft, ensureEnvironment, qemuProcessesUnder, vmProcessesUnder, removeDir, runCli, tempStateDir, vmDirsUnder, rejectsWith } from "../helpers.js";
import { makeTar, type RawEntry } from "../tar.js";

const stateDir = tempStateDir();
const scratch = mkdtempSync(join(tmpdir(), "pyro-ws-src-"));
const pyro = new Pyro({ stateDir });

function json<T>(stdout: string): T {
  return JSON.parse(stdout) as T;
}

function seedDir(name: string, files: Record<string, string>): string {
  const dir = join(scratch, name);
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(join(dir, path, ".."), { recursive: true });
    writeFileSync(join(dir, path), content);
  }
  return dir;
}

function archiveFile(name: string, entries: RawEntry[], gzip = false): string {
  const path = join(scratch, name);
  writeFileSync(path, makeTar(entries, { gzip }));
  return path;
}

after(() => {
  removeDir(stateDir);
  removeDir(scratch);
});

describe("workspaces on real guests", () => {
  before(() => ensureEnvironment());

  afterEach(() => {
    assertNothingLeft(stateDir);
  });


  test("seeded from a directory, across processes: create, exec, push, exec, status, logs, delete", async () => {
    const seed = seedDir("repo", { "hello.txt": "hello from the host\n", "src/main.sh": "echo main\n" });
    const created = await runCli(["workspace", "create", "debian:12", "--seed-path", seed, "--name", "repo", "--label", "task=t1", "--id-only"], { stateDir });
    assert.equal(created.code, 0, created.stderr);
    const id = created.stdout.trim();
    assert.match(id, /^[0-9a-f]{12}$/);

    const cat = await runCli(["workspace", "exec", id, "--json", "--", "cat", "hello.txt"], { stateDir });
    assert.equal(cat.code, 0, cat.stderr);
    const catResult = json<{ stdout: string; workspace_id: string; sequence: number; execution_mode: string }>(cat.stdout);
    assert.equal(catResult.stdout, "hello from the host\n");
    assert.equal(catResult.workspace_id, id);
    assert.equal(catResult.sequence, 1);

    const made = await runCli(["workspace", "exec", id, "--", "sh", "-c", "echo made-inside > made.txt; pwd"], { stateDir });
    assert.equal(made.stdout, "/workspace\n");

    const later = seedDir("later", { "pushed.txt": "pushed later\n" });
    const push = await runCli(["workspace", "sync", "push", id, later, "--dest", "incoming", "--json"], { stateDir });
    assert.equal(push.code, 0, push.stderr);
    assert.deepEqual(json<{ dest: string; files: number; mode: string }>(push.stdout), {
      ...json<object>(push.stdout),
      dest: "/workspace/incoming",
      files: 1,
      mode: "directory",
    });

    const both = await runCli(["workspace", "exec", id, "--json", "--", "sh", "-c", "cat made.txt incoming/pushed.txt src/main.sh"], { stateDir });
    assert.equal(json<{ stdout: string }>(both.stdout).stdout, "made-inside\npushed later\necho main\n");
    await runCli(["workspace", "exec", id, "--", "sh", "-c", "exit 3"], { stateDir });

    const status = json<{
      workspace_id: string;
      state: string;
      name: string;
      labels: Record<string, string>;
      workspace_path: string;
      command_count: number;
      last_command: { command: string; exit_code: number };
      workspace_seed: { mode: string; seed_path: string };
      expires_at: string;
    }>((await runCli(["workspace", "status", id, "--json"], { stateDir })).stdout);
    assert.equal(status.state, "started");
    assert.equal(status.name, "repo");
    assert.deepEqual(status.labels, { task: "t1" });
    assert.equal(status.workspace_path, "/workspace");
    assert.equal(status.command_count, 4);
    assert.deepEqual(status.last_command, { command: "sh -c 'exit 3'", exit_code: 3 });
    assert.deepEqual(status.workspace_seed, { mode: "directory", seed_path: seed });
    assert.ok(new Date(status.expires_at).getTime() > Date.now());

    // The SDK in this process sees what the CLI processes did.
    const logs = await pyro.logsWorkspace(id);
    assert.deepEqual(
      logs.entries.map((e) => [e.sequence, e.command, e.exitCode]),
      [
        [1, "cat hello.txt", 0],
        [2, "sh -c 'echo made-inside > made.txt; pwd'", 0],
        [3, "sh -c 'cat made.txt incoming/pushed.txt src/main.sh'", 0],
        [4, "sh -c 'exit 3'", 3],
      ],
    );
    assert.equal(logs.entries[0]?.stdout, "hello from the host\n");
    const human = await runCli(["workspace", "logs", id], { stateDir });
    assert.match(human.stdout, /#1 \$ cat hello\.txt/);

    const deleted = await runCli(["workspace", "delete", id, "--json"], { stateDir });
    assert.deepEqual(json(deleted.stdout), { workspace_id: id, deleted: true });
    const gone = await runCli(["workspace", "status", id], { stateDir });
    assert.equal(gone.code, 76);
    // Gone, and it says why and when.
    assert.match(gone.stderr, new RegExp(`workspace ${id} was deleted at \\d{4}-`));
  });

  test("pyro workspace exec and service start: a shell line in one argument gets a hint to use sh -c, and its exit status unchanged", async () => {
    const created = await runCli(["workspace", "create", "debian:12", "--id-only"], { stateDir });
    assert.equal(created.code, 0, created.stderr);
    const id = created.stdout.trim();
    try {
      const human = await runCli(["workspace", "exec", id, "--", "make all > build.log"], { stateDir });
      assert.equal(human.code, 127, human.stderr);
      assert.match(human.stderr, /^hint: .* -- sh -c 'make all > build\.log'$/m);
      const asJson = await runCli(["workspace", "exec", id, "--json", "--", `echo "it's" here`], { stateDir });
      assert.equal(asJson.code, 127, asJson.stderr);
      const result = json<{ exit_code: number; hint?: string; sequence: number }>(asJson.stdout);
      assert.equal(result.exit_code, 127);
      assert.equal(result.sequence, 2);
      assert.match(result.hint ?? "", / -- sh -c 'echo "it'"'"'s" here'$/);
      // The advice, taken literally, runs the line.
      const advised = await runCli(["workspace", "exec", id, "--json", "--", "sh", "-c", `echo "it's" here`], { stateDir });
      assert.equal(advised.code, 0, advised.stderr);
      assert.equal(json<{ stdout: string }>(advised.stdout).stdout, "it's here\n");
      // Failures that are not a quoted shell line: no hint.
      for (const argv of [["false"], ["sh", "-c", "exit 126"], ["no-such-program"]]) {
        const r = await runCli(["workspace", "exec", id, "--json", "--", ...argv], { stateDir });
        assert.notEqual(r.code, 0);
        assert.ok(!("hint" in json<object>(r.stdout)), `${argv.join(" ")}: ${r.stdout}`);
        assert.doesNotMatch(r.stderr, /hint/);
      }
      // A service is given its command the same way; it fails before it is ready, and says why.
      const service = await runCli(["workspace", "service", "start", id, "web", "--ready-file", "/tmp/ready", "--json", "--", "cd /tmp && ./serve"], { stateDir });
      assert.equal(service.code, 84, service.stderr);
      const failure = json<{ error: { code: string; message: string; hint: string } }>(service.stdout).error;
      assert.equal(failure.code, "service_failed");
      assert.match(failure.message, /exited with code 127 before it was ready/);
      assert.match(failure.hint, / -- sh -c 'cd \/tmp && \.\/serve'$/);
      const own = await runCli(["workspace", "service", "start", id, "own", "--ready-file", "/tmp/ready", "--json", "--", "sh", "-c", "exit 127"], { stateDir });
      assert.equal(own.code, 84, own.stderr);
      assert.doesNotMatch(json<{ error: { hint: string } }>(own.stdout).error.hint, /sh -c/);
    } finally {
      assert.equal((await runCli(["workspace", "delete", id], { stateDir })).code, 0);
    }
  });

  test("seeded from a .tgz with the SDK; two concurrent execs both complete and are journaled", async () => {
    const tgz = archiveFile("seed.tgz", [{ path: "./data", type: "Directory" }, { path: "./data/n.txt", data: "42\n" }, { path: "./link", type: "SymbolicLink", linkpath: "data/n.txt" }], true);
    const ws = await pyro.createWorkspace({ environment: "debian:12", seedPath: tgz });
    assert.deepEqual(ws.workspaceSeed, { mode: "tar_archive", seedPath: tgz });
    assert.equal((await pyro.execWorkspace(ws.workspaceId, { command: "cat link" })).stdout, "42\n");
    const [a, b] = await Promise.all([
      pyro.execWorkspace(ws.workspaceId, { command: "sleep 1; echo a" }),
      pyro.execWorkspace(ws.workspaceId, { command: "sleep 1; echo b" }),
    ]);
    assert.equal(a.stdout, "a\n");
    assert.equal(b.stdout, "b\n");
    assert.deepEqual([a.sequence, b.sequence].sort(), [2, 3]);
    const logs = await pyro.logsWorkspace(ws.workspaceId);
    assert.deepEqual(logs.entries.map((e) => e.sequence), [1, 2, 3]);
    assert.deepEqual(logs.entries.slice(1).map((e) => e.stdout).sort(), ["a\n", "b\n"]);
    await pyro.deleteWorkspace(ws.workspaceId);
  });

  test("a workspace whose QEMU is killed: status says failed, exec errors clearly, delete cleans up", async () => {
    const ws = await pyro.createWorkspace({ environment: "debian:12" });
    const [pid] = qemuProcessesUnder(ws.workspaceId);
    assert.ok(pid);
    process.kill(pid, "SIGKILL");
    await sleep(200);
    const status = await runCli(["workspace", "status", ws.workspaceId, "--json"], { stateDir });
    assert.equal(json<{ state: string }>(status.stdout).state, "failed");
    const exec = await runCli(["workspace", "exec", ws.workspaceId, "--", "true"], { stateDir });
    assert.equal(exec.code, 67);
    assert.match(exec.stderr, /workspace [0-9a-f]{12} is failed \(its QEMU process exited unexpectedly\)/);
    assert.match(exec.stderr, /hint: delete it \(pyro workspace delete/);
    const deleted = await runCli(["workspace", "delete", ws.workspaceId], { stateDir });
    assert.equal(deleted.code, 0, deleted.stderr);
  });

  test("workspaces expire like VMs", async () => {
    const ws = await pyro.createWorkspace({ environment: "debian:12", ttlSeconds: 2 });
    assert.equal(new Date(ws.expiresAt).getTime() - new Date(ws.createdAt).getTime(), 2000);
    await sleep(2500);
    assert.deepEqual((await pyro.reapExpired()).reapedVmIds, [ws.workspaceId]);
    await rejectsWith(pyro.statusWorkspace(ws.workspaceId), "workspace_not_found");
  });

  test("VM and workspace ids do not mix", async () => {
    const ws = await pyro.createWorkspace({ environment: "debian:12" });
    await rejectsWith(pyro.execVm(ws.workspaceId, { command: "true" }), "vm_not_found");
    await rejectsWith(pyro.deleteVm(ws.workspaceId), "vm_not_found");
    assert.equal((await pyro.statusWorkspace(ws.workspaceId)).state, "started");
    await pyro.deleteWorkspace(ws.workspaceId);
  });

  test("host-compat workspaces follow the same rules in a host directory", async () => {
    const noQemu = new Pyro({ stateDir, env: { ...process.env, PYRO_QEMU_BINARY: "/nonexistent/qemu-system-x86_64" } });
    await rejectsWith(noQemu.createWorkspace({ environment: "debian:12" }), "guest_unavailable");
    const ws = await noQemu.createWorkspace({ environment: "debian:12", allowHostCompat: true, seedPath: seedDir("hc", { "a.txt": "A\n" }) });
    assert.equal(ws.executionMode, "host_compat");
    assert.equal((await noQemu.execWorkspace(ws.workspaceId, { command: "cat a.txt; echo B > b.txt" })).stdout, "A\n");
    await noQemu.pushWorkspaceSync(ws.workspaceId, seedDir("hc2", { "c.txt": "C\n" }), { dest: "sub" });
    assert.equal((await noQemu.execWorkspace(ws.workspaceId, { command: "cat b.txt sub/c.txt" })).stdout, "B\nC\n");
    const evil = archiveFile("hc-evil.tar", [{ path: "../escape", data: "x" }]);
    await rejectsWith(noQemu.pushWorkspaceSync(ws.workspaceId, evil), "source_refused", /escape/);
    assert.equal(existsSync(join(stateDir, "vms", ws.workspaceId, "escape")), false);
    await noQemu.deleteWorkspace(ws.workspaceId);
    assert.equal(execFileSync("ls", [join(stateDir, "vms")]).toString(), "");
  });
});

describe("hostile archives and destinations", () => {
  const hostile: [string, RawEntry[], RegExp][] = [
    ["../escape", [{ path: "ok.txt", data: "ok" }, { path: "../escape", data: "x" }], /\.\.\/escape: path leaves the destination/],
    ["/etc/passwd", [{ path: "/etc/passwd", data: "pwned::0:0::/:/bin/sh\n" }], /\/etc\/passwd: absolute paths are not allowed/],
    ["symlink to /", [{ path: "root", type: "SymbolicLink", linkpath: "/" }], /root: symlink target \/ leaves the destination/],
    [
      "a symlink then a file through it",
      [
        { path: "etc", type: "SymbolicLink", linkpath: "sub" },
        { path: "etc/passwd", data: "pwned" },
      ],
      /etc\/passwd: written through symlink etc/,
    ],
    ["hardlink to a host file", [{ path: "shadow", type: "Link", linkpath: "/etc/shadow" }], /shadow: hardlink target \/etc\/shadow is not a file of this archive/],
    ["device node", [{ path: "disk", type: "BlockDevice" }], /disk: device nodes are not allowed/],
  ];
  let ws: string;
  let guestBefore: string;
  const probe = "md5sum /etc/passwd /etc/shadow; ls -A /workspace; test -e /escape && echo ESCAPED; test -e /workspace/../escape && echo ESCAPED2; true";

  before(async () => {
    await ensureEnvironment();
    ws = (await pyro.createWorkspace({ environment: "debian:12", seedPath: seedDir("base", { "keep.txt": "keep\n" }) })).workspaceId;
    guestBefore = (await pyro.execWorkspace(ws, { command: probe })).stdout;
  });

  after(async () => {
    await pyro.deleteWorkspace(ws);
    assert.deepEqual(vmProcessesUnder(stateDir), []);
  });

  for (const [name, entries, message] of hostile) {
    test(name, async () => {
      const path = archiveFile(`${name.replace(/\W+/g, "_")}.tar`, entries);
      const vmsBefore = vmDirsUnder(stateDir).length;
      // As a seed: refused before any VM exists.
      await rejectsWith(pyro.createWorkspace({ environment: "debian:12", seedPath: path }), "source_refused", message);
      assert.equal(vmDirsUnder(stateDir).length, vmsBefore);
      // As a push into a running workspace: refused, nothing changes in the guest.
      await rejectsWith(pyro.pushWorkspaceSync(ws, path), "source_refused", message);
      assert.equal((await pyro.execWorkspace(ws, { command: probe })).stdout, guestBefore);
      assert.equal(existsSync(join(scratch, "escape")), false);
      assert.equal(existsSync(join(tmpdir(), "escape")), false);
    });
  }

  test("the guest agent refuses them on its own too", async () => {
    // Straight to the agent, past the host's checks.
    const { VmManager } = await import("../../src/runtime/vms.js");
    const runtime = new VmManager(pyro.paths);
    const record = await runtime.requireRunning(ws, "workspace");
    for (const [, entries, message] of hostile) {
      await rejectsWith(
        runtime.withSession(record, undefined, (session) =>
          session.putTar("/workspace", [makeTar(entries)], { maxBytes: 1 << 20, maxEntries: 100, deadline: Date.now() + 30_000 }),
        ),
        "source_refused",
        message,
      );
    }
    assert.equal((await pyro.execWorkspace(ws, { command: probe })).stdout, guestBefore);
  });

  test("destinations outside /workspace are refused", async () => {
    const src = seedDir("dest-src", { "f.txt": "f" });
    for (const dest of ["../x", "/etc", "/workspace/../etc"]) {
      const r = await runCli(["workspace", "sync", "push", ws, src, "--dest", dest], { stateDir });
      assert.equal(r.code, 64, r.stderr);
      assert.match(r.stderr, /--dest: .*(outside|leaves) \/workspace/);
    }
    assert.equal((await pyro.execWorkspace(ws, { command: probe })).stdout, guestBefore);
  });
});
