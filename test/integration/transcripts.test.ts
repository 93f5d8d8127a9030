import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, test } from "node:test";
import { Pyro } from "../../src/index.js";
import { ensureEnvironment, vmProcessesUnder, removeDir, ROOT } from "../helpers.js";
import type { Command } from "../transcript.js";
import { compare, describeMismatch, parseDocument, sessionScript, splitSession } from "../transcript.js";

/** Every document with shell sessions; the generated contract has none. */
const DOCUMENTS = [
  join(ROOT, "README.md"),
  ...readdirSync(join(ROOT, "docs"))
    .filter((name) => name.endsWith(".md") && name !== "public-contract.md")
    .sort()
    .map((name) => join(ROOT, "docs", name)),
];

/** Generous: a document's whole session, VM boots under TCG on a busy host included. */
const SESSION_TIMEOUT_MS = 15 * 60_000;

interface Session {
  output: string;
  timedOut: boolean;
}

/**
 * Runs the commands in one bash (reading the script command by command, so an assignment carries on
 * to the next command), in a scratch directory, with `pyro` meaning this checkout's
 * bin/pyro and a state directory of its own; the environment cache is the shared one.
 */
function runSession(commands: Command[], scratch: string, stateDir: string, marker: string): Promise<Session> {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PATH: `${join(ROOT, "bin")}:${process.env.PATH ?? ""}`,
    PYRO_STATE_DIR: stateDir,
    PYRO_PROGRESS: "0",
    NO_COLOR: "1",
  };
  for (const name of ["FORCE_COLOR", "PYRO_DEBUG", "PYRO_POOL_SIZE", "PYRO_TEMPLATES", "PYRO_ACCEL"]) delete env[name];
  return new Promise((resolve, reject) => {
    const child = spawn("bash", ["--noprofile", "--norc", "-c", sessionScript(commands, marker)], { cwd: scratch, env, stdio: ["ignore", "pipe", "inherit"], detached: true });
    let output = "";
    let timedOut = false;
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
    const timer = setTimeout(() => {
      timedOut = true;
      process.kill(-child.pid!, "SIGTERM");
    }, SESSION_TIMEOUT_MS);
    child.on("error", reject);
    child.on("close", () => {
      clearTimeout(timer);
      resolve({ output, timedOut });
    });
  });
}

/** Deletes whatever the session left, then checks that no QEMU of it survives. */
async function cleanUp(stateDir: string): Promise<void> {
  await using pyro = new Pyro({ stateDir });
  for (const ws of await pyro.listWorkspaces()) await pyro.deleteWorkspace(ws.workspaceId);
  for (const vm of await pyro.listVms()) await pyro.deleteVm(vm.vmId);
  assert.deepEqual(vmProcessesUnder(stateDir), [], "QEMU processes left under the transcript's state directory");
}

describe("documents: every console transcript runs and prints what it shows", () => {
  for (const path of DOCUMENTS) {
    const name = relative(ROOT, path);
    const { blocks, problems } = parseDocument(readFileSync(path, "utf8"));
    for (const block of blocks.filter((b) => b.skip !== undefined)) {
      test(`${name}:${block.line} (${block.commands.map((c) => `$ ${c.text}`).join("; ")})`, { skip: block.skip }, () => {});
    }
    const commands = blocks.filter((b) => b.skip === undefined).flatMap((b) => b.commands);
    if (commands.length === 0) continue;
    test(`${name}: ${commands.length} command${commands.length === 1 ? "" : "s"}`, async () => {
      assert.deepEqual(problems, [], `${name} misuses the transcript format`);
      await ensureEnvironment();
      const scratch = mkdtempSync("/tmp/pyro-doc-");
      const stateDir = mkdtempSync("/tmp/pyro-doc-state-");
      const marker = `PYRO-TRANSCRIPT-${randomBytes(6).toString("hex")}`;
      try {
        const session = await runSession(commands, scratch, stateDir, marker);
        const outputs = splitSession(session.output, marker);
        const failures: string[] = [];
        commands.forEach((command, k) => {
          const got = outputs[k];
          const where = `${name}:${command.line}: $ ${command.text}`;
          if (!got) {
            if (k === outputs.length) failures.push(`${where}\n  ${session.timedOut ? `still running after ${SESSION_TIMEOUT_MS / 1000} s` : "the session ended before it finished"}`);
            return;
          }
          const diff = compare(command.expected, got.lines);
          if (diff) failures.push(describeMismatch(name, command, got.exitStatus, diff));
        });
        assert.equal(failures.length, 0, `${name} differs from what the program does; update the document (or fix the program):\n\n${failures.join("\n\n")}\n`);
      } finally {
        await cleanUp(stateDir);
        removeDir(stateDir);
        removeDir(scratch);
      }
    });
  }
});
