import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { request } from "node:http";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { release, tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { Pyro } from "../../src/index.js";
import { assertNothingLeft, ensureEnvironment, PYRO_BIN, qemuProcessesUnder, vmProcessesUnder, removeDir, tempStateDir, vmDirsUnder } from "../helpers.js";

const stateDir = tempStateDir();
const scratch = mkdtempSync(join(tmpdir(), "pyro-mcp-"));
// The server's warm pool is off here (each test checks that nothing is left); one test below turns it on.
const serverEnv = { ...process.env, PYRO_STATE_DIR: stateDir, PYRO_PROGRESS: "0", PYRO_POOL_SIZE: "0" } as Record<string, string>;

const EXPECTED: Record<string, string[]> = {
  "vm-run": ["vm_run"],
  "workspace-core": [
    "vm_list_environments",
    "vm_run",
    "workspace_create",
    "workspace_delete",
    "workspace_diff",
    "workspace_exec",
    "workspace_export",
    "workspace_file_list",
    "workspace_file_read",
    "workspace_file_write",
    "workspace_list",
    "workspace_logs",
    "workspace_patch_apply",
    "workspace_reset",
    "workspace_status",
    "workspace_summary",
    "workspace_sync_push",
    "workspace_update",
  ],
  "workspace-full": [
    "service_list",
    "service_logs",
    "service_start",
    "service_status",
    "service_stop",
    "shell_close",
    "shell_open",
    "shell_read",
    "shell_signal",
    "shell_write",
    "snapshot_create",
    "snapshot_delete",
    "snapshot_list",
    "vm_create",
    "vm_delete",
    "vm_exec",
    "vm_list_environments",
    "vm_network_info",
    "vm_reap_expired",
    "vm_run",
    "vm_start",
    "vm_status",
    "vm_stop",
    "workspace_create",
    "workspace_delete",
    "workspace_diff",
    "workspace_exec",
    "workspace_export",
    "workspace_file_list",
    "workspace_file_read",
    "workspace_file_write",
    "workspace_fork",
    "workspace_list",
    "workspace_logs",
    "workspace_patch_apply",
    "workspace_reset",
    "workspace_start",
    "workspace_status",
    "workspace_stop",
    "workspace_summary",
    "workspace_sync_push",
    "workspace_update",
  ],
};

async function stdioClient(profile?: string): Promise<{ client: Client; transport: StdioClientTransport }> {
  const transport = new StdioClientTransport({
    command: process.execPath,
    // The test's own scratch directory is the one host directory models may name.
    args: [PYRO_BIN, "mcp", "serve", "--allow-root", scratch, ...(profile ? ["--profile", profile] : [])],
    env: serverEnv,
    stderr: "pipe",
  });
  const client = new Client({ name: "pyro-test", version: "1.0.0" });
  await client.connect(transport);
  return { client, transport };
}

type Structured = Record<string, unknown>;

/** A pyro failure over MCP: isError, the error as JSON text, and no structured content (it would not match the output schema). */
function failure(result: unknown): { code: string; message: string; hint: string } {
  const r = result as { structuredContent?: Structured; isError?: boolean; content?: { text?: string }[] };
  assert.equal(r.isError, true, JSON.stringify(r));
  assert.equal(r.structuredContent, undefined);
  const body = JSON.parse(r.content?.[0]?.text ?? "null") as { error: { code: string; message: string; hint: string } };
  assert.ok(body.error.hint.length > 0, "every error has a hint");
  return body.error;
}

function structured(result: unknown): Structured {
  const r = result as { structuredContent?: Structured; isError?: boolean; content?: { text?: string }[] };
  assert.ok(r.structuredContent, `no structuredContent: ${JSON.stringify(r)}`);
  // Older clients read the same JSON as text.
  assert.deepEqual(JSON.parse(r.content?.[0]?.text ?? "null"), r.structuredContent);
  return r.structuredContent;
}

// Both suites below use the state directory; it goes once both are done.
after(() => {
  removeDir(stateDir);
  removeDir(scratch);
});

describe("pyro mcp serve with a real MCP client", () => {
  let client: Client;
  let guestKernel = "";

  before(async () => {
    await ensureEnvironment();
    guestKernel = (await new Pyro().inspectEnvironment("debian:12")).kernelRelease ?? "";
    ({ client } = await stdioClient());
    // What every real client does first; from then on it checks results against the output schemas.
    await client.listTools();
  });

  afterEach(() => {
    assertNothingLeft(stateDir, { dirs: false });
  });

  after(async () => {
    await client.close();
  });

  test("each profile offers exactly its tools, with snake_case schemas and annotations", async (t) => {
    for (const [profile, names] of Object.entries(EXPECTED)) {
      const { client: c } = await stdioClient(profile);
      // A failed assertion must not leave the server running (the test file would never end).
      t.after(() => c.close());
      const { tools } = await c.listTools();
      assert.deepEqual(tools.map((t) => t.name).sort(), names, profile);
      const run = tools.find((t) => t.name === "vm_run");
      assert.deepEqual(Object.keys(run?.inputSchema.properties ?? {}).sort(), [
        "allow_hosts",
        "command",
        "environment",
        "mem_mib",
        "network",
        "network_policy",
        "timeout_seconds",
        "ttl_seconds",
        "vcpu_count",
      ]);
      assert.deepEqual(run?.inputSchema.required?.sort(), ["command", "environment"]);
      assert.ok(run?.outputSchema, "vm_run has an output schema");
      for (const tool of tools) {
        assert.ok(tool.annotations, `${tool.name} has annotations`);
        assert.ok(tool.description && tool.description.length > 20, tool.name);
        if (/_(status|list|logs|network_info)$|list_environments/.test(tool.name)) assert.equal(tool.annotations.readOnlyHint, true, tool.name);
        // workspace_stop keeps everything (memory included), so it is not destructive; vm_stop powers off.
        if (/_(delete|stop|reset)$|reap_expired/.test(tool.name)) assert.equal(tool.annotations.destructiveHint, tool.name !== "workspace_stop", tool.name);
      }
      if (profile === "workspace-full") {
        const create = tools.find((t) => t.name === "workspace_create");
        assert.ok(create?.inputSchema.properties && "seed_path" in create.inputSchema.properties);
        const push = tools.find((t) => t.name === "workspace_sync_push");
        assert.deepEqual(push?.inputSchema.required?.sort(), ["source_path", "workspace_id"]);
      }
    }
  });

  test("vm_run runs in a real guest, with progress notifications", async () => {
    const progress: string[] = [];
    const result = await client.callTool({ name: "vm_run", arguments: { environment: "debian:12", command: "uname -r" } }, undefined, {
      onprogress: (p) => progress.push(String(p.message)),
      timeout: 120_000,
    });
    const body = structured(result);
    assert.equal(body.exit_code, 0);
    assert.equal(body.stdout, `${guestKernel}\n`);
    assert.notEqual(String(body.stdout).trim(), release());
    assert.equal(body.execution_mode, "guest");
    assert.ok(progress.some((m) => m.startsWith("boot:")), progress.join(" | "));
  });

  test("a non-zero exit is a result; pyro's own failures are isError results with code and hint", async () => {
    const seven = structured(await client.callTool({ name: "vm_run", arguments: { environment: "debian:12", command: "exit 7" } }));
    assert.equal(seven.exit_code, 7);

    const error = failure(await client.callTool({ name: "vm_run", arguments: { environment: "debian:99", command: "true" } }));
    assert.equal(error.code, "unknown_environment");
    assert.match(error.hint, /debian:12/);

    assert.equal(failure(await client.callTool({ name: "workspace_status", arguments: { workspace_id: "000000000000" } })).code, "workspace_not_found");
    assert.equal(failure(await client.callTool({ name: "workspace_exec", arguments: { workspace_id: "000000000000", command: "true" } })).code, "workspace_not_found");
    assert.equal(failure(await client.callTool({ name: "workspace_create", arguments: { environment: "debian:12", seed_path: "/etc" } })).code, "source_refused");
    // A command past its timeout is a result, not a failure.
    const slow = structured(await client.callTool({ name: "vm_run", arguments: { environment: "debian:12", command: "sleep 30", timeout_seconds: 1 } }));
    assert.equal(slow.timed_out, true);
    assert.equal(slow.exit_code, 124);
  });

  test("arguments that fail the input schema are pyro's invalid_argument, naming the argument", async () => {
    const error = failure(await client.callTool({ name: "vm_run", arguments: { environment: "debian:12", command: "true", timeout_seconds: 0 } }));
    assert.equal(error.code, "invalid_argument");
    assert.match(error.message, /^timeout_seconds: must be at least 1, got 0/);
    assert.match(error.hint, /`timeout_seconds` takes a whole number from 1 to 86400/);
    const missing = failure(await client.callTool({ name: "vm_run", arguments: { command: "true" } }));
    assert.match(missing.message, /^environment: is required/);
    const wrongType = failure(await client.callTool({ name: "vm_run", arguments: { environment: "debian:12", command: ["true"] } }));
    assert.match(wrongType.message, /^command: must be a string, got a list/);
    const unknownTool = failure(await client.callTool({ name: "vm_explode", arguments: {} }));
    assert.equal(unknownTool.code, "invalid_argument");
    assert.match(unknownTool.hint, /vm_run/);
    const hugeName = failure(await client.callTool({ name: "x".repeat(10_000), arguments: {} }));
    assert.ok(hugeName.message.length < 200, "a made-up tool name is not echoed whole");
    assert.deepEqual(vmDirsUnder(stateDir), []);
  });

  test("the workspace flow: create with seed_path, exec, sync_push, exec, logs, delete", async () => {
    const seed = join(scratch, "seed");
    mkdirSync(seed);
    writeFileSync(join(seed, "README"), "seeded\n");
    const ws = structured(await client.callTool({ name: "workspace_create", arguments: { environment: "debian:12", seed_path: seed, name: "mcp" } }));
    const id = String(ws.workspace_id);
    assert.equal(ws.state, "started");
    assert.deepEqual(ws.workspace_seed, { mode: "directory", seed_path: seed });

    assert.equal(structured(await client.callTool({ name: "workspace_exec", arguments: { workspace_id: id, command: "cat README" } })).stdout, "seeded\n");
    const later = join(scratch, "later");
    mkdirSync(later);
    writeFileSync(join(later, "new.txt"), "pushed\n");
    const push = structured(await client.callTool({ name: "workspace_sync_push", arguments: { workspace_id: id, source_path: later, dest: "in" } }));
    assert.equal(push.dest, "/workspace/in");
    assert.equal(structured(await client.callTool({ name: "workspace_exec", arguments: { workspace_id: id, command: "cat in/new.txt" } })).stdout, "pushed\n");
    const logs = structured(await client.callTool({ name: "workspace_logs", arguments: { workspace_id: id } }));
    assert.deepEqual(
      (logs.entries as { command: string }[]).map((e) => e.command),
      ["cat README", "cat in/new.txt"],
    );
    // A push from outside the shared directory is refused, and the workspace is untouched.
    assert.equal(failure(await client.callTool({ name: "workspace_sync_push", arguments: { workspace_id: id, source_path: "/etc" } })).code, "source_refused");
    assert.equal(structured(await client.callTool({ name: "workspace_exec", arguments: { workspace_id: id, command: "ls /workspace | wc -l" } })).stdout, "2\n");
    assert.deepEqual(structured(await client.callTool({ name: "workspace_delete", arguments: { workspace_id: id } })), { workspace_id: id, deleted: true });
    assert.deepEqual(vmDirsUnder(stateDir), []);
  });

  test("the file tools, after listTools: write, read, list, patch, diff, export; refusals are isError results", async () => {
    const seed = join(scratch, "files-seed");
    mkdirSync(seed);
    writeFileSync(join(seed, "a.txt"), "alpha\n");
    const ws = structured(await client.callTool({ name: "workspace_create", arguments: { environment: "debian:12", seed_path: seed } }));
    const id = String(ws.workspace_id);
    const call = async (name: string, args: Record<string, unknown>) => client.callTool({ name, arguments: { workspace_id: id, ...args } });
    assert.deepEqual(structured(await call("workspace_file_write", { path: "b/c.txt", text: "gamma\n" })), { workspace_id: id, path: "/workspace/b/c.txt", bytes: 6, created: true });
    assert.equal(structured(await call("workspace_file_read", { path: "/workspace/b/c.txt" })).text, "gamma\n");
    const listed = structured(await call("workspace_file_list", { recursive: true }));
    assert.deepEqual(
      (listed.entries as { path: string }[]).map((e) => e.path),
      ["/workspace/a.txt", "/workspace/b", "/workspace/b/c.txt"],
    );
    const patch = "--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-alpha\n+ALPHA\n";
    assert.deepEqual(structured(await call("workspace_patch_apply", { patch })).files, [{ path: "/workspace/a.txt", status: "modified", hunks: 1 }]);
    const refused = failure(await call("workspace_patch_apply", { patch }));
    assert.equal(refused.code, "patch_failed");
    assert.match(refused.message, /hunk 1 of 1/);
    assert.match(refused.hint, /workspace_file_read/);
    const diff = structured(await call("workspace_diff", {}));
    assert.deepEqual([diff.added, diff.modified, diff.deleted], [1, 1, 0]);
    assert.match(String(diff.diff), /-alpha\n\+ALPHA/);
    assert.equal(failure(await call("workspace_file_read", { path: "../etc/shadow" })).code, "invalid_argument");
    assert.equal(failure(await call("workspace_file_read", { path: "missing" })).code, "file_not_found");

    const out = join(scratch, "exported.tgz");
    const exported = structured(await call("workspace_export", { output_path: out }));
    assert.deepEqual([exported.format, exported.files, exported.output_path], ["tgz", 2, join(realpathSync(scratch), "exported.tgz")]);
    // Outside the shared directory, nothing is written.
    const outside = failure(await call("workspace_export", { output_path: "/tmp/pyro-mcp-export-outside" }));
    assert.equal(outside.code, "source_refused");
    assert.equal(existsSync("/tmp/pyro-mcp-export-outside"), false);
    assert.deepEqual(structured(await call("workspace_delete", {})), { workspace_id: id, deleted: true });
  });

  test("workspace-full, after listTools: update, summary, snapshots, reset, stop/start with memory, fork", async () => {
    const { client: full } = await stdioClient("workspace-full");
    try {
      await full.listTools();
      const call = async (name: string, args: Record<string, unknown>) => full.callTool({ name, arguments: args });
      const ws = structured(await call("workspace_create", { environment: "debian:12", name: "state", labels: { task: "t" } }));
      const id = String(ws.workspace_id);
      assert.equal(ws.boot_mode, "restore");
      const updated = structured(await call("workspace_update", { workspace_id: id, name: null, labels: { more: "x" }, clear_labels: ["task"], ttl_seconds: 900 }));
      assert.deepEqual([updated.name, updated.labels, updated.ttl_seconds], [null, { more: "x" }, 900]);
      assert.deepEqual(
        (structured(await call("workspace_list", { labels: { more: "x" } })).workspaces as { workspace_id: string }[]).map((w) => w.workspace_id),
        [id],
      );
      await call("workspace_file_write", { workspace_id: id, path: "v.txt", text: "1\n" });
      assert.deepEqual(structured(await call("snapshot_create", { workspace_id: id, snapshot_name: "v1" })).snapshot, {
        name: "v1",
        created_at: (structured(await call("snapshot_list", { workspace_id: id })).snapshots as { name: string; created_at: string }[])[1]?.created_at,
      });
      await call("workspace_file_write", { workspace_id: id, path: "v.txt", text: "2\n" });
      const reset = structured(await call("workspace_reset", { workspace_id: id, snapshot: "v1" }));
      assert.deepEqual([reset.state, reset.boot_mode], ["started", "cold"]);
      assert.equal(structured(await call("workspace_file_read", { workspace_id: id, path: "v.txt" })).text, "1\n");
      assert.equal(failure(await call("workspace_reset", { workspace_id: id, snapshot: "nope" })).code, "snapshot_not_found");
      assert.deepEqual(structured(await call("snapshot_delete", { workspace_id: id, snapshot_name: "v1" })), { workspace_id: id, snapshot_name: "v1", deleted: true });

      await call("workspace_exec", { workspace_id: id, command: "sleep 1000 >/dev/null 2>&1 & echo $! > /workspace/pid" });
      assert.equal(structured(await call("workspace_stop", { workspace_id: id })).state, "stopped");
      assert.equal(structured(await call("workspace_start", { workspace_id: id })).boot_mode, "resume");
      assert.equal(structured(await call("workspace_exec", { workspace_id: id, command: "kill -0 $(cat /workspace/pid) && echo alive" })).stdout, "alive\n");

      const forked = structured(await call("workspace_fork", { workspace_id: id, names: ["f1"] }));
      const child = (forked.workspaces as { workspace_id: string; name: string }[])[0];
      assert.equal(child?.name, "f1");
      assert.equal(structured(await call("workspace_exec", { workspace_id: child?.workspace_id, command: "cat v.txt" })).stdout, "1\n");
      const summary = structured(await call("workspace_summary", { workspace_id: id }));
      assert.deepEqual(
        (summary.events as { kind: string }[]).map((e) => e.kind),
        ["reset", "snapshot_delete", "stop", "start", "fork"],
      );
      for (const w of [child?.workspace_id, id]) structured(await call("workspace_delete", { workspace_id: w }));
      const gone = failure(await call("workspace_status", { workspace_id: id }));
      assert.equal(gone.code, "workspace_not_found");
      assert.match(gone.message, /was deleted at/);
    } finally {
      await full.close();
    }
  });

  test("a seed_path outside the allowed roots is refused, symlinks included, before any VM exists", async () => {
    const link = join(scratch, "sneaky");
    symlinkSync("/etc", link);
    const nested = join(scratch, "nested");
    mkdirSync(nested);
    symlinkSync("../../../../../../etc/passwd", join(nested, "passwd"));
    for (const seed of ["/etc", link, join(nested, "passwd"), join(scratch, "..", "..", "etc"), "../../../../etc"]) {
      const error = failure(await client.callTool({ name: "workspace_create", arguments: { environment: "debian:12", seed_path: seed } }));
      assert.equal(error.code, "source_refused", seed);
      assert.ok(error.message.includes(realpathSync(scratch)), `${seed}: the message names the shared directory: ${error.message}`);
      assert.match(error.hint, /--allow-root/);
    }
    assert.deepEqual(vmDirsUnder(stateDir), []);
  });

  test("cancelling a running vm_run ends it within seconds and leaves no QEMU", async () => {
    const controller = new AbortController();
    const started = Date.now();
    const call = client.callTool({ name: "vm_run", arguments: { environment: "debian:12", command: "echo started; sleep 60" } }, undefined, {
      signal: controller.signal,
      timeout: 120_000,
      onprogress: (p) => {
        if (String(p.message).includes("started")) controller.abort();
      },
    });
    await assert.rejects(call);
    // The server cleans up after the cancellation arrives.
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline && (qemuProcessesUnder(stateDir).length || vmDirsUnder(stateDir).length)) await sleep(100);
    assert.deepEqual(vmProcessesUnder(stateDir), []);
    assert.deepEqual(vmDirsUnder(stateDir), []);
    assert.ok(Date.now() - started < 40_000);
  });

  test("workspace-full, after listTools: shells, services, published ports and secrets; no result carries a secret's value", async () => {
    const { client: full } = await stdioClient("workspace-full");
    const token = `mcp-${Date.now()}-secret-value`;
    const seen: string[] = [];
    try {
      await full.listTools();
      const call = async (name: string, args: Record<string, unknown>) => {
        const result = await full.callTool({ name, arguments: args });
        seen.push(JSON.stringify(result));
        return result;
      };
      writeFileSync(join(scratch, "token.txt"), "from-a-file\n");
      const ws = structured(
        await call("workspace_create", {
          environment: "debian:12",
          network_policy: "egress+published-ports",
          secrets: [{ name: "TOKEN", value: token }, { name: "FILED", file_path: join(scratch, "token.txt") }],
        }),
      );
      const id = String(ws.workspace_id);
      assert.deepEqual(ws.secret_names, ["FILED", "TOKEN"]);
      // A secret file outside the shared directories is refused like a seed would be.
      assert.equal(failure(await call("workspace_create", { environment: "debian:12", secrets: [{ name: "X", file_path: "/etc/shadow" }] })).code, "source_refused");

      const shell = structured(await call("shell_open", { workspace_id: id, secret_env: { T: "TOKEN" } }));
      const shellId = String(shell.shell_id);
      structured(await call("shell_write", { workspace_id: id, shell_id: shellId, input: "echo \"mcp-shell:$T\"; sleep 100" }));
      let output = "";
      let cursor = 0;
      for (let i = 0; i < 20 && !/mcp-shell:/.test(output); i++) {
        const read = structured(await call("shell_read", { workspace_id: id, shell_id: shellId, cursor, plain: true, wait_for_idle_ms: 300 }));
        output += String(read.output);
        cursor = Number(read.next_cursor);
      }
      assert.match(output, /mcp-shell:\[REDACTED:TOKEN\]/);
      assert.deepEqual(structured(await call("shell_signal", { workspace_id: id, shell_id: shellId, signal: "INT" })).signal, "SIGINT");
      assert.equal(structured(await call("shell_close", { workspace_id: id, shell_id: shellId })).closed, true);
      assert.equal(failure(await call("shell_read", { workspace_id: id, shell_id: shellId })).code, "shell_not_found");

      await call("workspace_file_write", {
        workspace_id: id,
        path: "srv.pl",
        text: 'use IO::Socket::INET; my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 8090, Listen => 5, ReuseAddr => 1) or die; $| = 1; print "up $ENV{T}\\n"; while (my $c = $s->accept) { <$c>; print $c "HTTP/1.0 200 OK\\r\\n\\r\\nmcp-page"; close $c }\n',
      });
      const svc = structured(
        await call("service_start", {
          workspace_id: id,
          name: "web",
          command: "perl srv.pl",
          readiness: { type: "tcp", port: 8090, timeout_seconds: 60 },
          publish: [{ guest_port: 8090 }],
          secret_env: { T: "TOKEN" },
        }),
      );
      assert.equal(svc.state, "ready");
      const hostPort = (svc.published_ports as { host_port: number }[])[0]!.host_port;
      assert.equal(await (await fetch(`http://127.0.0.1:${hostPort}/`)).text(), "mcp-page");
      assert.equal((structured(await call("service_list", { workspace_id: id })).services as unknown[]).length, 1);
      assert.equal(structured(await call("service_status", { workspace_id: id, name: "web" })).state, "ready");
      assert.match(String(structured(await call("service_logs", { workspace_id: id, name: "web", tail_lines: 5 })).output), /up \[REDACTED:TOKEN\]/);
      assert.equal(structured(await call("service_stop", { workspace_id: id, name: "web" })).state, "exited");
      assert.equal(failure(await call("service_status", { workspace_id: id, name: "nope" })).code, "service_not_found");
      const exec = structured(await call("workspace_exec", { workspace_id: id, command: "echo $T", secret_env: { T: "FILED" } }));
      assert.equal(exec.stdout, "[REDACTED:FILED]\n");
      structured(await call("workspace_delete", { workspace_id: id }));
      for (const text of seen) assert.ok(!text.includes(token) && !text.includes("from-a-file"), `a result carried a secret: ${text.slice(0, 300)}`);
    } finally {
      await full.close();
    }
  });

  test("workspace-full, after listTools: every refusal of the VM tools is an isError result with a hint", async () => {
    const { client: full } = await stdioClient("workspace-full");
    try {
      await full.listTools();
      const missing = "0123456789ab";
      for (const name of ["vm_status", "vm_start", "vm_stop", "vm_delete", "vm_network_info"]) {
        assert.equal(failure(await full.callTool({ name, arguments: { vm_id: missing } })).code, "vm_not_found", name);
      }
      assert.equal(failure(await full.callTool({ name: "vm_exec", arguments: { vm_id: missing, command: "true" } })).code, "vm_not_found");
      assert.equal(failure(await full.callTool({ name: "vm_create", arguments: { environment: "debian:99" } })).code, "unknown_environment");
      // A command refused because the VM is not started leaves the VM alone.
      const vm = structured(await full.callTool({ name: "vm_create", arguments: { environment: "debian:12" } }));
      const refused = failure(await full.callTool({ name: "vm_exec", arguments: { vm_id: vm.vm_id, command: "true" } }));
      assert.equal(refused.code, "vm_not_running");
      assert.equal(structured(await full.callTool({ name: "vm_status", arguments: { vm_id: vm.vm_id } })).state, "created");
      assert.deepEqual(structured(await full.callTool({ name: "vm_delete", arguments: { vm_id: vm.vm_id } })), { vm_id: vm.vm_id, deleted: true });
      for (const name of ["workspace_status", "workspace_logs", "workspace_delete"]) {
        assert.equal(failure(await full.callTool({ name, arguments: { workspace_id: missing } })).code, "workspace_not_found", name);
      }
      assert.equal(
        failure(await full.callTool({ name: "workspace_sync_push", arguments: { workspace_id: missing, source_path: scratch } })).code,
        "workspace_not_found",
      );
      assert.deepEqual(structured(await full.callTool({ name: "vm_reap_expired", arguments: {} })), { reaped_vm_ids: [], count: 0 });
    } finally {
      await full.close();
    }
  });

  test("by default the server keeps a VM warm per shape vm_run used, serves the next vm_run from it, and deletes it on exit", async () => {
    const { PYRO_POOL_SIZE: _off, ...env } = serverEnv;
    const transport = new StdioClientTransport({ command: process.execPath, args: [PYRO_BIN, "mcp", "serve"], env, stderr: "pipe" });
    const own = new Client({ name: "pyro-test", version: "1.0.0" });
    await own.connect(transport);
    const child = (transport as unknown as { _process: ChildProcess })._process;
    const exited = new Promise<number | null>((resolvePromise) => child.once("exit", (code) => resolvePromise(code)));
    try {
      await own.listTools();
      const pooled = () =>
        vmDirsUnder(stateDir).filter((dir) => {
          try {
            return (JSON.parse(readFileSync(join(stateDir, "vms", dir, "vm.json"), "utf8")) as { state: string }).state === "pooled";
          } catch {
            return false;
          }
        });
      assert.equal(structured(await own.callTool({ name: "vm_run", arguments: { environment: "debian:12", command: "echo first" } })).stdout, "first\n");
      for (let i = 0; i < 600 && pooled().length === 0; i++) await sleep(100);
      assert.equal(pooled().length, 1, "one VM is kept warm after the first run");
      const messages: string[] = [];
      const second = structured(
        await own.callTool({ name: "vm_run", arguments: { environment: "debian:12", command: "echo second" } }, undefined, { onprogress: (p) => messages.push(String(p.message)) }),
      );
      assert.equal(second.stdout, "second\n");
      assert.ok(messages.some((m) => m.includes("from the pool")), messages.join(" | "));
      for (let i = 0; i < 600 && pooled().length === 0; i++) await sleep(100);
      assert.equal(pooled().length, 1, "refilled after the claim");
    } finally {
      await own.close().catch(() => undefined);
    }
    assert.equal(await exited, 0);
    assert.deepEqual(vmProcessesUnder(stateDir), []);
    assert.deepEqual(vmDirsUnder(stateDir), []);
  });

  for (const how of ["SIGTERM", "SIGINT", "stdin EOF"] as const) {
    test(`${how} during a long vm_run: the server cancels it, removes its VM and exits 0 within 5 s`, async () => {
      const transport = new StdioClientTransport({ command: process.execPath, args: [PYRO_BIN, "mcp", "serve"], env: serverEnv, stderr: "pipe" });
      const own = new Client({ name: "pyro-test", version: "1.0.0" });
      await own.connect(transport);
      await own.listTools();
      // The transport's own child process: its exit status is what an MCP host sees.
      const child = (transport as unknown as { _process: ChildProcess })._process;
      const exitedCode = new Promise<number | null>((resolvePromise) => child.once("exit", (code) => resolvePromise(code)));
      let started!: () => void;
      const running = new Promise<void>((r) => (started = r));
      const call = own
        .callTool({ name: "vm_run", arguments: { environment: "debian:12", command: "echo started; sleep 120" } }, undefined, {
          timeout: 180_000,
          onprogress: (p) => {
            if (String(p.message).includes("started")) started();
          },
        })
        .catch(() => undefined);
      await running;
      assert.equal(qemuProcessesUnder(stateDir).length, 1);
      const signalled = Date.now();
      if (how === "stdin EOF") child.stdin!.end();
      else child.kill(how);
      assert.equal(await exitedCode, 0);
      const seconds = (Date.now() - signalled) / 1000;
      assert.ok(seconds < 5, `exited after ${seconds} s`);
      await call;
      await own.close().catch(() => undefined);
      assert.deepEqual(vmProcessesUnder(stateDir), []);
      assert.deepEqual(vmDirsUnder(stateDir), []);
    });
  }

  test("a model sees 16 KiB per stream, head and tail; workspace_logs with sequence returns it whole", async () => {
    const ws = structured(await client.callTool({ name: "workspace_create", arguments: { environment: "debian:12" } }));
    const id = String(ws.workspace_id);
    try {
      const result = structured(await client.callTool({ name: "workspace_exec", arguments: { workspace_id: id, command: "seq 1 30000" } }));
      const stdout = String(result.stdout);
      assert.equal(result.stdout_truncated, true);
      assert.ok(Buffer.byteLength(stdout) < 17 * 1024, `${Buffer.byteLength(stdout)} bytes shown`);
      assert.match(stdout, /^1\n2\n/);
      assert.match(stdout, /\n30000\n$/);
      assert.match(stdout, new RegExp(`bytes cut from the middle; workspace_logs with sequence ${String(result.sequence)} returns it whole`));
      const whole = structured(await client.callTool({ name: "workspace_logs", arguments: { workspace_id: id, sequence: result.sequence } }));
      const [entry] = whole.entries as { stdout: string; stdout_truncated: boolean }[];
      assert.equal(entry!.stdout.split("\n").length, 30001);
      assert.equal(entry!.stdout_truncated, false);
      const run = structured(await client.callTool({ name: "vm_run", arguments: { environment: "debian:12", command: "seq 1 30000 >&2" } }));
      assert.equal(run.stderr_truncated, true);
      assert.match(String(run.stderr), /bytes cut from the middle; rerun with less output/);
    } finally {
      await client.callTool({ name: "workspace_delete", arguments: { workspace_id: id } });
    }
  });

  test("garbage on stdin gets protocol errors; closing stdin exits cleanly", async () => {
    const child = spawn(process.execPath, [PYRO_BIN, "mcp", "serve"], { env: serverEnv, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => (stdout += c));
    child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
    child.stdin.write("this is not json\n{\"also\": broken\n");
    child.stdin.write(`${JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" })}\n`);
    await sleep(1500);
    child.stdin.end();
    const code = await new Promise<number | null>((r) => child.on("exit", (c) => r(c)));
    assert.equal(code, 0, stderr);
    const replies = stdout.trim().split("\n").map((line) => JSON.parse(line) as { id: unknown; error?: { code: number }; result?: unknown });
    assert.equal(replies.filter((r) => r.error?.code === -32700).length, 2, stdout);
    assert.ok(replies.some((r) => r.id === 1 && r.result !== undefined), "the server still answered a valid request");
    assert.match(stderr, /protocol error/);
    assert.deepEqual(vmProcessesUnder(stateDir), []);
  });
});

describe("pyro mcp serve over Streamable HTTP", () => {
  async function serveHttp(args: string[], env: Record<string, string> = {}): Promise<{ url: string; stop: () => Promise<void>; stderr: () => string }> {
    const child = spawn(process.execPath, [PYRO_BIN, "mcp", "serve", "--transport", "http", "--port", "0", ...args], {
      env: { ...serverEnv, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    const url = await new Promise<string>((resolvePromise, reject) => {
      child.stderr.setEncoding("utf8").on("data", (c: string) => {
        stderr += c;
        const match = /serving profile \S+ on (http:\/\/\S+)/.exec(stderr);
        if (match?.[1]) resolvePromise(match[1]);
      });
      child.on("exit", () => reject(new Error(`server exited: ${stderr}`)));
    });
    return {
      url,
      stderr: () => stderr,
      stop: async () => {
        child.kill("SIGTERM");
        await new Promise((r) => child.on("exit", r));
      },
    };
  }

  test("on loopback too, every request needs the token; a foreign Host is refused", async () => {
    const server = await serveHttp(["--profile", "vm-run"], { PYRO_MCP_TOKEN: "" });
    try {
      const token = /Bearer <token>\): (\S+)/.exec(server.stderr())?.[1];
      assert.ok(token, server.stderr());
      const tokenFile = /token file (\S+)/.exec(server.stderr())?.[1];
      assert.ok(tokenFile, server.stderr());
      assert.equal(readFileSync(tokenFile, "utf8").trim(), token, "local clients can read the token from its file");
      assert.equal(statSync(tokenFile).mode & 0o777, 0o600);

      const anonymous = new Client({ name: "pyro-test", version: "1.0.0" });
      await assert.rejects(anonymous.connect(new StreamableHTTPClientTransport(new URL(server.url))), /401|invalid_token|nauthorized/);
      const wrong = new Client({ name: "pyro-test", version: "1.0.0" });
      await assert.rejects(wrong.connect(new StreamableHTTPClientTransport(new URL(server.url), { requestInit: { headers: { authorization: "Bearer nope" } } })), /401|invalid_token|nauthorized/);
      const client = new Client({ name: "pyro-test", version: "1.0.0" });
      await client.connect(new StreamableHTTPClientTransport(new URL(server.url), { requestInit: { headers: { authorization: `Bearer ${token}` } } }));
      assert.deepEqual((await client.listTools()).tools.map((t) => t.name), ["vm_run"]);
      await client.close();

      const init = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-03-26", capabilities: {}, clientInfo: { name: "x", version: "1" } } });
      const headers = { "content-type": "application/json", accept: "application/json, text/event-stream" };
      const noToken = await fetch(server.url, { method: "POST", headers: { ...headers, origin: "http://evil.example" }, body: init });
      assert.equal(noToken.status, 401);
      // A DNS-rebinding page reaches 127.0.0.1 under its own name: the Host header gives it away, token or not.
      const target = new URL(server.url);
      const rebound = await new Promise<number>((resolvePromise, reject) => {
        const req = request(
          { host: target.hostname, port: target.port, path: target.pathname, method: "POST", headers: { ...headers, authorization: `Bearer ${token}`, host: `evil.example:${target.port}` } },
          (res) => {
            res.resume();
            resolvePromise(res.statusCode ?? 0);
          },
        );
        req.on("error", reject);
        req.end(init);
      });
      assert.equal(rebound, 403);
    } finally {
      await server.stop();
    }
    assert.match(server.stderr(), /token file/);
  });

  test("the token can come from PYRO_MCP_TOKEN, also beyond loopback; its file goes when the server stops", async () => {
    const token = "s3cret-token-for-the-test";
    const server = await serveHttp(["--host", "0.0.0.0", "--profile", "vm-run"], { PYRO_MCP_TOKEN: token });
    const tokenFile = /token file (\S+)/.exec(server.stderr())?.[1];
    try {
      assert.doesNotMatch(server.stderr(), new RegExp(token), "a token the operator chose is not echoed");
      const url = new URL(server.url.replace("0.0.0.0", "127.0.0.1"));
      const anonymous = new Client({ name: "pyro-test", version: "1.0.0" });
      await assert.rejects(anonymous.connect(new StreamableHTTPClientTransport(url)), /401|invalid_token|nauthorized/);
      const authorized = new Client({ name: "pyro-test", version: "1.0.0" });
      await authorized.connect(new StreamableHTTPClientTransport(url, { requestInit: { headers: { authorization: `Bearer ${token}` } } }));
      assert.deepEqual((await authorized.listTools()).tools.map((t) => t.name), ["vm_run"]);
      await authorized.close();
    } finally {
      await server.stop();
    }
    assert.ok(tokenFile && !existsSync(tokenFile), "the token file is removed on shutdown");
  });
});
