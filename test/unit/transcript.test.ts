import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { test } from "node:test";
import { ROOT } from "../helpers.js";
import { compare, describeMismatch, normalise, parseDocument, renderDiff, sessionScript, splitSession } from "../transcript.js";

const DOCUMENTS = [join(ROOT, "README.md"), ...readdirSync(join(ROOT, "docs")).filter((n) => n.endsWith(".md")).map((n) => join(ROOT, "docs", n))];

test("README.md and docs/ use the transcript format correctly: skips have reasons, no prompt outside a console block", () => {
  const problems = DOCUMENTS.flatMap((path) => parseDocument(readFileSync(path, "utf8")).problems.map((p) => `${relative(ROOT, path)}:${p}`));
  assert.deepEqual(problems, []);
});

test("a console block is split into commands, continuation lines and expected output", () => {
  const doc = [
    "Intro",
    "```console",
    "$ a=1",
    "$ echo $a \\",
    "  two",
    "1 two",
    "",
    "$ ls",
    "x",
    "...",
    "",
    "```",
    "",
    "- a list",
    "  ```console",
    "  $ true",
    "  ```",
  ].join("\n");
  const { blocks, problems } = parseDocument(doc);
  assert.deepEqual(problems, []);
  assert.deepEqual(blocks, [
    {
      line: 2,
      commands: [
        { line: 3, text: "a=1", expected: [] },
        { line: 4, text: "echo $a \\\n  two", expected: ["1 two"] },
        { line: 8, text: "ls", expected: ["x", "..."] },
      ],
    },
    { line: 15, commands: [{ line: 16, text: "true", expected: [] }] },
  ]);
});

test("skip markers need a reason and a console block right after them", () => {
  const skipped = parseDocument("<!-- transcript: skip: needs root -->\n```console\n$ apt-get install x\n```\n");
  assert.deepEqual(skipped.problems, []);
  assert.equal(skipped.blocks[0]!.skip, "needs root");

  assert.match(parseDocument("<!-- transcript: skip: -->\n```console\n$ x\n```\n").problems.join(), /needs a reason/);
  assert.match(parseDocument("<!-- transcript: skip -->\n```console\n$ x\n```\n").problems.join(), /needs a reason/);
  assert.match(parseDocument("<!-- transcript: skip: why -->\n\n```console\n$ x\n```\n").problems.join(), /line right before/);
  assert.match(parseDocument("<!-- transcript: skip: why -->\n```sh\nx\n```\n").problems.join(), /not `console`/);
});

test("a prompt in any other block is an error, so a session cannot hide from the test", () => {
  assert.deepEqual(parseDocument("```sh\n$ pyro run debian:12 -- true\n```\n").problems, [
    "2: a `$ ` command in a `sh` block; make the block `console` (a transcript) or drop the prompt",
  ]);
  assert.equal(parseDocument("```\n$ x\n```\n").problems.length, 1);
  assert.match(parseDocument("```console\noutput first\n$ x\n```\n").problems.join(), /must start with/);
  assert.deepEqual(parseDocument("```sh\necho $ x  # a dollar mid-line is fine\n```\n").problems, []);
});

test("normalising replaces only what differs between runs", () => {
  assert.equal(normalise('  "vm_id": "b36a04e3604e",'), '  "vm_id": "<id>",');
  assert.equal(normalise("#1 $ ls -l  → exit 0, 471 ms, 2026-11-27T12:47:21.319Z"), "#1 $ ls -l  → exit 0, <duration>, <time>");
  assert.equal(normalise('"stdout": "a  b\\n6.1.0-56-cloud-amd64\\n",'), '"stdout": "a  b\\n<guest-kernel>\\n",');
  assert.equal(normalise('  "duration_ms": 976,'), '  "duration_ms": <n>,');
  assert.equal(normalise("pyro 0.2s restoring"), "pyro <duration> restoring");
  assert.equal(normalise("-rw-r--r-- 1 root root   8 Nov  7 12:41 status.txt"), "-rw-r--r-- 1 root root   8 <mtime> status.txt");
  assert.equal(normalise("seed:  directory (/tmp/pyro-doc-x1Y2/seed)"), "seed:  directory (/tmp/<tmp>/seed)");
  assert.equal(normalise("debian:12        installed      235.7 MiB  Debian"), "debian:12        installed      <size>  Debian");
  // Not ids, not durations: words and plain numbers stay.
  assert.equal(normalise("pushed 1 files (6 bytes) into /workspace, exit 76"), "pushed 1 files (6 bytes) into /workspace, exit 76");
});

test("`...` matches any number of lines; anything else must match line for line", () => {
  assert.equal(compare(["a", "...", "d"], ["a", "b", "c", "d"]), undefined);
  assert.equal(compare(["a", "...", "d"], ["a", "d"]), undefined);
  assert.equal(compare(["..."], []), undefined);
  assert.equal(compare(["id 0123456789ab"], ["id fedcba987654"]), undefined);
  const diff = compare(["a", "...", "d", "e"], ["a", "b", "c", "d", "f"]);
  assert.ok(diff);
  assert.equal(renderDiff(diff), ["  a", "  ... (2 lines)", "  d", "- e", "+ f"].join("\n"));
  assert.equal(renderDiff(compare(["x"], [])!), "- x");
  assert.equal(renderDiff(compare([], ["y"])!), "+ y");
});

test("a session runs in one bash: state carries on, each command's output and status are its own", () => {
  const { blocks } = parseDocument(
    ["```console", "$ v=seven; echo $v", "seven", "$ printf 'no newline'", "no newline", "$ echo err >&2; (exit 3)", "err", "$ echo $?", "3", "$ cat", "```"].join("\n"),
  );
  const commands = blocks.flatMap((b) => b.commands);
  const marker = "MARK-0123";
  const output = execFileSync("bash", ["--noprofile", "--norc", "-c", sessionScript(commands, marker)], { encoding: "utf8" });
  const results = splitSession(output, marker);
  assert.deepEqual(
    results.map((r) => [r.lines, r.exitStatus]),
    [
      [["seven"], 0],
      [["no newline"], 0],
      [["err"], 3],
      [["3"], 0],
      // stdin is /dev/null: a command that reads it cannot swallow the rest of the session.
      [[], 0],
    ],
  );
  commands.forEach((command, k) => assert.equal(compare(command.expected, results[k]!.lines), undefined));
});

test("a mismatch names the document, the line, the command and shows the diff", () => {
  const { blocks } = parseDocument("Text\n\n```console\n$ pyro workspace delete \"$id\"\ndeleted 0123456789ab\n```\n");
  const command = blocks[0]!.commands[0]!;
  const diff = compare(command.expected, ["removed 0123456789ab"]);
  assert.ok(diff);
  assert.equal(
    describeMismatch("docs/x.md", command, 0, diff),
    ['docs/x.md:4: $ pyro workspace delete "$id"', "  (exit 0; - as the document shows it, + as the program printed it)", "- deleted 0123456789ab", "+ removed 0123456789ab"].join("\n"),
  );
});
