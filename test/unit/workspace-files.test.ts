import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { PyroError } from "../../src/errors.js";
import { extractChecked, isText, parseUnifiedDiff, workspaceRelative } from "../../src/runtime/workspace-files.js";
import { removeDir } from "../helpers.js";
import { makeTar, type RawEntry } from "../tar.js";

const scratch = mkdtempSync(join(tmpdir(), "pyro-export-"));
after(() => removeDir(scratch));

let n = 0;
async function extract(entries: RawEntry[], limits = { maxBytes: 1 << 20, maxEntries: 100 }) {
  n++;
  const archive = join(scratch, `a${n}.tar`);
  writeFileSync(archive, makeTar(entries));
  const out = mkdtempSync(join(scratch, `out${n}-`));
  const outside = join(scratch, `outside${n}`);
  try {
    return { out, outside, counts: await extractChecked(archive, out, limits) };
  } catch (error) {
    return { out, outside, error: error as PyroError };
  }
}

describe("what a guest exports is checked before anything lands on the host", () => {
  test("a good tree is written with its modes (setuid stripped), links and times", async () => {
    const { out, counts, error } = await extract([
      { path: "dir/", type: "Directory" },
      { path: "dir/a.txt", data: "a" },
      { path: "run.sh", data: "#!/bin/sh\n", mode: 0o4755 },
      { path: "dir/up", type: "SymbolicLink", linkpath: "../run.sh" },
    ]);
    assert.equal(error, undefined);
    assert.deepEqual(counts, { files: 2, dirs: 1, symlinks: 1, bytes: 11 });
    assert.equal(readFileSync(join(out, "dir", "a.txt"), "utf8"), "a");
    assert.equal(readlinkSync(join(out, "dir", "up")), "../run.sh");
  });

  const hostile: [string, RawEntry[]][] = [
    ["a '..' name", [{ path: "../escape", data: "x" }]],
    ["an absolute name", [{ path: "/etc/evil", data: "x" }]],
    ["a symlink out, then a file through it", [{ path: "l", type: "SymbolicLink", linkpath: ".." }, { path: "l/x", data: "x" }]],
    ["a symlink to an absolute path", [{ path: "l", type: "SymbolicLink", linkpath: "/etc/passwd" }]],
    ["a symlink leading up and out", [{ path: "d/", type: "Directory" }, { path: "d/l", type: "SymbolicLink", linkpath: "../../x" }]],
    ["a file through an inside symlink", [{ path: "d/", type: "Directory" }, { path: "l", type: "SymbolicLink", linkpath: "d" }, { path: "l/x", data: "x" }]],
    ["a device", [{ path: "null", type: "CharacterDevice" }]],
    ["a FIFO", [{ path: "p", type: "FIFO" }]],
    ["a hardlink", [{ path: "a", data: "x" }, { path: "b", type: "Link", linkpath: "a" }]],
    ["a path twice", [{ path: "a", data: "x" }, { path: "a", data: "y" }]],
  ];
  for (const [what, entries] of hostile) {
    test(`${what} is refused and nothing outside is written`, async () => {
      const { error, out, outside } = await extract(entries);
      assert.ok(error instanceof PyroError, `no error for ${what}`);
      assert.equal(error.code, "source_refused", error.message);
      assert.equal(existsSync(outside), false);
      assert.equal(existsSync(join(scratch, "escape")), false);
      assert.ok(readdirSync(out).every((name) => !name.startsWith("x")));
    });
  }

  test("past the caps it stops", async () => {
    const big = await extract([{ path: "big", data: Buffer.alloc(2048) }], { maxBytes: 1024, maxEntries: 10 });
    assert.equal(big.error?.code, "source_too_large");
    const many = await extract(
      Array.from({ length: 5 }, (_, i) => ({ path: `f${i}`, data: "x" })),
      { maxBytes: 1024, maxEntries: 3 },
    );
    assert.equal(many.error?.code, "source_too_large");
  });
});

describe("paths, patches and text", () => {
  test("workspace paths are relative to /workspace and stay in it", () => {
    assert.equal(workspaceRelative(undefined), ".");
    assert.equal(workspaceRelative("/workspace"), ".");
    assert.equal(workspaceRelative("/workspace/src/a.py"), "src/a.py");
    assert.equal(workspaceRelative("./src//a.py"), "src/a.py");
    for (const bad of ["/etc/passwd", "../x", "src/../../x", "/workspace/../etc", "a\0b"]) assert.throws(() => workspaceRelative(bad), /path/);
  });

  test("patch headers name files under /workspace only", () => {
    const ok = parseUnifiedDiff("--- a/src/x.py\n+++ b/src/x.py\n@@ -1 +1 @@\n-a\n+b\n");
    assert.deepEqual([ok[0]?.oldPath, ok[0]?.newPath], ["src/x.py", "src/x.py"]);
    const created = parseUnifiedDiff("--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1 @@\n+hi\n");
    assert.deepEqual([created[0]?.oldPath, created[0]?.newPath], [undefined, "new.txt"]);
    const absolute = parseUnifiedDiff("--- /workspace/a\n+++ /workspace/a\n@@ -1 +1 @@\n-a\n+b\n");
    assert.equal(absolute[0]?.newPath, "a");
    assert.throws(() => parseUnifiedDiff("--- a/../../etc/passwd\n+++ b/../../etc/passwd\n@@ -1 +1 @@\n-a\n+b\n"), /only files under \/workspace/);
    assert.throws(() => parseUnifiedDiff("--- /etc/passwd\n+++ /etc/passwd\n@@ -1 +1 @@\n-a\n+b\n"), /only files under \/workspace/);
    assert.throws(() => parseUnifiedDiff("just some text\n"), /no file changes/);
  });

  test("text is UTF-8 without NUL; a character cut by a partial read still counts as text", () => {
    assert.equal(isText(Buffer.from("héllo")), true);
    assert.equal(isText(Buffer.from([0x68, 0x00, 0x69])), false);
    assert.equal(isText(Buffer.from([0xff, 0xfe, 0x41])), false);
    const cut = Buffer.from("ab€").subarray(0, 4);
    assert.equal(isText(cut), false);
    assert.equal(isText(cut, true), true);
  });
});
