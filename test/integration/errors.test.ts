import assert from "node:assert/strict";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, symlinkSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { inspectKvm } from "../../src/backends/qemu/accel.js";
import { ErrorCode, PyroError, type ErrorCodeValue } from "../../src/errors.js";
import { Pyro } from "../../src/index.js";
import { EXIT_CODES } from "../../src/cli/output.js";
import { assertNothingLeft, ensureEnvironment, PYRO_BIN, removeDir, runCli, tempStateDir, vmDirsUnder } from "../helpers.js";
import { foreignWords } from "../vocabulary.js";

/**
 * Every error code, raised for real on each surface, comes back with a hint
 * in that surface's words: the SDK's PyroError (camelCase options), the CLI's
 * --json error document and stderr (flags), an MCP tool's isError result
 * (snake_case arguments), read by the official client after listTools.
 * `internal` (a bug) has no trigger; test/unit/vocabulary.test.ts renders it.
 */

const stateDir = tempStateDir();
const scratch = mkdtempSync(join(tmpdir(), "pyro-errors-"));
const baseEnv = { ...process.env, PYRO_STATE_DIR: stateDir, PYRO_PROGRESS: "0", PYRO_POOL_SIZE: "0" } as Record<string, string>;

interface Rendered {
  code: string;
  message: string;
  hint: string;
}

type Surface = "sdk" | "cli" | "mcp";

interface Case {
  code: ErrorCodeValue;
  what: string;
  /** Settings this case needs (a broken host, an unreachable mirror); the SDK, the CLI and an MCP server of their own get them. */
  env?: Record<string, string>;
  sdk?: (pyro: Pyro) => Promise<unknown>;
  cli?: () => string[];
  mcp?: () => { name: string; arguments: Record<string, unknown> };
  /** Where one surface refuses it differently: over MCP a host path is first checked against the directories the server shares. */
  codeOn?: Partial<Record<Surface, ErrorCodeValue>>;
  /** What each surface's message must say: the argument named the way its caller named it. */
  message?: Partial<Record<Surface, RegExp>>;
  hint?: RegExp;
  hintNot?: RegExp;
}

const missingId = "0123456789ab";
let workspaceId = "";
let stoppedVmId = "";

const brokenQemu = join(scratch, "qemu-that-fails");
const mirror = "http://127.0.0.1:9/debian";
const emptyCache = join(scratch, "empty-cache");
const stateFile = join(scratch, "not-a-directory");
const seedWithLinkOut = join(scratch, "seed-link-out");
const bigSeed = join(scratch, "seed-too-large");

const CASES: Case[] = [
  {
    code: ErrorCode.invalidArgument,
    what: "a timeout of 0",
    sdk: (p) => p.runInVm({ environment: "debian:12", command: "true", timeoutSeconds: 0 }),
    cli: () => ["run", "debian:12", "--timeout-seconds", "0", "--json", "--", "true"],
    mcp: () => ({ name: "vm_run", arguments: { environment: "debian:12", command: "true", timeout_seconds: 0 } }),
    message: { sdk: /^timeoutSeconds: /, cli: /^--timeout-seconds: /, mcp: /^timeout_seconds: / },
    hint: /1 to 86400/,
  },
  {
    code: ErrorCode.invalidArgument,
    what: "a time to live over 7 days",
    sdk: (p) => p.createVm({ environment: "debian:12", ttlSeconds: 604801 }),
    cli: () => ["vm", "create", "debian:12", "--ttl-seconds", "604801", "--json"],
    mcp: () => ({ name: "vm_create", arguments: { environment: "debian:12", ttl_seconds: 604801 } }),
    message: { sdk: /^ttlSeconds: /, cli: /^--ttl-seconds: /, mcp: /^ttl_seconds: / },
    hint: /604800/,
  },
  {
    code: ErrorCode.invalidArgument,
    what: "more memory than the host has",
    sdk: (p) => p.createVm({ environment: "debian:12", memMib: 40000 }),
    cli: () => ["vm", "create", "debian:12", "--mem-mib", "40000", "--json"],
    mcp: () => ({ name: "vm_create", arguments: { environment: "debian:12", mem_mib: 40000 } }),
    message: { sdk: /^memMib: /, cli: /^--mem-mib: /, mcp: /^mem_mib: / },
    // Not "guests need at least 128 MiB": the value is too large, not too small.
    hint: /(at most|to) \d+/,
    hintNot: /at least/,
  },
  {
    code: ErrorCode.invalidArgument,
    what: "a 65-character workspace name",
    sdk: (p) => p.createWorkspace({ environment: "debian:12", name: "n".repeat(65) }),
    cli: () => ["workspace", "create", "debian:12", "--name", "n".repeat(65), "--json"],
    mcp: () => ({ name: "workspace_create", arguments: { environment: "debian:12", name: "n".repeat(65) } }),
    message: { sdk: /^name: /, cli: /^--name: /, mcp: /^name: / },
    hint: /64/,
  },
  {
    code: ErrorCode.invalidArgument,
    what: "a seed that is a single file",
    sdk: (p) => p.createWorkspace({ environment: "debian:12", seedPath: join(scratch, "one-file") }),
    cli: () => ["workspace", "create", "debian:12", "--seed-path", join(scratch, "one-file"), "--json"],
    mcp: () => ({ name: "workspace_create", arguments: { environment: "debian:12", seed_path: join(scratch, "one-file") } }),
    message: { sdk: /^seedPath: /, cli: /^--seed-path: /, mcp: /^seed_path: / },
    hint: /directory/,
  },
  {
    code: ErrorCode.invalidArgument,
    what: "a push of a path that does not exist",
    sdk: (p) => p.pushWorkspaceSync(workspaceId, join(scratch, "nothing-here")),
    cli: () => ["workspace", "sync", "push", workspaceId, join(scratch, "nothing-here"), "--json"],
    mcp: () => ({ name: "workspace_sync_push", arguments: { workspace_id: workspaceId, source_path: join(scratch, "nothing-here") } }),
    codeOn: { mcp: ErrorCode.sourceRefused },
    message: { sdk: /^sourcePath: /, cli: /^<source-path>: /, mcp: /^source_path: / },
  },
  {
    code: ErrorCode.invalidArgument,
    what: "an id that is not one",
    sdk: (p) => p.statusWorkspace("../etc"),
    cli: () => ["workspace", "status", "../etc", "--json"],
    mcp: () => ({ name: "workspace_status", arguments: { workspace_id: "../etc" } }),
    message: { sdk: /^workspaceId: /, cli: /^<workspace-id>: /, mcp: /^workspace_id: / },
  },
  {
    code: ErrorCode.unknownEnvironment,
    what: "an environment not in the catalog",
    sdk: (p) => p.runInVm({ environment: "debian:99", command: "true" }),
    cli: () => ["run", "debian:99", "--json", "--", "true"],
    mcp: () => ({ name: "vm_run", arguments: { environment: "debian:99", command: "true" } }),
    hint: /debian:12/,
  },
  {
    code: ErrorCode.vmNotFound,
    what: "a VM that does not exist",
    sdk: (p) => p.statusVm(missingId),
    cli: () => ["vm", "status", missingId, "--json"],
    mcp: () => ({ name: "vm_status", arguments: { vm_id: missingId } }),
  },
  {
    code: ErrorCode.vmNotRunning,
    what: "a command in a VM that was created, not started",
    sdk: (p) => p.execVm(stoppedVmId, { command: "true" }),
    cli: () => ["vm", "exec", stoppedVmId, "--json", "--", "true"],
    mcp: () => ({ name: "vm_exec", arguments: { vm_id: stoppedVmId, command: "true" } }),
  },
  {
    code: ErrorCode.workspaceNotFound,
    what: "a workspace that does not exist",
    sdk: (p) => p.statusWorkspace(missingId),
    cli: () => ["workspace", "status", missingId, "--json"],
    mcp: () => ({ name: "workspace_status", arguments: { workspace_id: missingId } }),
  },
  {
    code: ErrorCode.sourceRefused,
    what: "a seed with a link out of the tree",
    sdk: (p) => p.createWorkspace({ environment: "debian:12", seedPath: seedWithLinkOut }),
    cli: () => ["workspace", "create", "debian:12", "--seed-path", seedWithLinkOut, "--json"],
    mcp: () => ({ name: "workspace_create", arguments: { environment: "debian:12", seed_path: seedWithLinkOut } }),
  },
  {
    code: ErrorCode.sourceTooLarge,
    what: "a seed over the size cap",
    sdk: (p) => p.createWorkspace({ environment: "debian:12", seedPath: bigSeed }),
    cli: () => ["workspace", "create", "debian:12", "--seed-path", bigSeed, "--json"],
    mcp: () => ({ name: "workspace_create", arguments: { environment: "debian:12", seed_path: bigSeed } }),
  },
  {
    code: ErrorCode.fileNotFound,
    what: "reading a file that is not there",
    sdk: (p) => p.readWorkspaceFile(workspaceId, "no-such-file.txt"),
    cli: () => ["workspace", "file", "read", workspaceId, "no-such-file.txt", "--json"],
    mcp: () => ({ name: "workspace_file_read", arguments: { workspace_id: workspaceId, path: "no-such-file.txt" } }),
  },
  {
    code: ErrorCode.patchFailed,
    what: "a patch against other content",
    sdk: (p) => p.applyWorkspacePatch(workspaceId, PATCH),
    cli: () => ["workspace", "patch", "apply", workspaceId, "--patch-file", join(scratch, "stale.patch"), "--json"],
    mcp: () => ({ name: "workspace_patch_apply", arguments: { workspace_id: workspaceId, patch: PATCH } }),
  },
  {
    code: ErrorCode.snapshotNotFound,
    what: "deleting a snapshot that does not exist",
    sdk: (p) => p.deleteSnapshot(workspaceId, "never-made"),
    cli: () => ["workspace", "snapshot", "delete", workspaceId, "never-made", "--json"],
    mcp: () => ({ name: "snapshot_delete", arguments: { workspace_id: workspaceId, snapshot_name: "never-made" } }),
  },
  {
    code: ErrorCode.shellNotFound,
    what: "reading a shell that was never opened",
    sdk: (p) => p.readShell(workspaceId, "sh-000000000000"),
    cli: () => ["workspace", "shell", "read", workspaceId, "sh-000000000000", "--json"],
    mcp: () => ({ name: "shell_read", arguments: { workspace_id: workspaceId, shell_id: "sh-000000000000" } }),
  },
  {
    code: ErrorCode.serviceNotFound,
    what: "the status of a service never started",
    sdk: (p) => p.serviceStatus(workspaceId, "never-started"),
    cli: () => ["workspace", "service", "status", workspaceId, "never-started", "--json"],
    mcp: () => ({ name: "service_status", arguments: { workspace_id: workspaceId, name: "never-started" } }),
  },
  {
    code: ErrorCode.serviceFailed,
    what: "a service that exits before it is ready",
    sdk: (p) => p.startService(workspaceId, { name: "fails-sdk", command: "exit 3", readiness: { type: "file", path: "/tmp/never", timeoutSeconds: 5 } }),
    cli: () => ["workspace", "service", "start", workspaceId, "fails-cli", "--ready-file", "/tmp/never", "--ready-timeout-seconds", "5", "--json", "--", "exit", "3"],
    mcp: () => ({
      name: "service_start",
      arguments: { workspace_id: workspaceId, name: "fails-mcp", command: "exit 3", readiness: { type: "file", path: "/tmp/never", timeout_seconds: 5 } },
    }),
  },
  {
    code: ErrorCode.agentError,
    what: "a write the guest's filesystem refuses (an immutable file)",
    sdk: (p) => p.writeWorkspaceFile(workspaceId, "locked", "x"),
    cli: () => ["workspace", "file", "write", workspaceId, "locked", "--text", "x", "--json"],
    mcp: () => ({ name: "workspace_file_write", arguments: { workspace_id: workspaceId, path: "locked", text: "x" } }),
    hint: /permissions/,
  },
  {
    code: ErrorCode.guestUnavailable,
    what: "a host without QEMU",
    env: { PYRO_QEMU_BINARY: join(scratch, "no-qemu-here") },
    sdk: (p) => p.runInVm({ environment: "debian:12", command: "true" }),
    cli: () => ["run", "debian:12", "--json", "--", "true"],
    mcp: () => ({ name: "vm_run", arguments: { environment: "debian:12", command: "true" } }),
    hint: /apt-get install qemu/,
  },
  {
    code: ErrorCode.bootFailed,
    what: "a QEMU that exits at once",
    env: { PYRO_QEMU_BINARY: brokenQemu, PYRO_TEMPLATES: "0" },
    sdk: (p) => p.runInVm({ environment: "debian:12", command: "true" }),
    cli: () => ["run", "debian:12", "--json", "--", "true"],
    mcp: () => ({ name: "vm_run", arguments: { environment: "debian:12", command: "true" } }),
  },
  {
    code: ErrorCode.bootTimeout,
    what: "a cold boot given one second",
    env: { PYRO_BOOT_TIMEOUT_SECONDS: "1", PYRO_TEMPLATES: "0" },
    sdk: (p) => p.runInVm({ environment: "debian:12", command: "true" }),
    cli: () => ["run", "debian:12", "--json", "--", "true"],
    mcp: () => ({ name: "vm_run", arguments: { environment: "debian:12", command: "true" } }),
  },
  {
    code: ErrorCode.environmentBuildFailed,
    what: "an environment built from a mirror that does not answer",
    env: { PYRO_ENVIRONMENT_CACHE_DIR: emptyCache, PYRO_DEBIAN_MIRROR: mirror },
    sdk: (p) => p.pullEnvironment("debian:12-base"),
    cli: () => ["env", "pull", "debian:12-base", "--json"],
    // Building is host administration, with no tool of its own: a model meets it through a run.
    mcp: () => ({ name: "vm_run", arguments: { environment: "debian:12-base", command: "true" } }),
  },
  {
    code: ErrorCode.stateError,
    what: "a state directory that is a file",
    env: { PYRO_STATE_DIR: stateFile },
    sdk: (p) => p.createVm({ environment: "debian:12" }),
    cli: () => ["vm", "create", "debian:12", "--json"],
    mcp: () => ({ name: "vm_create", arguments: { environment: "debian:12" } }),
  },
  {
    code: ErrorCode.cancelled,
    what: "a run whose caller gave up",
    sdk: (p) => {
      const controller = new AbortController();
      controller.abort();
      return p.runInVm({ environment: "debian:12", command: "sleep 30", signal: controller.signal });
    },
    // Over MCP a cancelled call has no result for the client to read; the CLI is interrupted by a signal (below).
  },
];

const PATCH = "--- a/notes.txt\n+++ b/notes.txt\n@@ -1 +1 @@\n-not what the file says\n+changed\n";

function check(surface: Surface, c: Case, got: Rendered): void {
  const where = `${c.code} (${c.what}) on ${surface}`;
  assert.equal(got.code, c.codeOn?.[surface] ?? c.code, `${where}: ${got.message}`);
  assert.ok(typeof got.hint === "string" && got.hint.trim().length > 10, `${where}: no hint`);
  assert.deepEqual(foreignWords(`${got.message}\n${got.hint}`, surface), [], `${where}: words of another surface in "${got.message}" / "${got.hint}"`);
  const expected = c.message?.[surface];
  if (expected) assert.match(got.message, expected, where);
  if (c.hint) assert.match(got.hint, c.hint, where);
  if (c.hintNot) assert.doesNotMatch(got.hint, c.hintNot, where);
}

async function sdkError(c: Case): Promise<Rendered> {
  const pyro = new Pyro({ env: { ...baseEnv, ...c.env } });
  try {
    await c.sdk!(pyro);
  } catch (error) {
    assert.ok(error instanceof PyroError, `${c.code}: not a PyroError: ${String(error)}`);
    return { code: error.code, message: error.message, hint: error.hint };
  } finally {
    await pyro.close();
  }
  assert.fail(`${c.code} (${c.what}): the SDK call succeeded`);
}

async function cliError(c: Case): Promise<Rendered> {
  const env = { ...baseEnv, ...c.env };
  const result = await runCli(c.cli!(), { stateDir: env.PYRO_STATE_DIR!, env });
  const body = JSON.parse(result.stdout) as { error: Rendered };
  assert.equal(result.code, EXIT_CODES[c.code], `${c.code}: exit status; stderr: ${result.stderr}`);
  // The same reason and hint, for a person, on stderr.
  assert.ok(result.stderr.includes(`hint: ${body.error.hint}`), result.stderr);
  return body.error;
}

const servers = new Map<string, Client>();

/** An MCP client (after listTools, as real clients do) of a server with these settings. */
async function mcpClient(env: Record<string, string> | undefined): Promise<Client> {
  const key = JSON.stringify(env ?? {});
  let client = servers.get(key);
  if (!client) {
    const transport = new StdioClientTransport({
      command: process.execPath,
      args: [PYRO_BIN, "mcp", "serve", "--profile", "workspace-full", "--allow-root", scratch, "--keep-warm", "0"],
      env: { ...baseEnv, ...env },
      stderr: "pipe",
    });
    client = new Client({ name: "pyro-errors-test", version: "1.0.0" });
    await client.connect(transport);
    await client.listTools();
    servers.set(key, client);
  }
  return client;
}

async function mcpError(c: Case): Promise<Rendered> {
  const client = await mcpClient(c.env);
  const result = (await client.callTool(c.mcp!())) as { isError?: boolean; structuredContent?: unknown; content?: { text?: string }[] };
  assert.equal(result.isError, true, `${c.code}: ${JSON.stringify(result)}`);
  assert.equal(result.structuredContent, undefined);
  return (JSON.parse(result.content?.[0]?.text ?? "null") as { error: Rendered }).error;
}

before(async () => {
  await ensureEnvironment();
  writeFileSync(join(scratch, "one-file"), "just a file\n");
  writeFileSync(join(scratch, "stale.patch"), PATCH);
  writeFileSync(brokenQemu, "#!/bin/sh\necho 'qemu: cannot start here' >&2\nexit 1\n");
  chmodSync(brokenQemu, 0o755);
  mkdirSync(emptyCache);
  writeFileSync(stateFile, "a file where the state directory should be\n");
  mkdirSync(seedWithLinkOut);
  symlinkSync("/etc/passwd", join(seedWithLinkOut, "passwd"));
  mkdirSync(bigSeed);
  // Sparse: over the 512 MiB cap without using the disk.
  writeFileSync(join(bigSeed, "big.bin"), "");
  truncateSync(join(bigSeed, "big.bin"), 600 * 1024 * 1024);
  const pyro = new Pyro({ env: baseEnv });
  try {
    const ws = await pyro.createWorkspace({ environment: "debian:12" });
    workspaceId = ws.workspaceId;
    await pyro.writeWorkspaceFile(workspaceId, "notes.txt", "what the file says\n");
    // Root in the guest makes a file nobody may change, not even the agent.
    const locked = await pyro.execWorkspace(workspaceId, { command: "touch locked && chattr +i locked" });
    assert.equal(locked.exitCode, 0, locked.stderr);
    stoppedVmId = (await pyro.createVm({ environment: "debian:12" })).vmId;
  } finally {
    await pyro.close();
  }
});

after(async () => {
  for (const client of servers.values()) await client.close().catch(() => undefined);
  const pyro = new Pyro({ env: baseEnv });
  await pyro.deleteWorkspace(workspaceId).catch(() => undefined);
  await pyro.deleteVm(stoppedVmId).catch(() => undefined);
  await pyro.close();
  assertNothingLeft(stateDir);
  removeDir(stateDir);
  removeDir(scratch);
});

describe("every error code, on every surface, has a hint in that surface's words", () => {
  test("the table covers every code but internal", () => {
    const covered = new Set(CASES.map((c) => c.code));
    const missing = Object.values(ErrorCode).filter((code) => code !== ErrorCode.internal && !covered.has(code));
    assert.deepEqual(missing, []);
  });

  for (const c of CASES) {
    test(`${c.code}: ${c.what}`, async () => {
      if (c.sdk) check("sdk", c, await sdkError(c));
      if (c.cli) check("cli", c, await cliError(c));
      if (c.mcp) check("mcp", c, await mcpError(c));
    });
  }

  test("boot_failed with KVM that cannot run the guest: the hint says PYRO_ACCEL=tcg", { skip: !existsSync("/dev/kvm") && "this host has no /dev/kvm" }, async (t) => {
    if ((await inspectKvm(stateDir)).usable) return t.skip("KVM works on this host");
    // Unconfined, QEMU opens /dev/kvm itself and meets what this host's KVM refuses (on some hosts an MSR assertion).
    const env = { ...baseEnv, PYRO_ACCEL: "kvm", PYRO_TEMPLATES: "0", PYRO_CONFINEMENT: "off" };
    const result = await runCli(["run", "debian:12", "--json", "--", "true"], { stateDir, env });
    const body = JSON.parse(result.stdout) as { error: Rendered };
    assert.equal(body.error.code, "boot_failed", result.stderr);
    assert.match(body.error.hint, /PYRO_ACCEL=tcg/, result.stderr);
  });

  test("cancelled: an SDK call whose signal is already aborted starts nothing", async () => {
    const pyro = new Pyro({ env: baseEnv });
    const before = vmDirsUnder(stateDir).length;
    try {
      const controller = new AbortController();
      controller.abort();
      const error = await pyro.runInVm({ environment: "debian:12", command: "true", signal: controller.signal }).catch((e: unknown) => e);
      assert.ok(error instanceof PyroError && error.code === "cancelled", String(error));
      assert.match(error.message, /before it started/);
      assert.equal(vmDirsUnder(stateDir).length, before);
    } finally {
      await pyro.close();
    }
  });

  test("cancelled: the CLI interrupted by SIGINT prints the error document and exits 130", async () => {
    const { spawn } = await import("node:child_process");
    const child = spawn(process.execPath, [PYRO_BIN, "run", "debian:12", "--json", "--", "sleep", "30"], { env: baseEnv, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    // Once the guest runs the command (the CLI is then past parsing and booting).
    const started = Date.now();
    while (!/sleep|running/.test(stderr) && Date.now() - started < 3000) await new Promise((r) => setTimeout(r, 100));
    child.kill("SIGINT");
    const code = await new Promise<number | null>((resolvePromise) => child.once("close", resolvePromise));
    assert.equal(code, 130, stderr);
    check("cli", CASES.find((c) => c.code === ErrorCode.cancelled)!, (JSON.parse(stdout) as { error: Rendered }).error);
  });
});
