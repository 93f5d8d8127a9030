import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createSocket } from "node:dgram";
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { networkInterfaces } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { inspectJail } from "../../src/backends/qemu/jail.js";
import { netdBinaryPath } from "../../src/config.js";
import { Pyro } from "../../src/index.js";
import { startNetworkHelper } from "../../src/network/helper.js";
import { helperPolicy } from "../../src/network/policy.js";
import { killAndWait } from "../../src/util/proc.js";
import { assertNothingLeft, ensureEnvironment, PYRO_BIN, removeDir, tempStateDir } from "../helpers.js";
import { arpRequest, desyncBurst, FakeNic, tcpSyn } from "../netframes.js";
import { startTcpServers, TestNetns, type TestServers } from "../netns.js";

const root = process.getuid?.() === 0;
const stateDir = tempStateDir();
const pyro = new Pyro({ stateDir });

/** Runs a guest command and returns its stdout, failing on a non-zero exit. */
async function guest(workspaceId: string, command: string): Promise<string> {
  const result = await pyro.execWorkspace(workspaceId, { command, timeoutSeconds: 60 });
  assert.equal(result.exitCode, 0, `${command}: ${result.stderr}`);
  return result.stdout;
}

/** A TCP connection attempt from the guest, with a deadline: "open" or "closed". */
const tryConnect = (host: string, port: number) => `timeout 5 bash -c 'exec 3<>/dev/tcp/${host}/${port}' 2>/dev/null && echo open || echo closed`;

async function waitFor(condition: () => boolean, ms = 5000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (condition()) return true;
    await sleep(50);
  }
  return condition();
}

after(() => {
  try {
    assertNothingLeft(stateDir);
  } finally {
    removeDir(stateDir);
  }
});

describe("a root guest's own frames, on this host's network, against loopback only", { skip: !root && "needs root (the helper drops to the QEMU user)" }, () => {
  let servers: TestServers;
  let closedPort = 0;
  let openedPort = 0;

  before(async () => {
    // Bound to every address of this host, so its own addresses would answer too if they were reachable.
    servers = await startTcpServers(["0.0.0.0:0", "127.0.0.1:0"]);
    [closedPort, openedPort] = servers.ports as [number, number];
  });

  after(() => servers.stop());

  test("crafted packets to 127.0.0.1, the gateway and this host's addresses reach nothing; an opened loopback port is reached", async () => {
    const dir = join(stateDir, "fake-nic");
    mkdirSync(dir, { recursive: true });
    const host = await inspectJail("qemu-system-x86_64");
    const helper = await startNetworkHelper({
      binary: netdBinaryPath(),
      passt: "passt",
      socket: join(dir, "net.sock"),
      cwd: dir,
      eventsPath: join(dir, "events.jsonl"),
      logPath: join(dir, "netd.log"),
      policyJson: helperPolicy({ policy: "egress", allowHosts: [] }, [{ prefix: "127.0.0.1/32", ports: [openedPort] }]),
      user: host.qemuUser,
      deadline: Date.now() + 10_000,
    });
    const nic = await FakeNic.connect(join(dir, "net.sock"));
    try {
      nic.send(arpRequest("10.0.2.2"));
      assert.ok(await waitFor(() => nic.received().length > 0), "passt answers ARP through the helper");
      const ownAddresses = Object.values(networkInterfaces())
        .flat()
        .filter((i) => i?.family === "IPv4")
        .map((i) => i.address);
      const hostile = ["127.0.0.1", "127.1.2.3", "10.0.2.2", "0.0.0.0", ...ownAddresses];
      for (const dst of hostile) nic.send(tcpSyn(dst, closedPort));
      // The opened port, addressed as 127.0.0.1 itself, stays closed: only the gateway alias leads there.
      nic.send(tcpSyn("127.0.0.1", openedPort));
      await sleep(1500);
      assert.deepEqual(servers.all(), {}, "no crafted packet reached a server");
      // Control: the same kind of frame to the opened port at the gateway does arrive, so the others were really stopped.
      nic.send(tcpSyn("10.0.2.2", openedPort));
      assert.ok(await waitFor(() => servers.count(`127.0.0.1:${openedPort}`) > 0), "the opened port is reached");
      assert.equal(servers.count(`0.0.0.0:${closedPort}`), 0);
      const events = readFileSync(join(dir, "events.jsonl"), "utf8");
      for (const dst of ["127.0.0.1", "10.0.2.2", ...ownAddresses]) assert.ok(events.includes(`"dest":"${dst}","port":${closedPort}`), `${dst} refusal recorded:\n${events}`);
    } finally {
      nic.close();
      // The helper ends when its NIC goes away.
      const gone = await waitFor(() => {
        try {
          process.kill(helper.pid, 0);
          return false;
        } catch {
          return true;
        }
      });
      if (!gone) await killAndWait(helper.pid, helper.startTime);
      assert.ok(gone, "the helper exited when QEMU's side closed");
    }
  });

  test("frames cannot be smuggled through the helper into passt's stream", async () => {
    const dir = join(stateDir, "desync");
    mkdirSync(dir, { recursive: true });
    const listener = createSocket("udp4");
    let received = "";
    listener.on("message", (message) => (received += message.toString()));
    await new Promise<void>((r) => listener.bind(0, "127.0.0.1", r));
    const port = listener.address().port;
    const host = await inspectJail("qemu-system-x86_64");
    const helper = await startNetworkHelper({
      binary: netdBinaryPath(),
      passt: "passt",
      socket: join(dir, "net.sock"),
      cwd: dir,
      eventsPath: join(dir, "events.jsonl"),
      logPath: join(dir, "netd.log"),
      policyJson: helperPolicy({ policy: "egress", allowHosts: [] }, []),
      user: host.qemuUser,
      deadline: Date.now() + 10_000,
    });
    const nic = await FakeNic.connect(join(dir, "net.sock"));
    try {
      nic.send(arpRequest("10.0.2.2"));
      for (let attempt = 0; attempt < 300 && !received; attempt++) {
        nic.sendAll(desyncBurst("127.0.0.1", port));
        if (attempt % 20 === 19) await sleep(50);
      }
      await sleep(1000);
      assert.equal(received, "", "a datagram reached the host's loopback");
    } finally {
      nic.close();
      listener.close();
      await killAndWait(helper.pid, helper.startTime);
    }
  });

  test("the attack that read host files: a networked guest cannot reach pyro mcp serve on loopback; a client needs its token", async () => {
    await ensureEnvironment();
    const child = spawn(process.execPath, [PYRO_BIN, "mcp", "serve", "--transport", "http", "--port", "0", "--profile", "workspace-core"], {
      env: { ...process.env, PYRO_STATE_DIR: stateDir, PYRO_MCP_TOKEN: "" },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    const url = await new Promise<URL>((resolvePromise, reject) => {
      child.stderr.setEncoding("utf8").on("data", (c: string) => {
        stderr += c;
        const match = /serving profile \S+ on (http:\/\/\S+)/.exec(stderr);
        if (match?.[1]) resolvePromise(new URL(match[1]));
      });
      child.once("exit", () => reject(new Error(stderr)));
    });
    const token = /Bearer <token>\): (\S+)/.exec(stderr)?.[1] ?? "";
    try {
      const ws = await pyro.createWorkspace({ environment: "debian:12", networkPolicy: "egress" });
      try {
        // What the attacker's guest did: talk HTTP to the host's loopback through the gateway.
        const request = `printf 'POST /mcp HTTP/1.1\\r\\nHost: 127.0.0.1:${url.port}\\r\\nContent-Type: application/json\\r\\nAccept: application/json, text/event-stream\\r\\nContent-Length: 2\\r\\n\\r\\n{}'`;
        const attack = `timeout 5 bash -c 'exec 3<>/dev/tcp/10.0.2.2/${url.port} && ${request} >&3 && head -1 <&3' 2>/dev/null || echo unreachable`;
        assert.equal(await guest(ws.workspaceId, attack), "unreachable\n");
        const info = await pyro.networkInfoVm(ws.workspaceId);
        assert.ok(info.recentBlocked.some((e) => e.dest === "10.0.2.2" && e.port === Number(url.port)), JSON.stringify(info.recentBlocked));
      } finally {
        await pyro.deleteWorkspace(ws.workspaceId);
      }
      // A local client without the token is turned away; with it, it works.
      const anonymous = await fetch(url, { method: "POST", headers: { "content-type": "application/json", accept: "application/json, text/event-stream" }, body: "{}" });
      assert.equal(anonymous.status, 401);
      const client = new Client({ name: "pyro-test", version: "1.0.0" });
      await client.connect(new StreamableHTTPClientTransport(url, { requestInit: { headers: { authorization: `Bearer ${token}` } } }));
      assert.ok((await client.listTools()).tools.some((t) => t.name === "workspace_create"));
      await client.close();
    } finally {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
    }
  });
});

describe("egress from a real guest, in a network namespace the test makes", { skip: !root && "needs root (ip netns)" }, () => {
  const netns = new TestNetns();
  let servers: TestServers;
  let privatePort = 0;
  let openedPort = 0;
  let loopbackPort = 0;
  const workspaces: string[] = [];

  /** pyro, run inside the namespace (so QEMU's network helper and passt are there), with the operator's opened destination. */
  async function createIn(args: string[]): Promise<string> {
    const [command, argv] = netns.wrap(process.execPath, [PYRO_BIN, "workspace", "create", "debian:12", "--id-only", ...args]);
    const child = spawn(command, argv, {
      env: { ...process.env, PYRO_STATE_DIR: stateDir, PYRO_PROGRESS: "0", PYRO_NETWORK_ALLOW_DESTINATIONS: `10.77.0.2:${openedPort}` },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => (out += c));
    child.stderr.setEncoding("utf8").on("data", (c: string) => (err += c));
    const code = await new Promise<number | null>((r) => child.once("exit", r));
    assert.equal(code, 0, err);
    const id = out.trim();
    workspaces.push(id);
    return id;
  }

  before(async () => {
    await ensureEnvironment();
    netns.create(["10.77.0.1/24", "10.77.0.2/24"], {
      "allowed.test": "10.77.0.2",
      "other.test": "10.77.0.2",
      "private.test": "10.77.0.1",
      "rebind.test": "127.0.0.1",
    });
    servers = await startTcpServers(["10.77.0.1:0", "10.77.0.2:0", "127.0.0.1:0"], netns);
    [privatePort, openedPort, loopbackPort] = servers.ports as [number, number, number];
  });

  after(async () => {
    for (const id of workspaces) await pyro.deleteWorkspace(id).catch(() => undefined);
    servers?.stop();
    netns.destroy();
  });

  test("the guest reaches an opened destination, by address and by name, and nothing private or of the host", async () => {
    const id = await createIn(["--network-policy", "egress"]);
    const status = await pyro.statusWorkspace(id);
    assert.equal(status.networkPolicy, "egress");
    assert.equal(await guest(id, `exec 3<>/dev/tcp/10.77.0.2/${openedPort} && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && head -1 <&3`), "HTTP/1.0 200 OK\r\n");
    assert.equal(await guest(id, `getent hosts allowed.test | cut -d' ' -f1`), "10.77.0.2\n");
    assert.equal(await guest(id, `exec 3<>/dev/tcp/allowed.test/${openedPort} && echo connected`), "connected\n");
    assert.equal(await guest(id, tryConnect("10.77.0.1", privatePort)), "closed\n");
    assert.equal(await guest(id, tryConnect("10.0.2.2", loopbackPort)), "closed\n");
    assert.equal(await guest(id, tryConnect("10.77.0.2", privatePort)), "closed\n", "an opened address is open on its port only");
    // Names that resolve to private or loopback addresses (DNS rebinding) do not resolve at all.
    assert.equal(await guest(id, "getent hosts private.test || echo refused; getent hosts rebind.test || echo refused"), "refused\nrefused\n");
    assert.equal(servers.count(`10.77.0.1:${privatePort}`), 0);
    assert.equal(servers.count(`127.0.0.1:${loopbackPort}`), 0);
    assert.ok(servers.count(`10.77.0.2:${openedPort}`) >= 2);

    const info = await pyro.networkInfoVm(id);
    assert.equal(info.mode, "egress");
    assert.deepEqual(info.allowedDestinations, [`10.77.0.2/32:${openedPort}`]);
    assert.ok(info.alwaysBlocked.includes("10.0.0.0/8") && info.alwaysBlocked.includes("169.254.0.0/16"));
    assert.equal(info.mtu, 65520);
    const refused = info.recentBlocked.map((e) => `${e.kind} ${e.dest ?? e.name ?? ""}`);
    for (const want of ["blocked 10.77.0.1", "blocked 10.0.2.2", "dns_refused private.test", "dns_refused rebind.test"]) assert.ok(refused.includes(want), `${want} in ${refused.join(", ")}`);
  });

  test("allowed hosts: names off the list do not resolve, even to an open address", async () => {
    const id = await createIn(["--network-policy", "egress", "--allow-host", "allowed.test"]);
    assert.deepEqual((await pyro.statusWorkspace(id)).allowHosts, ["allowed.test"]);
    assert.equal(await guest(id, "getent hosts allowed.test | cut -d' ' -f1; getent hosts other.test || echo refused"), "10.77.0.2\nrefused\n");
    const info = await pyro.networkInfoVm(id);
    assert.deepEqual(info.allowHosts, ["allowed.test"]);
    assert.ok(info.recentBlocked.some((e) => e.kind === "dns_refused" && e.name === "other.test" && /allowed hosts/.test(e.reason)), JSON.stringify(info.recentBlocked));
  });

  test("a workspace's network helper goes with it", async () => {
    const id = await createIn(["--network-policy", "egress"]);
    const helpers = () => listHelpers(id);
    assert.equal(helpers().length, 1);
    const helper = helpers()[0]!;
    // It shares a user with QEMU, but not a PID namespace: it cannot see or signal any QEMU.
    assert.notEqual(readlinkSync(`/proc/${helper}/ns/pid`), readlinkSync("/proc/self/ns/pid"));
    assert.notEqual(readFileSync(`/proc/${helper}/status`, "utf8").match(/^Uid:\s+(\d+)/m)?.[1], "0");
    await pyro.deleteWorkspace(id);
    workspaces.splice(workspaces.indexOf(id), 1);
    assert.ok(await waitFor(() => helpers().length === 0), "no pyro-netd left for the deleted workspace");
    assert.ok(!existsSync(join(stateDir, "vms", id)));
  });
});

/** pyro-netd processes serving a VM of this state directory. */
function listHelpers(vmId: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = (() => {
      try {
        return readFileSync(`/proc/${entry}/cmdline`, "utf8");
      } catch {
        return "";
      }
    })();
    // The helper itself, not the sandbox (bubblewrap) around it that carries its argv.
    const argv0 = cmdline.slice(0, cmdline.indexOf("\0"));
    if (argv0.endsWith("pyro-netd") && cmdline.includes(`${vmId}/qemu/net.sock`)) pids.push(Number(entry));
  }
  return pids;
}
