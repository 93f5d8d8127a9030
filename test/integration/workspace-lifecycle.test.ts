import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Pyro } from "../../src/index.js";
import { ensureEnvironment, rejectsWith, removeDir, runCli, tempStateDir } from "../helpers.js";

const stateDir = tempStateDir();
const scratch = mkdtempSync(join(tmpdir(), "pyro-life-"));
const pyro = new Pyro({ stateDir });

after(async () => {
  for (const ws of await pyro.listWorkspaces().catch(() => [])) await pyro.deleteWorkspace(ws.workspaceId).catch(() => undefined);
  await pyro.close();
  removeDir(stateDir);
  removeDir(scratch);
});

describe("workspace lifecycle: names, labels, activity, summary, and why a gone one is gone", () => {
  before(() => ensureEnvironment());

  test("a short time to live counts from the last activity: kept alive by use, gone when idle, and later calls say it expired and when", async () => {
    const ws = await pyro.createWorkspace({ environment: "debian:12", ttlSeconds: 6 });
    const created = Date.parse(ws.expiresAt);
    // Twice its time to live, in use all along.
    for (let i = 0; i < 6; i++) {
      await sleep(2000);
      await ws.exec("true");
    }
    const status = await ws.status();
    assert.equal(status.state, "started");
    assert.ok(Date.parse(status.expiresAt) > created + 10_000, `expires_at ${status.expiresAt} moved with the activity`);
    assert.ok(Date.parse(status.expiresAt) - Date.parse(status.lastActivityAt) === 6000);
    // Idle past it: refused with the time, then reaped, then still explained.
    await sleep(6500);
    await rejectsWith(ws.exec("true"), "vm_not_running", /expired at/);
    const reaped = await pyro.reapExpired();
    assert.ok(reaped.reapedVmIds.includes(ws.workspaceId));
    const gone = await rejectsWith(pyro.statusWorkspace(ws.workspaceId), "workspace_not_found", /expired at .* and was removed at/);
    assert.equal(gone.details?.reason, "expired");
    const cli = await runCli(["workspace", "exec", ws.workspaceId, "--json", "--", "true"], { stateDir });
    assert.equal(cli.code, 76);
    assert.match(cli.stdout, /expired at/);
  });

  test("update renames, relabels and sets a new time to live; list filters by label; a deleted one says so", async () => {
    const ws = await pyro.createWorkspace({ environment: "debian:12", name: "first", labels: { task: "a", keep: "yes" } });
    const other = await pyro.createWorkspace({ environment: "debian:12", labels: { task: "b" } });
    const updated = await ws.update({ name: "second", labels: { task: "c", owner: "me" }, clearLabels: ["keep"], ttlSeconds: 3600 });
    assert.equal(updated.name, "second");
    assert.deepEqual(updated.labels, { task: "c", owner: "me" });
    assert.equal(updated.ttlSeconds, 3600);
    assert.ok(Date.parse(updated.expiresAt) - Date.now() > 3500_000);
    assert.deepEqual((await pyro.listWorkspaces({ labels: { task: "c" } })).map((w) => w.workspaceId), [ws.workspaceId]);
    assert.deepEqual((await pyro.listWorkspaces({ labels: { task: "b" } })).map((w) => w.workspaceId), [other.workspaceId]);
    const cli = await runCli(["workspace", "list", "--label", "owner=me", "--json"], { stateDir });
    assert.deepEqual((JSON.parse(cli.stdout) as { workspaces: { workspace_id: string }[] }).workspaces.map((w) => w.workspace_id), [ws.workspaceId]);
    const cleared = await runCli(["workspace", "update", ws.workspaceId, "--clear-name", "--json"], { stateDir });
    assert.equal((JSON.parse(cleared.stdout) as { name: string | null }).name, null);
    await rejectsWith(ws.update({}), "invalid_argument", /nothing to change/);
    await rejectsWith(ws.update({ labels: { "bad key!": "x" } }), "invalid_argument");

    await other.delete();
    const gone = await rejectsWith(other.status(), "workspace_not_found", /was deleted at/);
    assert.equal(gone.details?.reason, "deleted");
    await ws.delete();
  });

  test("summary: commands with exit codes, file changes through pyro, and what differs from the seed", async () => {
    const seed = join(scratch, "seed");
    mkdirSync(seed);
    writeFileSync(join(seed, "keep.txt"), "keep\n");
    writeFileSync(join(seed, "gone.txt"), "gone\n");
    const ws = await pyro.createWorkspace({ environment: "debian:12", seedPath: seed });
    await ws.exec("echo hi > made.txt");
    await ws.exec("rm gone.txt; false");
    await ws.writeFile("notes.md", "n\n");
    await ws.applyPatch("--- a/keep.txt\n+++ b/keep.txt\n@@ -1 +1 @@\n-keep\n+kept\n");
    const summary = await ws.summary();
    assert.equal(summary.commandCount, 2);
    assert.equal(summary.failedCommands, 1);
    assert.deepEqual(
      summary.commands.map((c) => [c.command, c.exitCode]),
      [
        ["echo hi > made.txt", 0],
        ["rm gone.txt; false", 1],
      ],
    );
    assert.deepEqual(
      summary.events.map((e) => e.kind),
      ["file_write", "patch"],
    );
    assert.deepEqual(summary.changes, { added: ["/workspace/made.txt", "/workspace/notes.md"], modified: ["/workspace/keep.txt"], deleted: ["/workspace/gone.txt"] });
    assert.match(summary.text, /2 commands since .* \(1 failed\)/);
    assert.match(summary.text, /#2 exit 1: rm gone.txt; false/);
    assert.match(summary.text, /M \/workspace\/keep.txt/);
    const cli = await runCli(["workspace", "summary", ws.workspaceId], { stateDir });
    assert.equal(cli.code, 0, cli.stderr);
    assert.match(cli.stdout, /D \/workspace\/gone.txt/);
    await ws.delete();
  });
});
