import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Pyro, type Workspace } from "../../src/index.js";
import { ensureEnvironment, qemuProcessesUnder, vmProcessesUnder, rejectsWith, removeDir, runCli, tempStateDir } from "../helpers.js";

const stateDir = tempStateDir();
const scratch = mkdtempSync(join(tmpdir(), "pyro-state-"));
const pyro = new Pyro({ stateDir });

after(async () => {
  for (const ws of await pyro.listWorkspaces().catch(() => [])) await pyro.deleteWorkspace(ws.workspaceId).catch(() => undefined);
  await pyro.close();
  removeDir(stateDir);
  removeDir(scratch);
});

/** Everything under /workspace: path, type, size and content digest, to compare trees exactly. */
async function tree(ws: Workspace): Promise<string> {
  const r = await ws.exec("cd /workspace && find . -mindepth 1 -printf '%p %y %s\\n' | sort && find . -type f -print0 | sort -z | xargs -0 -r sha256sum");
  assert.equal(r.exitCode, 0, r.stderr);
  return r.stdout;
}

/** A loop in the guest that counts in /workspace/counter, detached from any command. */
const COUNTER = "nohup sh -c 'i=0; while true; do i=$((i+1)); echo $i > /workspace/counter; sleep 0.2; done' >/dev/null 2>&1 & echo $!";

async function counter(ws: Workspace): Promise<number> {
  return Number((await ws.exec("cat /workspace/counter")).stdout.trim());
}

function recordOf(id: string): { qemu: { pid: number } | null } {
  return JSON.parse(readFileSync(join(stateDir, "vms", id, "vm.json"), "utf8")) as { qemu: { pid: number } | null };
}

describe("workspaces rewind, pause and fork, on real guests", () => {
  before(() => ensureEnvironment());

  test("snapshot, change, reset to the snapshot and to the baseline: /workspace matches each exactly", async () => {
    const seed = join(scratch, "seed");
    mkdirSync(join(seed, "src"), { recursive: true });
    writeFileSync(join(seed, "a.txt"), "one\n");
    writeFileSync(join(seed, "src", "x.c"), "int x;\n");
    const ws = await pyro.createWorkspace({ environment: "debian:12", seedPath: seed });
    const atBaseline = await tree(ws);
    await ws.writeFile("b.txt", "two\n");
    await ws.exec("mkdir -p deep/er && echo three > deep/er/c.txt");
    const atSnapshot = await tree(ws);
    const made = await pyro.createSnapshot(ws.workspaceId, "before-risk");
    assert.equal(made.snapshot.name, "before-risk");
    assert.deepEqual(
      (await pyro.listSnapshots(ws.workspaceId)).snapshots.map((s) => s.name),
      ["baseline", "before-risk"],
    );

    await ws.exec("echo changed > a.txt && rm -r deep src && echo new > d.txt");
    assert.notEqual(await tree(ws), atSnapshot);
    const reset = await pyro.resetWorkspace(ws.workspaceId, { snapshot: "before-risk" });
    assert.deepEqual([reset.state, reset.bootMode], ["started", "cold"]);
    assert.equal(await tree(ws), atSnapshot);

    await pyro.resetWorkspace(ws.workspaceId);
    assert.equal(await tree(ws), atBaseline);
    // The diff is against the baseline, and the summary starts over at a reset.
    assert.deepEqual((await ws.diff()).files, []);
    assert.equal((await ws.summary()).commandCount, 1, "only the listing above");

    await rejectsWith(pyro.createSnapshot(ws.workspaceId, "before-risk"), "invalid_argument", /already has/);
    await rejectsWith(pyro.createSnapshot(ws.workspaceId, "baseline"), "invalid_argument");
    await rejectsWith(pyro.createSnapshot(ws.workspaceId, "../x"), "invalid_argument");
    await rejectsWith(pyro.deleteSnapshot(ws.workspaceId, "baseline"), "invalid_argument", /cannot be deleted/);
    await pyro.deleteSnapshot(ws.workspaceId, "before-risk");
    await rejectsWith(pyro.resetWorkspace(ws.workspaceId, { snapshot: "before-risk" }), "snapshot_not_found", /has: baseline/);

    const cli = await runCli(["workspace", "snapshot", "list", ws.workspaceId], { stateDir });
    assert.match(cli.stdout, /^baseline\s+\S+$/m);
    await ws.delete();
  });

  test("stop saves memory and frees QEMU; start resumes: the same process keeps counting, the same machine", async () => {
    const ws = await pyro.createWorkspace({ environment: "debian:12" });
    const pid = (await ws.exec(COUNTER)).stdout.trim();
    await sleep(1000);
    const identity = (await ws.exec("hostname; cat /etc/machine-id")).stdout;
    const stopped = await pyro.stopWorkspace(ws.workspaceId);
    assert.equal(stopped.state, "stopped");
    assert.deepEqual(qemuProcessesUnder(ws.workspaceId), []);
    assert.equal(recordOf(ws.workspaceId).qemu, null);
    await rejectsWith(ws.exec("true"), "vm_not_running", /stopped/);
    await sleep(1500);

    const started = await pyro.startWorkspace(ws.workspaceId);
    assert.deepEqual([started.state, started.bootMode], ["started", "resume"]);
    const first = await counter(ws);
    assert.ok(first > 3, `the counter went on from where it was, not from 0: ${first}`);
    assert.equal((await ws.exec(`kill -0 ${pid} && echo alive`)).stdout, "alive\n");
    assert.equal((await ws.exec("hostname; cat /etc/machine-id")).stdout, identity);
    await sleep(1000);
    assert.ok((await counter(ws)) > first, "and keeps counting");
    // The saved memory was used up: a later start after a crash boots cold.
    assert.equal(existsSync(join(stateDir, "vms", ws.workspaceId, "memory.state")), false);
    const cli = await runCli(["workspace", "stop", ws.workspaceId, "--json"], { stateDir });
    assert.equal(cli.code, 0, cli.stderr);
    const again = await runCli(["workspace", "start", ws.workspaceId, "--json"], { stateDir });
    assert.equal((JSON.parse(again.stdout) as { boot_mode: string }).boot_mode, "resume");
    await ws.delete();
  });

  test("a workspace whose QEMU was killed starts cold from its disk, with every acknowledged change", async () => {
    const ws = await pyro.createWorkspace({ environment: "debian:12" });
    await ws.exec("echo from-exec > exec.txt");
    await ws.writeFile("written.txt", "from-write\n");
    await ws.applyPatch("--- /dev/null\n+++ b/patched.txt\n@@ -0,0 +1 @@\n+from-patch\n");
    process.kill(recordOf(ws.workspaceId).qemu?.pid ?? 0, "SIGKILL");
    await sleep(300);
    assert.equal((await ws.status()).state, "failed");
    const started = await pyro.startWorkspace(ws.workspaceId);
    assert.deepEqual([started.state, started.bootMode], ["started", "cold"]);
    assert.equal((await ws.exec("cat exec.txt written.txt patched.txt")).stdout, "from-exec\nfrom-write\nfrom-patch\n");
    await ws.delete();
  });

  test("fork into 3: each sees the file and the running process, writes stay apart, each is its own machine", async () => {
    const parent = await pyro.createWorkspace({ environment: "debian:12", name: "parent" });
    await parent.writeFile("shared.txt", "before the fork\n");
    const pid = (await parent.exec(COUNTER)).stdout.trim();
    await sleep(600);
    const forked = await pyro.forkWorkspace(parent.workspaceId, { count: 3, names: ["a", "b"] });
    assert.equal(forked.workspaces.length, 3);
    assert.deepEqual(
      forked.workspaces.map((w) => [w.name, w.state, w.bootMode]),
      [
        ["a", "started", "restore"],
        ["b", "started", "restore"],
        [null, "started", "restore"],
      ],
    );
    const children = await Promise.all(forked.workspaces.map((w) => pyro.getWorkspace(w.workspaceId)));
    const identities = new Set<string>();
    for (const [i, child] of children.entries()) {
      assert.equal((await child.readFile("shared.txt")).text, "before the fork\n");
      assert.equal((await child.exec(`kill -0 ${pid} && echo alive`)).stdout, "alive\n", `fork ${i} has the process`);
      const c1 = await counter(child);
      await sleep(500);
      assert.ok((await counter(child)) > c1, `fork ${i} keeps counting`);
      await child.writeFile("mine.txt", `fork ${i}\n`);
      identities.add((await child.exec("hostname; cat /etc/machine-id; head -c 16 /dev/urandom | od -An -tx1")).stdout);
    }
    identities.add((await parent.exec("hostname; cat /etc/machine-id; head -c 16 /dev/urandom | od -An -tx1")).stdout);
    assert.equal(identities.size, 4, "hostname, machine id and random bytes differ");
    const hostnames = new Set([...identities].map((s) => s.split("\n")[0]));
    assert.equal(hostnames.size, 4);
    for (const [i, child] of children.entries()) assert.equal((await child.readFile("mine.txt")).text, `fork ${i}\n`);
    await rejectsWith(parent.readFile("mine.txt"), "file_not_found");
    assert.equal((await parent.exec(`kill -0 ${pid} && echo alive`)).stdout, "alive\n");
    assert.deepEqual(
      (await parent.summary()).events.map((e) => e.kind),
      ["file_write", "fork"],
    );
    for (const child of children) await child.delete();
    await parent.delete();
    assert.deepEqual(vmProcessesUnder(stateDir), []);
  });

  test("the CLI: snapshot create and delete, reset, fork", async () => {
    const ws = await pyro.createWorkspace({ environment: "debian:12" });
    const id = ws.workspaceId;
    await ws.writeFile("f.txt", "kept\n");
    const made = await runCli(["workspace", "snapshot", "create", id, "cli-snap"], { stateDir });
    assert.equal(made.code, 0, made.stderr);
    assert.match(made.stdout, /^snapshot cli-snap of [0-9a-f]{12} at /);
    await ws.writeFile("f.txt", "lost\n");
    const reset = await runCli(["workspace", "reset", id, "--snapshot", "cli-snap", "--json"], { stateDir });
    assert.equal(reset.code, 0, reset.stderr);
    assert.equal((JSON.parse(reset.stdout) as { boot_mode: string }).boot_mode, "cold");
    assert.equal((await ws.readFile("f.txt")).text, "kept\n");
    const missing = await runCli(["workspace", "reset", id, "--snapshot", "nope"], { stateDir });
    assert.equal(missing.code, 81);
    assert.match(missing.stderr, /no snapshot named nope/);
    const deleted = await runCli(["workspace", "snapshot", "delete", id, "cli-snap", "--json"], { stateDir });
    assert.deepEqual(JSON.parse(deleted.stdout), { workspace_id: id, snapshot_name: "cli-snap", deleted: true });
    const forked = await runCli(["workspace", "fork", id, "--name", "copy", "--json"], { stateDir });
    assert.equal(forked.code, 0, forked.stderr);
    const child = (JSON.parse(forked.stdout) as { workspaces: { workspace_id: string; name: string }[] }).workspaces[0];
    assert.equal(child?.name, "copy");
    assert.equal((await pyro.readWorkspaceFile(child?.workspace_id ?? "", "f.txt")).text, "kept\n");
    await pyro.deleteWorkspace(child?.workspace_id ?? "");
    await ws.delete();
  });

  test("refusals change nothing: forking a stopped workspace, or too many at once", async () => {
    const ws = await pyro.createWorkspace({ environment: "debian:12" });
    await pyro.stopWorkspace(ws.workspaceId);
    const before = (await pyro.listWorkspaces()).length;
    await rejectsWith(pyro.forkWorkspace(ws.workspaceId), "vm_not_running");
    await rejectsWith(pyro.forkWorkspace(ws.workspaceId, { count: 9 }), "invalid_argument");
    assert.equal((await pyro.listWorkspaces()).length, before);
    await ws.delete();
  });
});
