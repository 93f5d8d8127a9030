import assert from "node:assert/strict";
import { mkdirSync, realpathSync, symlinkSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { after, test } from "node:test";
import { PyroError } from "../../src/errors.js";
import { confineHostPath, defaultToolPolicy, resolveAllowedRoots } from "../../src/tools/policy.js";
import { removeDir, tempStateDir } from "../helpers.js";

const scratch = realpathSync(tempStateDir("pyro-roots-"));
after(() => removeDir(scratch));

function inDir<T>(dir: string, fn: () => T): T {
  const before = process.cwd();
  process.chdir(dir);
  try {
    return fn();
  } finally {
    process.chdir(before);
  }
}

test("the default shared directory is where the server starts, but never /, the home directory or above it", () => {
  assert.deepEqual(inDir(scratch, () => defaultToolPolicy().allowedRoots), [scratch]);
  assert.deepEqual(inDir("/", () => defaultToolPolicy().allowedRoots), []);
  const home = realpathSync(homedir());
  assert.deepEqual(inDir(home, () => defaultToolPolicy().allowedRoots), []);
  if (home !== "/") assert.deepEqual(inDir(dirname(home), () => defaultToolPolicy().allowedRoots), []);
  // Named by the operator, the home directory is shared: that is their decision.
  assert.deepEqual(resolveAllowedRoots([home]), [home]);
  assert.throws(() => resolveAllowedRoots(["/"]), /must not be \//);
  assert.throws(() => resolveAllowedRoots([join(scratch, "missing")]), /does not exist/);
});

test("a path is confined by where it really is, not by how it is spelled", async () => {
  const shared = join(scratch, "shared");
  mkdirSync(join(shared, "repo"), { recursive: true });
  // Shares the root's name as a prefix, but is not inside it.
  mkdirSync(`${shared}-sibling`);
  writeFileSync(join(scratch, "secret"), "s");
  symlinkSync(join(scratch, "secret"), join(shared, "link-out"));
  symlinkSync("repo", join(shared, "link-in"));
  const policy = defaultToolPolicy({ allowedRoots: [shared] });
  assert.equal(await confineHostPath("seed_path", join(shared, "repo"), policy), join(shared, "repo"));
  assert.equal(await confineHostPath("seed_path", join(shared, "link-in"), policy), join(shared, "repo"));
  for (const path of [join(shared, "link-out"), join(shared, "..", "secret"), scratch, `${shared}-sibling`, join(shared, "missing")]) {
    await assert.rejects(confineHostPath("seed_path", path, policy), (error: unknown) => {
      assert.ok(error instanceof PyroError);
      assert.equal(error.code, "source_refused", path);
      return true;
    });
  }
});
