import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { buildCpio } from "../../src/environments/cpio.js";

test("the newc archive lists the same entries with cpio(1) and is deterministic", (t) => {
  const entries = [
    { name: "dev", mode: 0o040755 },
    { name: "dev/console", mode: 0o020600, rdevMajor: 5, rdevMinor: 1 },
    { name: "init", mode: 0o100755, data: Buffer.from("#!/bin/sh\necho hi\n") },
    { name: "odd", mode: 0o100644, data: Buffer.from("abc") },
  ];
  const a = buildCpio(entries);
  assert.deepEqual(a, buildCpio(entries));
  assert.equal(a.length % 512, 0);
  const probe = spawnSync("cpio", ["--version"]);
  if (probe.error) {
    t.skip("cpio(1) is not installed");
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), "pyro-cpio-"));
  try {
    const file = join(dir, "a.cpio");
    writeFileSync(file, a);
    const listing = spawnSync("cpio", ["-itv", "-F", file], { encoding: "utf8" });
    assert.equal(listing.status, 0, listing.stderr);
    const lines = listing.stdout.trim().split("\n");
    assert.equal(lines.length, 4);
    assert.match(lines[1] ?? "", /^crw-------.*5,\s*1.*dev\/console$/);
    const out = join(dir, "x");
    const extract = spawnSync("sh", ["-c", `mkdir ${out} && cd ${out} && cpio -id --no-absolute-filenames init odd < ${file}`], { encoding: "utf8" });
    assert.equal(extract.status, 0, extract.stderr);
    assert.equal(readFileSync(join(out, "init"), "utf8"), "#!/bin/sh\necho hi\n");
    assert.equal(statSync(join(out, "init")).mode & 0o777, 0o755);
    assert.equal(readFileSync(join(out, "odd"), "utf8"), "abc");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
