import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Pyro, type Workspace } from "../../src/index.js";
import { isSameProcessAlive } from "../../src/util/proc.js";
import { ensureEnvironment, rejectsWith, removeDir, runCli, tempStateDir } from "../helpers.js";

const stateDir = tempStateDir();
const scratch = mkdtempSync(join(tmpdir(), "pyro-work-"));
const pyro = new Pyro({ stateDir });

after(async () => {
  for (const ws of await pyro.listWorkspaces().catch(() => [])) await pyro.deleteWorkspace(ws.workspaceId).catch(() => undefined);
  await pyro.close();
  removeDir(stateDir);
  removeDir(scratch);
});

/** A small HTTP/1.0 server: debian:12 has perl with IO::Socket, not python. It logs each request line. */
const SERVER_PL = `use strict; use IO::Socket::INET; $SIG{PIPE} = "IGNORE";
my $port = shift // 8080;
my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => $port, Listen => 16, ReuseAddr => 1) or die "listen on $port: $!\\n";
$| = 1;
print "listening on $port\\n";
while (my $c = $s->accept) {
  my $req = <$c> // "";
  while (my $l = <$c>) { last if $l =~ /^\\r?\\n$/ }
  my $body = $ENV{BODY} // "hello from the guest\\n";
  print $c "HTTP/1.0 200 OK\\r\\nContent-Type: text/plain\\r\\nContent-Length: " . length($body) . "\\r\\n\\r\\n$body";
  close $c;
  print "served $req";
}
`;

/** Whether something accepts connections on 127.0.0.1:port of this host. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolvePromise) => {
    const socket = connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolvePromise(true);
    });
    socket.once("error", () => resolvePromise(false));
  });
}

/** Reads a shell until `pattern` shows in its (plain) output, from `cursor`; returns the text and the next cursor. */
async function readUntil(ws: Workspace, shellId: string, cursor: number, pattern: RegExp, tries = 20): Promise<{ text: string; cursor: number }> {
  let text = "";
  for (let i = 0; i < tries; i++) {
    const read = await pyro.readShell(ws.workspaceId, shellId, { cursor, plain: true, waitForIdleMs: 300 });
    text += read.output;
    cursor = read.nextCursor;
    if (pattern.test(text)) return { text, cursor };
  }
  assert.fail(`shell output never matched ${pattern}: ${JSON.stringify(text.slice(-2000))}`);
}

describe("shells, services, published ports and secrets, on real guests", () => {
  let ws: Workspace;
  const token = `tok-${randomBytes(12).toString("hex")}`;
  const fileSecret = `file-${randomBytes(12).toString("hex")}`;

  before(async () => {
    await ensureEnvironment();
    writeFileSync(join(scratch, "db-password"), `${fileSecret}\n`, { mode: 0o600 });
    ws = await pyro.createWorkspace({
      environment: "debian:12",
      networkPolicy: "egress+published-ports",
      secrets: [
        { name: "API_TOKEN", value: token },
        { name: "DB_PASSWORD", filePath: join(scratch, "db-password") },
      ],
    });
    assert.deepEqual(ws.secretNames, ["API_TOKEN", "DB_PASSWORD"]);
    await ws.writeFile("server.pl", SERVER_PL);
  });

  test("a shell keeps its state, is a real terminal, and Ctrl-C gets the prompt back", async () => {
    const shell = await pyro.openShell(ws.workspaceId, { cols: 100, rows: 40 });
    assert.match(shell.shellId, /^sh-[0-9a-f]{12}$/);
    await pyro.writeShell(ws.workspaceId, shell.shellId, "mkdir -p sub && cd sub; export X=1");
    await pyro.writeShell(ws.workspaceId, shell.shellId, "echo \"at=$(pwd) x=$X\"; tty; stty size");
    let { text, cursor } = await readUntil(ws, shell.shellId, 0, /at=\/workspace\/sub x=1[\s\S]*\/dev\/pts\/\d+[\s\S]*40 100/);
    assert.ok(!text.includes("\x1b"), "plain output has no escape sequences");

    await pyro.writeShell(ws.workspaceId, shell.shellId, "sleep 100");
    // Only once sleep is the foreground job: an INT before that reaches bash at its prompt.
    for (let i = 0; i < 50 && (await ws.exec("grep -qx sleep /proc/[0-9]*/comm")).exitCode !== 0; i++) await new Promise((r) => setTimeout(r, 100));
    await pyro.signalShell(ws.workspaceId, shell.shellId, "INT");
    await pyro.writeShell(ws.workspaceId, shell.shellId, "echo back-at-$(basename $PWD)");
    ({ text, cursor } = await readUntil(ws, shell.shellId, cursor, /back-at-sub/));

    // A second shell has its own state.
    const other = await pyro.openShell(ws.workspaceId, { cwd: "/workspace" });
    await pyro.writeShell(ws.workspaceId, other.shellId, "echo \"other=$(pwd) x=${X:-unset}\"");
    await readUntil(ws, other.shellId, 0, /other=\/workspace x=unset/);
    const listed = await pyro.listShells(ws.workspaceId);
    assert.deepEqual(listed.map((s) => s.shellId).sort(), [shell.shellId, other.shellId].sort());

    // More output than the shell keeps (1 MiB): what was dropped is reported, not silently lost.
    await pyro.writeShell(ws.workspaceId, other.shellId, "head -c 3000000 /dev/zero | tr '\\0' a; echo; echo done-big");
    let sawDropped = 0;
    let otherCursor = 0;
    let big = "";
    for (let i = 0; i < 30 && !/done-big/.test(big); i++) {
      const read = await pyro.readShell(ws.workspaceId, other.shellId, { cursor: otherCursor, maxChars: 1024 * 1024, waitForIdleMs: 500 });
      sawDropped += read.droppedChars;
      otherCursor = read.nextCursor;
      big += read.output.slice(-100);
    }
    assert.ok(sawDropped > 1_000_000, `dropped ${sawDropped}`);
    assert.ok(otherCursor > 3_000_000, `cursor ${otherCursor}`);

    const raw = await pyro.readShell(ws.workspaceId, shell.shellId, { cursor: 0 });
    assert.ok(raw.output.includes("\r\n"), "without plain, the terminal's own bytes (CR LF) are returned");
    const closed = await pyro.closeShell(ws.workspaceId, shell.shellId);
    assert.equal(closed.closed, true);
    await rejectsWith(pyro.readShell(ws.workspaceId, shell.shellId), "shell_not_found");
    await pyro.closeShell(ws.workspaceId, other.shellId);
    await rejectsWith(pyro.readShell(ws.workspaceId, "sh-../../etc"), "invalid_argument");
  });

  test("an HTTP service becomes ready, is reachable on a published host port, and the port closes with it", async () => {
    const web = await pyro.startService(ws.workspaceId, {
      name: "web",
      command: "perl server.pl 8080",
      readiness: { type: "http", url: "http://127.0.0.1:8080/", timeoutSeconds: 60 },
      publish: [{ guestPort: 8080 }],
    });
    assert.equal(web.state, "ready");
    const port = web.publishedPorts[0];
    assert.ok(port && port.host === "127.0.0.1" && port.guestPort === 8080 && port.hostPort > 0, JSON.stringify(web.publishedPorts));
    const page = await fetch(`http://127.0.0.1:${port.hostPort}/hello`);
    assert.equal(page.status, 200);
    assert.equal(await page.text(), "hello from the guest\n");
    // Several at once, over one forwarder.
    const bodies = await Promise.all(Array.from({ length: 8 }, () => fetch(`http://127.0.0.1:${port.hostPort}/`).then((r) => r.text())));
    assert.deepEqual(new Set(bodies), new Set(["hello from the guest\n"]));

    assert.deepEqual((await pyro.networkInfoVm(ws.workspaceId)).publishedPorts, [port]);
    const status = await pyro.serviceStatus(ws.workspaceId, "web");
    assert.deepEqual([status.state, status.publishedPorts], ["ready", [port]]);
    assert.match((await pyro.serviceLogs(ws.workspaceId, "web", { tailLines: 3 })).output, /served GET \/ HTTP\/1.1/);
    const summary = await pyro.summaryWorkspace(ws.workspaceId);
    assert.match(summary.text, /service_start: web \(published 127\.0\.0\.1:\d+ → 8080\)/);
    assert.match(summary.text, /services: web \(ready, 127\.0\.0\.1:\d+ → 8080\)/);
    assert.deepEqual(summary.services?.find((x) => x.name === "web")?.publishedPorts, [{ guestPort: 8080, hostPort: port.hostPort }]);

    const stopped = await pyro.stopService(ws.workspaceId, "web");
    assert.equal(stopped.state, "exited");
    assert.deepEqual(stopped.publishedPorts, []);
    assert.equal(await listening(port.hostPort), false, "the host port is closed after service_stop");
    assert.deepEqual((await pyro.networkInfoVm(ws.workspaceId)).publishedPorts, []);
  });

  test("a service that exits at once fails readiness with its log tail; bad specs change nothing", async () => {
    const error = await rejectsWith(
      pyro.startService(ws.workspaceId, { name: "broken", command: "echo cannot-start-because-of-x; exit 3", readiness: { type: "tcp", port: 9999, timeoutSeconds: 30 } }),
      "service_failed",
      /exited with code 3[\s\S]*cannot-start-because-of-x/,
    );
    assert.match(error.hint, /log tail/);
    assert.equal((await pyro.serviceStatus(ws.workspaceId, "broken")).exitCode, 3);
    await rejectsWith(pyro.startService(ws.workspaceId, { name: "slow", command: "sleep 100", readiness: { type: "file", path: "never", timeoutSeconds: 2 } }), "service_failed", /not ready after 2 s/);
    assert.equal((await pyro.serviceStatus(ws.workspaceId, "slow")).state, "exited");
    await rejectsWith(pyro.startService(ws.workspaceId, { name: "Bad Name", command: "true" }), "invalid_argument");
    await rejectsWith(pyro.startService(ws.workspaceId, { name: "x", command: "true", readiness: { type: "http", url: "file:///etc/passwd" } }), "invalid_argument");
    await rejectsWith(pyro.serviceStatus(ws.workspaceId, "nope"), "service_not_found");
    // Two processes starting one name at once: one service runs, the other call is refused.
    const both = await Promise.allSettled([0, 1].map(() => pyro.startService(ws.workspaceId, { name: "twin", command: "sleep 1000" })));
    assert.deepEqual(both.map((r) => r.status).sort(), ["fulfilled", "rejected"]);
    assert.match(String((both.find((r) => r.status === "rejected") as PromiseRejectedResult).reason), /already running/);
    await pyro.stopService(ws.workspaceId, "twin");
  });

  test("secrets reach commands, shells and services only when asked, and every returned byte is redacted", async () => {
    const streamed: Buffer[] = [];
    const run = await pyro.execWorkspace(ws.workspaceId, {
      command: "echo \"token=$T\"; echo \"db=$D\" >&2; printf %s \"$T\" > /dev/shm/copy; cat /dev/shm/copy; echo; echo literal-" + token,
      secretEnv: { T: "API_TOKEN", D: "DB_PASSWORD" },
      onOutput: (_stream, chunk) => streamed.push(chunk),
    });
    assert.equal(run.stdout, `token=[REDACTED:API_TOKEN]\n[REDACTED:API_TOKEN]\nliteral-[REDACTED:API_TOKEN]\n`);
    assert.equal(run.stderr, "db=[REDACTED:DB_PASSWORD]\n");
    assert.ok(!Buffer.concat(streamed).toString().includes(token), "streamed output is redacted too");
    // Without secret_env nothing is exposed, and the secret files are root's only.
    const plain = await ws.exec("echo \"[${T:-none}]\"; stat -c '%a %U' /run/pyro-secrets /run/pyro-secrets/API_TOKEN");
    assert.equal(plain.stdout, "[none]\n700 root\n400 root\n");
    await rejectsWith(pyro.execWorkspace(ws.workspaceId, { command: "true", secretEnv: { T: "NOPE" } }), "invalid_argument", /no secret "NOPE"/);

    const shell = await pyro.openShell(ws.workspaceId, { secretEnv: { T: "API_TOKEN" } });
    await pyro.writeShell(ws.workspaceId, shell.shellId, "echo \"shell-sees-$T\"");
    const { text } = await readUntil(ws, shell.shellId, 0, /shell-sees-\[REDACTED:API_TOKEN\]/);
    assert.ok(!text.includes(token));
    const rawRead = await pyro.readShell(ws.workspaceId, shell.shellId, { cursor: 0 });
    assert.ok(!rawRead.output.includes(token));
    await pyro.closeShell(ws.workspaceId, shell.shellId);

    await pyro.startService(ws.workspaceId, { name: "leaky", command: "echo \"svc-$T\"; sleep 1000", secretEnv: { T: "API_TOKEN" }, readiness: { type: "command", command: "true" } });
    const logs = await pyro.serviceLogs(ws.workspaceId, "leaky");
    assert.match(logs.output, /svc-\[REDACTED:API_TOKEN\]/);
    assert.ok(!JSON.stringify(await pyro.listServices(ws.workspaceId)).includes(token));
    await pyro.stopService(ws.workspaceId, "leaky");

    const journal = JSON.stringify(await pyro.logsWorkspace(ws.workspaceId));
    assert.ok(!journal.includes(token) && journal.includes("literal-[REDACTED:API_TOKEN]"));
    assert.ok(!JSON.stringify(await pyro.summaryWorkspace(ws.workspaceId)).includes(token));

    // On the host, the value is in the secrets file and nowhere else of the state directory.
    const hits = execFileSync("grep", ["-rlF", "--", token, stateDir], { encoding: "utf8" }).trim().split("\n");
    assert.deepEqual(hits, [join(stateDir, "vms", ws.workspaceId, "secrets.json")]);
    const secretsFile = readFileSync(join(stateDir, "vms", ws.workspaceId, "secrets.json"), "utf8");
    assert.deepEqual(Object.keys(JSON.parse(secretsFile) as object).sort(), ["API_TOKEN", "DB_PASSWORD"]);

    // A file in /workspace that holds the value reads back and exports redacted.
    await pyro.execWorkspace(ws.workspaceId, { command: "printf 'key: %s\\n' \"$T\" > leak.txt", secretEnv: { T: "API_TOKEN" } });
    assert.equal((await ws.readFile("leak.txt")).text, "key: [REDACTED:API_TOKEN]\n");
    const out = join(scratch, "leak-export");
    await ws.export(out, { path: "leak.txt" });
    assert.equal(readFileSync(out, "utf8"), "key: [REDACTED:API_TOKEN]\n");
    assert.ok(!JSON.stringify(await ws.diff()).includes(token));
  });

  test("services and their ports survive stop/start with memory; a killed forwarder is not reported; reset ends them and redelivers secrets", async () => {
    const keep = await pyro.startService(ws.workspaceId, { name: "keep", command: "perl server.pl 8085", readiness: { type: "tcp", port: 8085 }, publish: [{ guestPort: 8085 }] });
    const hostPort = keep.publishedPorts[0]!.hostPort;
    const shell = await pyro.openShell(ws.workspaceId);
    await pyro.writeShell(ws.workspaceId, shell.shellId, "export KEPT=yes");
    assert.equal(await (await fetch(`http://127.0.0.1:${hostPort}/`)).text(), "hello from the guest\n");

    await pyro.stopWorkspace(ws.workspaceId);
    assert.equal(await listening(hostPort), false, "a stopped workspace publishes nothing");
    const started = await pyro.startWorkspace(ws.workspaceId);
    assert.equal(started.bootMode, "resume");
    const after = await pyro.serviceStatus(ws.workspaceId, "keep");
    assert.equal(after.state, "ready");
    assert.deepEqual(after.publishedPorts.map((p) => p.hostPort), [hostPort], "the same host port again");
    assert.equal(await (await fetch(`http://127.0.0.1:${hostPort}/`)).text(), "hello from the guest\n");
    await pyro.writeShell(ws.workspaceId, shell.shellId, "echo kept=$KEPT");
    await readUntil(ws, shell.shellId, 0, /kept=yes/);

    // A forwarder killed from outside has released its port; status does not claim it.
    const record = JSON.parse(readFileSync(join(stateDir, "vms", ws.workspaceId, "vm.json"), "utf8")) as { published: { forwarder: { pid: number } }[] };
    process.kill(record.published[0]!.forwarder.pid, "SIGKILL");
    for (let i = 0; i < 50 && (await listening(hostPort)); i++) await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual((await pyro.serviceStatus(ws.workspaceId, "keep")).publishedPorts, []);
    assert.deepEqual((await pyro.networkInfoVm(ws.workspaceId)).publishedPorts, []);

    await pyro.resetWorkspace(ws.workspaceId);
    assert.deepEqual(await pyro.listServices(ws.workspaceId), []);
    await rejectsWith(pyro.readShell(ws.workspaceId, shell.shellId), "shell_not_found");
    const again = await pyro.execWorkspace(ws.workspaceId, { command: "echo $T", secretEnv: { T: "API_TOKEN" } });
    assert.equal(again.stdout, "[REDACTED:API_TOKEN]\n");
    await ws.writeFile("server.pl", SERVER_PL);
  });

  test("publishing needs egress+published-ports; the CLI drives shells, services and secrets", async () => {
    // --secret-file: a file that is not there is refused before anything boots; a real one reaches the guest, one trailing newline dropped.
    const cliSecret = `cli-${randomBytes(12).toString("hex")}`;
    const secretPath = join(scratch, "cli-token");
    writeFileSync(secretPath, `${cliSecret}\n`, { mode: 0o600 });
    const before = (await pyro.listWorkspaces()).length;
    const missing = await runCli(["workspace", "create", "debian:12", "--secret-file", `CLI_TOKEN=${join(scratch, "no-such-file")}`, "--json"], { stateDir });
    assert.equal(missing.code, 64, missing.stderr);
    assert.equal((JSON.parse(missing.stdout) as { error: { code: string } }).error.code, "invalid_argument");
    assert.match(missing.stderr, /--secret-file/);
    assert.equal((await pyro.listWorkspaces()).length, before, "nothing was created");
    const created = await runCli(["workspace", "create", "debian:12", "--secret-file", `CLI_TOKEN=${secretPath}`, "--json"], { stateDir });
    assert.equal(created.code, 0, created.stderr);
    const plain = JSON.parse(created.stdout) as { workspace_id: string; secret_names: string[] };
    assert.deepEqual(plain.secret_names, ["CLI_TOKEN"]);
    const sees = await runCli(["workspace", "exec", plain.workspace_id, "--secret-env", "T=CLI_TOKEN", "--json", "--", "sh", "-c", 'echo "t=$T"; printf %s "$T" | wc -c'], { stateDir });
    assert.equal(sees.code, 0, sees.stderr);
    assert.equal((JSON.parse(sees.stdout) as { stdout: string }).stdout, `t=[REDACTED:CLI_TOKEN]\n${cliSecret.length}\n`);
    assert.ok(!sees.stdout.includes(cliSecret) && !sees.stderr.includes(cliSecret));
    await rejectsWith(pyro.startService(plain.workspace_id, { name: "p", command: "sleep 100", publish: [{ guestPort: 80 }] }), "invalid_argument", /egress\+published-ports/);
    assert.deepEqual(await pyro.listServices(plain.workspace_id), []);
    await pyro.deleteWorkspace(plain.workspace_id);

    const id = ws.workspaceId;
    const env = { PYRO_STATE_DIR: stateDir };
    const opened = await runCli(["workspace", "shell", "open", id, "--id-only"], { stateDir, env });
    assert.equal(opened.code, 0, opened.stderr);
    const shellId = opened.stdout.trim();
    assert.equal((await runCli(["workspace", "shell", "write", id, shellId, "echo cli-$((6*7))"], { stateDir })).code, 0);
    let seen = "";
    for (let i = 0; i < 10 && !seen.includes("cli-42"); i++) {
      const read = await runCli(["workspace", "shell", "read", id, shellId, "--plain", "--wait-for-idle-ms", "300"], { stateDir });
      assert.equal(read.code, 0, read.stderr);
      seen = read.stdout;
    }
    assert.match(seen, /cli-42/);
    assert.equal((await runCli(["workspace", "shell", "close", id, shellId], { stateDir })).code, 0);
    const gone = await runCli(["workspace", "shell", "read", id, shellId], { stateDir });
    assert.equal(gone.code, 82, gone.stderr);

    const started = await runCli(["workspace", "service", "start", id, "cliweb", "--ready-tcp", "8081", "--publish", "8081", "--json", "--", "perl", "server.pl", "8081"], { stateDir });
    assert.equal(started.code, 0, started.stderr);
    const info = JSON.parse(started.stdout) as { published_ports: { host_port: number }[]; state: string };
    assert.equal(info.state, "ready");
    const hostPort = info.published_ports[0]!.host_port;
    assert.equal(await (await fetch(`http://127.0.0.1:${hostPort}/`)).text(), "hello from the guest\n");
    const forwarder = (JSON.parse(readFileSync(join(stateDir, "vms", id, "vm.json"), "utf8")) as { published: { forwarder: { pid: number; startTime: string } }[] }).published[0]!.forwarder;
    assert.equal(await isSameProcessAlive(forwarder.pid, forwarder.startTime), true);
    const logs = await runCli(["workspace", "service", "logs", id, "cliweb", "--tail-lines", "5"], { stateDir });
    assert.match(logs.stdout, /served GET/);
    const exec = await runCli(["workspace", "exec", id, "--secret-env", "T=API_TOKEN", "--", "sh", "-c", "echo $T"], { stateDir });
    assert.equal(exec.stdout, "[REDACTED:API_TOKEN]\n");

    // --ready-http: ready only once the URL answers in the guest; one that never answers is service_failed at its deadline.
    const ready = await runCli(["workspace", "service", "start", id, "clihttp", "--ready-http", "http://127.0.0.1:8082/ready", "--json", "--", "sh", "-c", "sleep 2; exec perl server.pl 8082"], { stateDir });
    assert.equal(ready.code, 0, ready.stderr);
    assert.equal((JSON.parse(ready.stdout) as { state: string }).state, "ready");
    assert.match((await runCli(["workspace", "service", "logs", id, "clihttp"], { stateDir })).stdout, /served GET \/ready/);
    const never = await runCli(["workspace", "service", "start", id, "clinever", "--ready-http", "http://127.0.0.1:8083/", "--ready-timeout-seconds", "2", "--json", "--", "sleep", "100"], { stateDir });
    assert.equal(never.code, 84, never.stderr);
    assert.equal((JSON.parse(never.stdout) as { error: { code: string } }).error.code, "service_failed");
    assert.match(never.stderr, /^hint: /m);

    // Deleting the workspace releases the published port and ends its forwarder.
    await pyro.deleteWorkspace(id);
    assert.equal(await listening(hostPort), false);
    // (A zombie waiting for its reaper counts as gone.)
    assert.equal(await isSameProcessAlive(forwarder.pid, forwarder.startTime), false);
  });
});
