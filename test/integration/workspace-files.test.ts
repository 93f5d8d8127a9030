import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Pyro, type Workspace } from "../../src/index.js";
import { ensureEnvironment, rejectsWith, removeDir, runCli, tempStateDir } from "../helpers.js";

const stateDir = tempStateDir();
const scratch = mkdtempSync(join(tmpdir(), "pyro-files-"));
const pyro = new Pyro({ stateDir });

const APP = ["def main():", "    print('hello')", "", "", "def helper():", "    return 1", "", "", "if __name__ == '__main__':", "    main()", ""].join("\n");

function json<T>(stdout: string): T {
  return JSON.parse(stdout) as T;
}

/**
 * One workspace for the whole file: these tests are about what the file
 * tools do inside one guest, not about isolation between guests.
 */
let ws: Workspace;

after(async () => {
  await ws?.delete().catch(() => undefined);
  await pyro.close();
  removeDir(stateDir);
  removeDir(scratch);
});

describe("workspace files without a shell, on a real guest", () => {
  before(async () => {
    await ensureEnvironment();
    const seed = join(scratch, "seed");
    mkdirSync(join(seed, "src"), { recursive: true });
    writeFileSync(join(seed, "README.md"), "# demo\n");
    writeFileSync(join(seed, "src", "app.py"), APP);
    writeFileSync(join(seed, "blob.bin"), Buffer.from([0, 1, 2, 3, 255]));
    execFileSync("ln", ["-s", "src/app.py", join(seed, "app-link")]);
    ws = await pyro.createWorkspace({ environment: "debian:12", seedPath: seed });
  });

  test("write makes parents and replaces atomically; read and list see it; binary is reported, not dumped", async () => {
    const created = await ws.writeFile("notes/todo.txt", "one\ntwo\n");
    assert.deepEqual(created, { workspaceId: ws.workspaceId, path: "/workspace/notes/todo.txt", bytes: 8, created: true });
    const replaced = await ws.writeFile("/workspace/notes/todo.txt", "three\n");
    assert.equal(replaced.created, false);
    const read = await ws.readFile("notes/todo.txt");
    assert.equal(read.text, "three\n");
    assert.equal(read.binary, false);
    const viaShell = await ws.exec("cat notes/todo.txt; stat -c %a notes/todo.txt; ls -a notes");
    assert.equal(viaShell.stdout, "three\n644\n.\n..\ntodo.txt\n");

    const blob = await ws.readFile("blob.bin");
    assert.deepEqual([blob.binary, blob.text, blob.size], [true, null, 5]);
    const head = await ws.readFile("src/app.py", { maxBytes: 10 });
    assert.deepEqual([head.text, head.truncated, head.size], ["def main()", true, APP.length]);
    // A symlink inside the workspace is followed.
    assert.equal((await ws.readFile("app-link")).text, APP);

    const top = await ws.listFiles();
    const names = top.entries.map((e) => `${e.path}:${e.type}`);
    assert.deepEqual(names, ["/workspace/README.md:file", "/workspace/app-link:symlink", "/workspace/blob.bin:file", "/workspace/notes:dir", "/workspace/src:dir"]);
    assert.equal(top.entries.find((e) => e.type === "symlink")?.target, "src/app.py");
    const deep = await ws.listFiles({ path: "notes", recursive: true });
    assert.deepEqual(
      deep.entries.map((e) => [e.path, e.size, e.mode]),
      [["/workspace/notes/todo.txt", 6, "0644"]],
    );
    await rejectsWith(ws.readFile("nope.txt"), "file_not_found", /\/workspace\/nope.txt/);
    await rejectsWith(ws.readFile("notes"), "invalid_argument", /directory/);
  });

  test("nothing outside /workspace can be read, listed or written, through '..' or a symlink the guest made", async () => {
    await ws.exec("ln -sfn /etc /workspace/etc-link && ln -sfn ../../root /workspace/src/up && mkfifo /workspace/fifo");
    for (const path of ["etc-link/passwd", "src/up/.bashrc", "../etc/passwd", "/etc/passwd"]) {
      await rejectsWith(ws.readFile(path), "invalid_argument", /outside \/workspace|leaves|outside/);
      await rejectsWith(ws.writeFile(path, "pwned"), "invalid_argument");
    }
    await rejectsWith(ws.listFiles({ path: "etc-link" }), "invalid_argument", /outside/);
    await rejectsWith(ws.writeFile("etc-link", "x"), "invalid_argument", /symbolic link/);
    // A FIFO cannot hang a read.
    await rejectsWith(ws.readFile("fifo"), "invalid_argument", /not a regular file/);
    const untouched = await ws.exec("cat /etc/passwd | head -1; test -e /etc/pwned || echo clean; test -L /workspace/etc-link && echo link-kept");
    assert.match(untouched.stdout, /^root:/);
    assert.match(untouched.stdout, /clean\nlink-kept\n$/);
    await ws.exec("rm -f /workspace/etc-link /workspace/src/up /workspace/fifo");
  });

  test("a patch applies whole, or changes nothing and names the hunk that does not fit", async () => {
    const good = [
      "--- a/src/app.py",
      "+++ b/src/app.py",
      "@@ -1,3 +1,3 @@",
      " def main():",
      "-    print('hello')",
      "+    print('hello, patched')",
      " ",
      "@@ -5,2 +5,2 @@",
      " def helper():",
      "-    return 1",
      "+    return 2",
      "--- /dev/null",
      "+++ b/src/new.py",
      "@@ -0,0 +1,1 @@",
      "+NEW = True",
      "",
    ].join("\n");
    const applied = await ws.applyPatch(good);
    assert.deepEqual(applied.files, [
      { path: "/workspace/src/app.py", status: "modified", hunks: 2 },
      { path: "/workspace/src/new.py", status: "added", hunks: 1 },
    ]);
    const after = await ws.exec("python3 -c 'import sys' 2>/dev/null; grep -c patched src/app.py; grep 'return' src/app.py; cat src/new.py");
    assert.equal(after.stdout, "1\n    return 2\nNEW = True\n");

    const before = (await ws.readFile("src/app.py")).text;
    const bad = [
      "--- a/README.md",
      "+++ b/README.md",
      "@@ -1 +1 @@",
      "-# demo",
      "+# changed",
      "--- a/src/app.py",
      "+++ b/src/app.py",
      "@@ -1,2 +1,2 @@",
      " def main():",
      "-    print('hello, patched')",
      "+    print('again')",
      "@@ -5,2 +5,2 @@",
      " def helper():",
      "-    return 999",
      "+    return 3",
      "",
    ].join("\n");
    const error = await rejectsWith(ws.applyPatch(bad), "patch_failed", /hunk 2 of 2 for \/workspace\/src\/app.py.*nothing was changed/);
    assert.equal(error.details?.hunk, 2);
    assert.equal((await ws.readFile("README.md")).text, "# demo\n");
    assert.equal((await ws.readFile("src/app.py")).text, before);
    await rejectsWith(ws.applyPatch("--- a/missing.txt\n+++ b/missing.txt\n@@ -1 +1 @@\n-a\n+b\n"), "patch_failed", /does not exist/);
    await rejectsWith(ws.applyPatch("--- a/../../etc/passwd\n+++ b/../../etc/passwd\n@@ -1 +1 @@\n-a\n+b\n"), "invalid_argument", /only files under \/workspace/);
  });

  test("diff against the baseline: added, modified, deleted, binary noted, bounded", async () => {
    await ws.exec("rm README.md && printf '\\x00\\x09' >> blob.bin");
    const diff = await ws.diff();
    const byPath = Object.fromEntries(diff.files.map((f) => [f.path, `${f.status}${f.binary ? " binary" : ""}`]));
    assert.deepEqual(byPath, {
      "/workspace/README.md": "deleted",
      "/workspace/blob.bin": "modified binary",
      "/workspace/notes/todo.txt": "added",
      "/workspace/src/app.py": "modified",
      "/workspace/src/new.py": "added",
    });
    assert.deepEqual([diff.added, diff.modified, diff.deleted, diff.truncated], [2, 2, 1, false]);
    assert.match(diff.diff, /^diff --git a\/src\/app.py b\/src\/app.py\n--- a\/src\/app.py\n\+\+\+ b\/src\/app.py\n@@ -1,9 \+1,9 @@\n def main\(\):\n- {4}print\('hello'\)\n\+ {4}print\('hello, patched'\)/m);
    assert.match(diff.diff, /^deleted file mode 100644\n--- a\/README.md\n\+\+\+ \/dev\/null\n@@ -1 \+0,0 @@\n-# demo$/m);
    assert.match(diff.diff, /^Binary files a\/blob.bin and b\/blob.bin differ$/m);
    const small = await ws.diff({ maxBytes: 200 });
    assert.equal(small.truncated, true);
    assert.equal(small.files.length, 5);
    assert.match(small.diff, /diff cut at 200 bytes; \d of 5 changed files not shown/);
  });

  test("export to a directory, a .tgz and a single file; the output must not exist", async () => {
    const dir = join(scratch, "out-dir");
    const exported = await ws.export(dir, { path: "src" });
    assert.deepEqual([exported.format, exported.files, exported.path], ["directory", 2, "/workspace/src"]);
    assert.equal(readFileSync(join(dir, "new.py"), "utf8"), "NEW = True\n");
    assert.deepEqual(readdirSync(dir).sort(), ["app.py", "new.py"]);

    const tgz = join(scratch, "all.tgz");
    const archived = await ws.export(tgz);
    assert.equal(archived.format, "tgz");
    const listing = execFileSync("tar", ["-tzf", tgz], { encoding: "utf8" }).split("\n").filter(Boolean).sort();
    assert.ok(listing.includes("src/app.py") && listing.includes("app-link") && listing.includes("notes/todo.txt"), listing.join(" "));

    const one = join(scratch, "todo-copy.txt");
    const single = await ws.export(one, { path: "notes/todo.txt" });
    assert.equal(single.format, "file");
    assert.equal(readFileSync(one, "utf8"), "three\n");
    await rejectsWith(ws.export(one, { path: "notes/todo.txt" }), "invalid_argument", /already exists/);
    // No staging left beside the outputs.
    assert.deepEqual(readdirSync(scratch).filter((n) => n.startsWith(".pyro-export")), []);
  });

  test("a hostile guest's export writes nothing outside output_path: links out, devices, a huge file", async () => {
    await ws.exec("mkdir -p evil && cd evil && ln -s / root-link && ln -s ../../../etc/passwd up-link && mknod null-dev c 1 3 && echo ok > plain.txt");
    const dir = join(scratch, "evil-out");
    // Links that lead out of the export are refused, whatever they point to.
    await rejectsWith(ws.export(dir, { path: "evil" }), "source_refused", /root-link|up-link/);
    assert.equal(existsSync(dir), false);
    assert.deepEqual(readdirSync(scratch).filter((n) => n.startsWith(".pyro-export")), []);
    await ws.exec("rm evil/root-link evil/up-link");
    const ok = await ws.export(dir, { path: "evil" });
    assert.deepEqual([ok.files, ok.skipped], [1, 1]);
    assert.deepEqual(readdirSync(dir), ["plain.txt"]);
    assert.equal(lstatSync(join(dir, "plain.txt")).isFile(), true);

    await ws.exec("mkdir -p huge && truncate -s 600M huge/file");
    const huge = join(scratch, "huge-out");
    await rejectsWith(ws.export(huge, { path: "huge" }), "source_too_large");
    assert.equal(existsSync(huge), false);
    await ws.exec("rm -rf huge evil");
  });

  test("the CLI: file write from stdin, read, list, patch apply from a file, diff --name-status, export", async () => {
    const id = ws.workspaceId;
    const write = await runCli(["workspace", "file", "write", id, "cli/hello.txt", "--text", "from the cli\n", "--json"], { stateDir });
    assert.equal(write.code, 0, write.stderr);
    assert.equal(json<{ created: boolean }>(write.stdout).created, true);
    const read = await runCli(["workspace", "file", "read", id, "cli/hello.txt"], { stateDir });
    assert.equal(read.stdout, "from the cli\n");
    const list = await runCli(["workspace", "file", "list", id, "cli"], { stateDir });
    assert.match(list.stdout, /0644\s+file\s+13\s+\S+\s+\/workspace\/cli\/hello.txt/);
    const patchFile = join(scratch, "cli.patch");
    writeFileSync(patchFile, "--- a/cli/hello.txt\n+++ b/cli/hello.txt\n@@ -1 +1 @@\n-from the cli\n+patched by the cli\n");
    const patched = await runCli(["workspace", "patch", "apply", id, "--patch-file", patchFile], { stateDir });
    assert.equal(patched.code, 0, patched.stderr);
    assert.match(patched.stdout, /modified\s+\/workspace\/cli\/hello.txt \(1 hunk\)/);
    const again = await runCli(["workspace", "patch", "apply", id, "--patch-file", patchFile, "--json"], { stateDir });
    assert.equal(again.code, 80);
    assert.equal(json<{ error: { code: string } }>(again.stdout).error.code, "patch_failed");
    const names = await runCli(["workspace", "diff", id, "--name-status"], { stateDir });
    assert.match(names.stdout, /^A\t\/workspace\/cli\/hello.txt$/m);
    const out = join(scratch, "cli-out.tar");
    const exported = await runCli(["workspace", "export", id, out, "--path", "cli"], { stateDir });
    assert.equal(exported.code, 0, exported.stderr);
    assert.deepEqual(execFileSync("tar", ["-tf", out], { encoding: "utf8" }).trim().split("\n"), ["hello.txt"]);
    const missing = await runCli(["workspace", "file", "read", id, "no/such"], { stateDir });
    assert.equal(missing.code, 79);
  });

  test("an acknowledged write is on the guest's disk: it survives QEMU being killed", async () => {
    await ws.writeFile("durable/a.txt", "kept\n");
    await ws.exec("echo exec-kept > durable/b.txt");
    const disk = join(stateDir, "vms", ws.workspaceId, "qemu", "disk.qcow2");
    const record = JSON.parse(readFileSync(join(stateDir, "vms", ws.workspaceId, "vm.json"), "utf8")) as { qemu: { pid: number } };
    process.kill(record.qemu.pid, "SIGKILL");
    await new Promise((r) => setTimeout(r, 300));
    // What a restart would boot from: the disk as QEMU left it, read by QEMU's own tools.
    const copy = join(scratch, "after-kill.raw");
    execFileSync("qemu-img", ["convert", "-U", "-O", "raw", disk, copy]);
    // Replay the filesystem's journal, as the guest kernel would on the next boot.
    execFileSync("sh", ["-c", `e2fsck -fy ${copy} >/dev/null 2>&1; true`]);
    const text = execFileSync("sh", ["-c", `debugfs -R 'cat /workspace/durable/a.txt' ${copy} 2>/dev/null; debugfs -R 'cat /workspace/durable/b.txt' ${copy} 2>/dev/null`], { encoding: "utf8" });
    assert.equal(text, "kept\nexec-kept\n");
  });
});
