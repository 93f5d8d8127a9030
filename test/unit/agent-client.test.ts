import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { AgentSession } from "../../src/agent/client.js";
import { agentBinaryPath } from "../../src/config.js";
import { PyroError } from "../../src/errors.js";

// The host client against the real guest agent, run off-VM on a unix socket.
// Commands use argv (sh -c): a login shell would read this host's own profile.
describe("agent client against the real agent", () => {
  const dir = mkdtempSync(join(tmpdir(), "pyro-agent-"));
  const socket = join(dir, "agent.sock");
  let agent: ChildProcess;

  before(async () => {
    assert.ok(existsSync(agentBinaryPath()), "run `npm run build` first");
    agent = spawn(agentBinaryPath(), ["--listen", `unix:${socket}`], { stdio: ["ignore", "ignore", "inherit"] });
    const deadline = Date.now() + 10_000;
    while (!existsSync(socket) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  });

  after(() => {
    agent.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });

  const open = () => AgentSession.open(socket, { deadline: Date.now() + 5000 });

  test("handshake, exec with streamed output, exit codes", async () => {
    const session = await open();
    try {
      assert.match(session.hello?.agentVersion ?? "", /^\d+\.\d+\.\d+$/);
      assert.equal(session.hello?.pid1, false);
      const seen: string[] = [];
      const r = await session.exec(
        { argv: ["sh", "-c", "echo out; echo err >&2; exit 3"], timeoutMs: 5000, maxOutputBytes: 1024 },
        { onOutput: (stream, chunk) => seen.push(`${stream}:${chunk.toString()}`) },
      );
      assert.equal(r.exitCode, 3);
      assert.equal(r.stdout.toString(), "out\n");
      assert.equal(r.stderr.toString(), "err\n");
      assert.deepEqual(seen.sort(), ["stderr:err\n", "stdout:out\n"]);
      const argv = await session.exec({ argv: ["printf", "%s|", "a b", "c"], timeoutMs: 5000, maxOutputBytes: 1024 });
      assert.equal(argv.stdout.toString(), "a b|c|");
    } finally {
      session.close();
    }
  });

  test("output beyond the cap is counted, not kept", async () => {
    const session = await open();
    try {
      const r = await session.exec({ argv: ["sh", "-c", "head -c 300000 /dev/zero"], timeoutMs: 10_000, maxOutputBytes: 1000 });
      assert.equal(r.stdout.length, 1000);
      assert.equal(r.stdoutTruncated, true);
      assert.equal(r.stdoutBytes, 300000);
      assert.equal(r.stderrTruncated, false);
    } finally {
      session.close();
    }
  });

  test("timeouts and cancellation kill the command", async () => {
    const session = await open();
    try {
      const started = Date.now();
      const r = await session.exec({ argv: ["sh", "-c", "sleep 30"], timeoutMs: 300, maxOutputBytes: 10 });
      assert.equal(r.timedOut, true);
      assert.equal(r.exitCode, 124);
      assert.ok(Date.now() - started < 5000);

      const controller = new AbortController();
      const pending = session.exec({ argv: ["sh", "-c", "echo go; sleep 30"], timeoutMs: 30_000, maxOutputBytes: 100 }, { signal: controller.signal, onOutput: () => controller.abort() });
      await assert.rejects(pending, (e: unknown) => e instanceof PyroError && e.code === "cancelled");
      // The session is still usable afterwards.
      assert.equal((await session.exec({ argv: ["sh", "-c", "echo ok"], timeoutMs: 5000, maxOutputBytes: 10 })).stdout.toString(), "ok\n");
    } finally {
      session.close();
    }
  });

  test("a command that cannot start is a clear error", async () => {
    const session = await open();
    try {
      await assert.rejects(
        session.exec({ argv: ["/no/such/binary"], timeoutMs: 5000, maxOutputBytes: 10 }),
        (e: unknown) => e instanceof PyroError && e.code === "agent_error" && /could not start/.test(e.message),
      );
    } finally {
      session.close();
    }
  });

  test("a closed connection fails pending requests instead of hanging", async () => {
    const session = await open();
    const pending = session.exec({ argv: ["sh", "-c", "sleep 30"], timeoutMs: 30_000, maxOutputBytes: 10 });
    setTimeout(() => session.close(), 100);
    await assert.rejects(pending, (e: unknown) => e instanceof PyroError && e.code === "agent_error");
  });
});
