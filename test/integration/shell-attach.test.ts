import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, afterEach, before, test } from "node:test";
import { Pyro, type Workspace } from "../../src/index.js";
import { assertNothingLeft, ensureEnvironment, PYRO_BIN, removeDir, runCli, tempStateDir } from "../helpers.js";

/**
 * `pyro workspace shell attach`, as README shows it, needs a terminal: util-linux `script` gives
 * the real CLI one (a pty), and the test types into it as a person would.
 */
const stateDir = tempStateDir();
const pyro = new Pyro({ stateDir });
let ws: Workspace;

before(async () => {
  await ensureEnvironment();
  ws = await pyro.createWorkspace({ environment: "debian:12" });
});

afterEach(async () => {
  for (const w of await pyro.listWorkspaces()) if (w.workspaceId !== ws.workspaceId) await pyro.deleteWorkspace(w.workspaceId);
});

after(async () => {
  await ws.delete();
  await pyro.close();
  assertNothingLeft(stateDir);
  removeDir(stateDir);
});

const DETACH = "\x1d"; // Ctrl-]

interface Attached {
  output: () => string;
  type: (text: string) => void;
  waitFor: (needle: string) => Promise<void>;
  exit: Promise<number | null>;
}

/** Runs `pyro workspace shell attach ARGS` on a pseudo-terminal; input is typed through `script`. */
function attach(args: string[]): Attached {
  const command = [process.execPath, PYRO_BIN, "workspace", "shell", "attach", ...args].map((a) => `'${a}'`).join(" ");
  const child = spawn("script", ["-qfec", command, "/dev/null"], {
    env: { ...process.env, PYRO_STATE_DIR: stateDir, PYRO_PROGRESS: "0", NO_COLOR: "1", TERM: "xterm" },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let output = "";
  const waiters: { needle: string; resolve: () => void }[] = [];
  const onData = (chunk: Buffer): void => {
    output += chunk.toString("utf8");
    for (const w of waiters.filter((w) => output.includes(w.needle))) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
  };
  child.stdout.on("data", onData);
  child.stderr.on("data", onData);
  const exit = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  const killer = setTimeout(() => child.kill("SIGKILL"), 120_000);
  void exit.then(() => clearTimeout(killer));
  return {
    output: () => output,
    type: (text) => child.stdin.write(text),
    waitFor: (needle) =>
      output.includes(needle)
        ? Promise.resolve()
        : new Promise<void>((resolve, reject) => {
            waiters.push({ needle, resolve });
            void exit.then(() => reject(new Error(`attach ended before printing ${JSON.stringify(needle)}:\n${output}`)));
          }),
    exit,
  };
}

test("shell attach types into a shell on a terminal, Ctrl-] detaches, and the shell runs on", async () => {
  const opened = await pyro.openShell(ws.workspaceId);
  const session = attach([ws.workspaceId, opened.shellId]);
  await session.waitFor(`attached to ${opened.shellId}`);
  session.type("echo attach-$((6*7))\r");
  await session.waitFor("attach-42");
  session.type(DETACH);
  assert.equal(await session.exit, 0, session.output());
  assert.match(session.output(), new RegExp(`detached; the shell runs on \\(pyro workspace shell attach ${ws.workspaceId} ${opened.shellId}\\)`));

  const read = await pyro.readShell(ws.workspaceId, opened.shellId, { plain: true });
  assert.equal(read.state, "running");
  assert.match(read.output, /^attach-42\r?$/m, "the command typed on the terminal ran in the shell");
  await pyro.closeShell(ws.workspaceId, opened.shellId);
});

test("shell attach without a shell id opens one; `exit` ends the attach with the shell", async () => {
  const session = attach([ws.workspaceId]);
  await session.waitFor("attached to sh-");
  const shellId = /attached to (sh-[0-9a-f]+)/.exec(session.output())![1]!;
  session.type("exit 3\r");
  assert.equal(await session.exit, 0, session.output());
  assert.match(session.output(), /the shell exited \(exit 3\)/);
  const listed = await pyro.listShells(ws.workspaceId);
  assert.ok(!listed.some((s) => s.shellId === shellId && s.state === "running"), JSON.stringify(listed));
});

test("shell attach refuses to run without a terminal, and says what scripts use instead", async () => {
  const result = await runCli(["workspace", "shell", "attach", ws.workspaceId], { stateDir });
  assert.equal(result.code, 64, result.stderr);
  assert.match(result.stderr, /needs a terminal/);
  assert.match(result.stderr, /shell write and shell read/);
});
