import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { checkSource, forEachTarEntry, resolveWorkspaceDest, tarStreamOf, TreeChecker } from "../../src/sources/tree.js";
import { extractInto } from "../../src/backends/hostCompat/extract.js";
import { PyroError } from "../../src/errors.js";
import { makeTar, type RawEntry } from "../tar.js";

const scratch = mkdtempSync(join(tmpdir(), "pyro-tree-"));
after(() => rmSync(scratch, { recursive: true, force: true }));
let counter = 0;

function archive(entries: RawEntry[], gzip = false): string {
  const path = join(scratch, `a${counter++}${gzip ? ".tgz" : ".tar"}`);
  writeFileSync(path, makeTar(entries, { gzip }));
  return path;
}

async function refusedWith(path: string, code: string, message: RegExp): Promise<void> {
  await assert.rejects(checkSource(path), (error: unknown) => {
    assert.ok(error instanceof PyroError, String(error));
    assert.equal(error.code, code);
    assert.match(error.message, message);
    return true;
  });
}

/** Every file and link under a directory, for "nothing changed" checks. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string) => {
    for (const name of readdirSync(join(dir, rel)).sort()) {
      const path = rel ? `${rel}/${name}` : name;
      const info = lstatSync(join(dir, path));
      if (info.isSymbolicLink()) out[path] = `-> ${readlinkSync(join(dir, path))}`;
      else if (info.isDirectory()) {
        out[path] = "dir";
        walk(path);
      } else out[path] = readFileSync(join(dir, path), "utf8");
    }
  };
  walk("");
  return out;
}

describe("hostile archives are refused before anything is written", () => {
  const cases: [string, RawEntry[], RegExp][] = [
    ["../escape", [{ path: "../escape", data: "x" }], /^\.\.\/escape: path leaves the destination/],
    ["absolute /etc/passwd", [{ path: "/etc/passwd", data: "root::0:0" }], /^\/etc\/passwd: absolute paths are not allowed/],
    ["symlink to /", [{ path: "root", type: "SymbolicLink", linkpath: "/" }], /^root: symlink target \/ leaves the destination/],
    ["symlink climbing out", [{ path: "a/b", type: "SymbolicLink", linkpath: "../../x" }], /^a\/b: symlink target \.\.\/\.\.\/x leaves/],
    [
      "a symlink then a file written through it",
      [
        { path: "sub", type: "Directory" },
        { path: "link", type: "SymbolicLink", linkpath: "sub" },
        { path: "link/evil", data: "x" },
      ],
      /^link\/evil: written through symlink link/,
    ],
    ["hardlink to a host file", [{ path: "hard", type: "Link", linkpath: "/etc/passwd" }], /^hard: hardlink target \/etc\/passwd is not a file of this archive/],
    ["hardlink climbing out", [{ path: "hard", type: "Link", linkpath: "../../etc/shadow" }], /^hard: hardlink target/],
    ["device node", [{ path: "dev/null", type: "CharacterDevice" }], /^dev\/null: device nodes are not allowed/],
    ["FIFO", [{ path: "pipe", type: "FIFO" }], /^pipe: FIFOs are not allowed/],
  ];
  for (const [name, entries, message] of cases) {
    test(name, async () => {
      await refusedWith(archive(entries), "source_refused", message);
      await refusedWith(archive(entries, true), "source_refused", message);
    });
  }

  test("host-compat extraction of a refused archive leaves the target exactly as it was", async () => {
    const root = join(scratch, "ws-refused");
    mkdirSync(join(root, "keep"), { recursive: true });
    writeFileSync(join(root, "keep", "file"), "original");
    const before = snapshot(root);
    const bad = archive([{ path: "new-file", data: "new" }, { path: "ok-dir", type: "Directory" }, { path: "../escape", data: "x" }]);
    // Checked directly against extraction (as if the file changed after checkSource).
    const { dev, ino } = statSync(bad);
    await assert.rejects(extractInto(root, root, { path: bad, mode: "tar_archive", gzip: false, entries: 3, bytes: 4, tree: [], identity: { dev, ino } }), /escape/);
    assert.deepEqual(snapshot(root), before);
    assert.equal(existsSync(join(scratch, "escape")), false);
  });
});

describe("good trees", () => {
  test("caps on entries and bytes", async () => {
    const many = archive(Array.from({ length: 5 }, (_, i) => ({ path: `f${i}`, data: "x" })));
    await assert.rejects(checkSource(many, { maxBytes: 100, maxEntries: 4 }), (e: unknown) => e instanceof PyroError && e.code === "source_too_large");
    const big = archive([{ path: "big", data: Buffer.alloc(2000) }]);
    await assert.rejects(checkSource(big, { maxBytes: 1000, maxEntries: 10 }), (e: unknown) => e instanceof PyroError && e.code === "source_too_large");
  });

  test("a directory with inner links is accepted; one with a link out is refused", async () => {
    const dir = join(scratch, "tree-ok");
    mkdirSync(join(dir, "src"), { recursive: true });
    writeFileSync(join(dir, "src", "main.c"), "int main(){}");
    symlinkSync("src/main.c", join(dir, "main-link"));
    const checked = await checkSource(dir);
    assert.equal(checked.mode, "directory");
    assert.equal(checked.entries, 3);
    symlinkSync("/etc/passwd", join(dir, "out"));
    await refusedWith(dir, "source_refused", /^out: symlink target \/etc\/passwd leaves the destination/);
  });

  test("host-compat extraction merges, strips setuid, replaces symlinks without following them", async () => {
    const root = join(scratch, "ws-merge");
    const outside = join(scratch, "outside");
    mkdirSync(outside, { recursive: true });
    mkdirSync(join(root, "sub"), { recursive: true });
    writeFileSync(join(root, "unrelated"), "stays");
    writeFileSync(join(root, "sub", "old"), "old");
    symlinkSync(outside, join(root, "trap"));
    const path = archive([
      { path: "./sub", type: "Directory" },
      { path: "sub/old", data: "new" },
      { path: "suid", data: "#!/bin/sh\n", mode: 0o4755 },
      { path: "trap", type: "Directory" },
      { path: "trap/file", data: "inside" },
      { path: "alias", type: "Link", linkpath: "sub/old" },
    ]);
    const source = await checkSource(path);
    const counts = await extractInto(root, root, source);
    assert.deepEqual(counts, { files: 4, dirs: 2, symlinks: 0, bytes: 19 });
    assert.equal(readFileSync(join(root, "sub", "old"), "utf8"), "new");
    assert.equal(readFileSync(join(root, "unrelated"), "utf8"), "stays");
    assert.equal(statSync(join(root, "suid")).mode & 0o7777, 0o755);
    assert.ok(lstatSync(join(root, "trap")).isDirectory(), "the symlink was replaced by a directory");
    assert.deepEqual(readdirSync(outside), [], "nothing was written through the old symlink");
    assert.equal(statSync(join(root, "alias")).ino, statSync(join(root, "sub", "old")).ino);
    assert.deepEqual(readdirSync(root).filter((n) => n.startsWith(".pyro-staging")), []);
  });

  test("push destinations stay inside /workspace", () => {
    assert.equal(resolveWorkspaceDest(undefined), "/workspace");
    assert.equal(resolveWorkspaceDest("src"), "/workspace/src");
    assert.equal(resolveWorkspaceDest("/workspace/a/./b/"), "/workspace/a/b");
    for (const bad of ["../x", "/etc", "/workspace/../etc", "a/../../b", "/workspacex"]) {
      assert.throws(() => resolveWorkspaceDest(bad), (e: unknown) => e instanceof PyroError && e.code === "invalid_argument" && /^dest: /.test(e.message), bad);
    }
  });

  test("names are cleaned the way the guest cleans them", () => {
    assert.equal(TreeChecker.clean("./a//b/./c"), "a/b/c");
    assert.equal(TreeChecker.clean("./"), undefined);
    assert.throws(() => TreeChecker.clean("a/../../b"), /leaves/);
  });
});

describe("what is sent is what was checked", () => {
  test("a gzip archive is recognised by its bytes, whatever its name", async () => {
    for (const name of ["seed.tar", "seed", "seed.bin"]) {
      const path = join(scratch, `named-${name}`);
      writeFileSync(path, makeTar([{ path: "dir", type: "Directory" }, { path: "dir/a.txt", data: "A" }], { gzip: true }));
      const checked = await checkSource(path);
      assert.equal(checked.mode, "tar_archive", name);
      assert.equal(checked.gzip, true, name);
      const names: string[] = [];
      await forEachTarEntry(tarStreamOf(checked), (entry) => {
        names.push(entry.path);
      });
      assert.deepEqual(names, ["dir", "dir/a.txt"], name);
    }
    const plain = join(scratch, "plain-without-extension");
    writeFileSync(plain, makeTar([{ path: "b.txt", data: "B" }]));
    assert.equal((await checkSource(plain)).gzip, false);
  });

  /** The names and bodies a stream carries. */
  async function contents(checked: Awaited<ReturnType<typeof checkSource>>): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    await forEachTarEntry(tarStreamOf(checked), async (entry) => {
      const chunks: Buffer[] = [];
      for await (const chunk of entry) chunks.push(chunk);
      out[entry.path] = entry.type === "SymbolicLink" ? `-> ${entry.linkpath}` : Buffer.concat(chunks).toString();
    });
    return out;
  }

  /** Fails the stream with source_refused naming `entry`, and nothing escapes as an uncaught exception. */
  async function failsNaming(checked: Awaited<ReturnType<typeof checkSource>>, entry: RegExp): Promise<void> {
    let uncaught: unknown;
    const onUncaught = (error: unknown) => (uncaught = error);
    process.on("uncaughtException", onUncaught);
    try {
      await assert.rejects(contents(checked), (error: unknown) => error instanceof PyroError && error.code === "source_refused" && entry.test(error.message));
      await new Promise((r) => setTimeout(r, 50));
    } finally {
      process.off("uncaughtException", onUncaught);
    }
    assert.equal(uncaught, undefined);
  }

  function tree(name: string): string {
    const dir = join(scratch, name);
    mkdirSync(join(dir, "sub"), { recursive: true });
    writeFileSync(join(dir, "sub", "a.txt"), "a");
    writeFileSync(join(dir, "sub", "passwd"), "mine");
    symlinkSync("sub/a.txt", join(dir, "link"));
    return dir;
  }

  test("a tree packs as it was checked: entries, bodies, links", async () => {
    const dir = tree("as-checked");
    assert.deepEqual(await contents(await checkSource(dir)), { "link": "-> sub/a.txt", "sub/": "", "sub/a.txt": "a", "sub/passwd": "mine" });
  });

  test("an entry that appears after the check is not sent", async () => {
    const dir = tree("gains");
    const checked = await checkSource(dir);
    symlinkSync("/etc/passwd", join(dir, "sub", "sneaky"));
    writeFileSync(join(dir, "late.txt"), "late");
    assert.deepEqual(Object.keys(await contents(checked)).sort(), ["link", "sub/", "sub/a.txt", "sub/passwd"]);
  });

  test("a file swapped for a link to a host file fails the stream, naming it", async () => {
    const dir = tree("swap-file");
    const checked = await checkSource(dir);
    rmSync(join(dir, "sub", "passwd"));
    symlinkSync("/etc/passwd", join(dir, "sub", "passwd"));
    await failsNaming(checked, /^sub\/passwd became a symlink/);
  });

  test("a directory swapped for a symlink to a host directory fails the stream: the file reached is not the one checked", async () => {
    const dir = tree("swap-dir");
    const checked = await checkSource(dir);
    rmSync(join(dir, "sub"), { recursive: true });
    // /etc has a passwd too: the name now reaches the host's file.
    symlinkSync("/etc", join(dir, "sub"));
    await failsNaming(checked, /^sub\/(a\.txt|passwd)/);
  });

  test("a file swapped for a FIFO fails the stream instead of hanging", async () => {
    const dir = tree("swap-fifo");
    const checked = await checkSource(dir);
    rmSync(join(dir, "sub", "a.txt"));
    execFileSync("mkfifo", [join(dir, "sub", "a.txt")]);
    await failsNaming(checked, /^sub\/a\.txt is no longer the file that was checked/);
  });

  test("an archive replaced after its check is not sent", async () => {
    const path = join(scratch, "replaced.tar");
    writeFileSync(path, makeTar([{ path: "a.txt", data: "A" }]));
    const checked = await checkSource(path);
    const other = join(scratch, "other.tar");
    writeFileSync(other, makeTar([{ path: "b.txt", data: "B" }]));
    renameSync(other, path);
    await failsNaming(checked, /replaced after it was checked/);
  });
});
