import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import { newContext } from "../../src/cli/context.js";
import { buildProgram } from "../../src/cli/main.js";
import { CATALOG } from "../../src/environments/catalog.js";
import { Pyro } from "../../src/sdk/pyro.js";
import { commandsOf, exampleScript, helpExamples, helpText } from "../help-examples.js";

const program = buildProgram(newContext(new Pyro(), new AbortController().signal));
const examples = helpExamples(program);

test("every Example section of every --help is found and holds pyro command lines", () => {
  const withHeading = commandsOf(program).filter(({ command }) => /^Examples?\b/m.test(helpText(command)));
  assert.ok(withHeading.length >= 4, "the help texts lost their examples");
  assert.deepEqual(examples.map((e) => e.command), withHeading.map((c) => c.path), "an Example heading whose lines were not read");
  for (const example of examples) {
    assert.ok(example.lines.length > 0, `${example.command}: an empty example`);
    for (const line of example.lines) assert.match(line, /^(?:[a-z_]+=\$\()?pyro /, `${example.command}: "${line}" is not a pyro command line`);
  }
});

test("examples are self-contained: environments exist, variables are set before use, host paths are explained", () => {
  const names = CATALOG.map((spec) => spec.name);
  for (const example of examples) {
    const text = example.lines.join("\n");
    for (const match of text.matchAll(/\bpyro (?:run|workspace create|vm create) (\S+)/g)) {
      assert.ok(names.includes(match[1]!), `${example.command}: unknown environment ${match[1]}`);
    }
    const assigned = new Set<string>();
    for (const line of example.lines) {
      for (const use of line.matchAll(/"\$([a-z_]+)"/g)) assert.ok(assigned.has(use[1]!), `${example.command}: "$${use[1]}" is used before the example sets it`);
      const set = /^([a-z_]+)=\$\(/.exec(line)?.[1];
      if (set) assigned.add(set);
    }
    // Host paths are what comes before `--`; after it is the guest's command line.
    const hostSide = example.lines.map((line) => line.split(" -- ")[0]!).join("\n");
    for (const path of hostSide.matchAll(/(?<=\s)\.\/[\w.-]+/g)) {
      const root = path[0].split("/").slice(0, 2).join("/");
      assert.ok(example.note.includes(root), `${example.command}: the example uses ${root} but its heading does not say what it is`);
    }
    // debian:12 has no compiler or make; an example that builds must name the environment that has them.
    if (/\b(?:make|cc|gcc)\b/.test(text.replace(/\bpyro \S+( \S+)?/g, ""))) assert.match(text, /debian:12-build/, `${example.command}: builds without debian:12-build`);
  }
});

test("an example line documented with '# exits N' must exit N, and others 0", () => {
  const script = (line: string) => exampleScript({ command: "pyro x", note: "", lines: [line] });
  const run = (text: string) => spawnSync("bash", ["-c", text], { encoding: "utf8" });
  assert.equal(run(script("true")).status, 0);
  assert.equal(run(script("false")).status, 1);
  assert.equal(run(script("(exit 3)   # exits 3: documented")).status, 0);
  const wrong = run(script("(exit 2)   # exits 3: documented"));
  assert.equal(wrong.status, 1);
  assert.match(wrong.stderr, /expected exit 3, got 2/);
  assert.equal(run(script("true   # exits 1")).status, 1);
});
