import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import { oneWordShellLineHint, shellJoin, shellQuote } from "../../src/util/shell.js";

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

test("a shell line given as one argument gets the sh -c hint only when it exits 126 or 127", () => {
  const hint = oneWordShellLineHint(["ls -la && make"], 127);
  assert.equal(hint, "the words after -- keep their boundaries, so 'ls -la && make' ran as one command name; to run it as a shell line, write: -- sh -c 'ls -la && make'");
  for (const line of ["ls -la", "a&&b", "a||b", "a;b", "a|b", "a<b", "a>b", "echo $(id)", "echo `id`", "$HOME", "~/bin/tool", "tab\there", "*.sh", "it's", 'say "hi"', "a\\b"]) {
    assert.ok(oneWordShellLineHint([line], 127), line);
    assert.ok(oneWordShellLineHint([line], 126), line);
  }
  // A plain word, several words, another exit status: nothing to say.
  for (const [argv, exitCode] of [[["make"], 127], [["./build.sh"], 126], [["a/b~c"], 127], [["sh", "-c", "exit 127"], 127], [["ls", "-la"], 127], [["ls -la && make"], 0], [["ls -la && make"], 1], [["ls -la && make"], 128], [[], 127]] as const) {
    assert.equal(oneWordShellLineHint(argv, exitCode), undefined, JSON.stringify(argv));
  }
});

test("the advised sh -c line runs the original line in a real shell", () => {
  for (const line of ["echo \"it's\" here && echo 'quoted'", "printf '%s\\n' \"$((1+2))\" | cat", "echo a; echo b"]) {
    const hint = oneWordShellLineHint([line], 127)!;
    const advised = hint.slice(hint.lastIndexOf("-- sh -c ") + 3);
    const viaAdvice = spawnSync("sh", ["-c", advised], { encoding: "utf8" });
    const direct = spawnSync("sh", ["-c", line], { encoding: "utf8" });
    assert.equal(viaAdvice.status, 0, viaAdvice.stderr);
    assert.equal(viaAdvice.stdout, direct.stdout);
  }
});
