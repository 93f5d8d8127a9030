import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import { shellJoin, shellQuote } from "../../src/util/shell.js";

test("quotes like shlex.quote", () => {
  assert.equal(shellQuote("plain-arg_1.txt"), "plain-arg_1.txt");
  assert.equal(shellQuote(""), "''");
  assert.equal(shellQuote("a b"), "'a b'");
  assert.equal(shellQuote("it's"), `'it'"'"'s'`);
  assert.equal(shellJoin(["sh", "-lc", 'echo "a  b"']), `sh -lc 'echo "a  b"'`);
});

test("a real shell gets back the same argv", () => {
  const argv = ["a  b", "it's", "$HOME", "`x`", "\\n", "*", "", "--flag=1", "ü"];
  const out = spawnSync("sh", ["-c", `for a in ${shellJoin(argv)}; do printf '%s\\0' "$a"; done`], { encoding: "utf8" });
  assert.deepEqual(out.stdout.split("\0").slice(0, -1), argv);
});
