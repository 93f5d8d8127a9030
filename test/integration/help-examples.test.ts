import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import { newContext } from "../../src/cli/context.js";
import { buildProgram } from "../../src/cli/main.js";
import { Pyro } from "../../src/index.js";
import { exampleScript, helpExamples, type HelpExample } from "../help-examples.js";
import { assertNothingLeft, PYRO_BIN, removeDir, tempStateDir } from "../helpers.js";

/**
 * Every example of every --help, run as written: each Example section is one
 * bash script (its lines share variables, so a workspace created on the first
 * line is used by the next), with `pyro` on PATH being this checkout's, in a
 * directory that holds what the example's heading says it expects.
 */
const stateDir = tempStateDir();
const workDir = mkdtempSync(join(tmpdir(), "pyro-examples-"));
const examples = helpExamples(buildProgram(newContext(new Pyro(), new AbortController().signal)));

/** `./repo`, as the workspace example describes it: a project whose Makefile has a test target, with a src/. */
function makeRepo(): void {
  mkdirSync(join(workDir, "repo", "src"), { recursive: true });
  writeFileSync(join(workDir, "repo", "Makefile"), "test:\n\tsh src/check.sh\n");
  writeFileSync(join(workDir, "repo", "src", "check.sh"), 'echo "checked in $(pwd)"\n');
}

function runScript(example: HelpExample): Promise<{ code: number | null; output: string }> {
  const bin = join(workDir, "bin");
  return new Promise((resolve, reject) => {
    const child = spawn("bash", ["-c", exampleScript(example)], {
      cwd: workDir,
      env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? ""}`, PYRO_STATE_DIR: stateDir, PYRO_PROGRESS: "0" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
    const timer = setTimeout(() => child.kill("SIGKILL"), 600_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

describe("the examples in --help run as written", () => {
  before(async () => {
    mkdirSync(join(workDir, "bin"));
    symlinkSync(PYRO_BIN, join(workDir, "bin", "pyro"));
    makeRepo();
    const environments = new Set(examples.flatMap((e) => [...e.lines.join("\n").matchAll(/\bpyro (?:run|workspace create) (\S+)/g)].map((m) => m[1]!)));
    for (const environment of environments) await new Pyro().pullEnvironment(environment);
  });

  afterEach(async () => {
    // An example that failed half-way leaves its workspace: delete it before checking nothing is left.
    const pyro = new Pyro({ stateDir });
    for (const ws of await pyro.listWorkspaces()) await pyro.deleteWorkspace(ws.workspaceId);
    await pyro.close();
    assertNothingLeft(stateDir);
  });

  after(() => {
    removeDir(stateDir);
    removeDir(workDir);
  });

  test("there are examples to run", () => {
    assert.ok(examples.length >= 4, `found only ${examples.map((e) => e.command).join(", ")}`);
  });

  for (const example of examples) {
    test(`${example.command} --help`, async () => {
      const { code, output } = await runScript(example);
      assert.equal(code, 0, `the example of \`${example.command} --help\` failed (each line exits 0 unless it says "# exits N"):\n${example.lines.join("\n")}\n--- output ---\n${output}`);
    });
  }
});
