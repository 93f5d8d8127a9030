import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "./helpers.js";

/**
 * Test networks of the test's own making. A network namespace with a veth
 * pair holding addresses the test chooses, a hosts file for names, and
 * servers bound inside it: traffic never leaves the machine. Needs root.
 */
export class TestNetns {
  readonly name: string;
  constructor(prefix = "pyrot") {
    this.name = `${prefix}${process.pid}`;
  }

  /** Creates the namespace with `addresses` (CIDR) on its veth and `hosts` as its /etc/hosts. */
  create(addresses: string[], hosts: Record<string, string>): void {
    this.destroy();
    const ip = (...args: string[]) => execFileSync("ip", args, { stdio: ["ignore", "ignore", "pipe"] });
    ip("netns", "add", this.name);
    ip("-n", this.name, "link", "set", "lo", "up");
    ip("-n", this.name, "link", "add", "v0", "type", "veth", "peer", "name", "v1");
    for (const address of addresses) ip("-n", this.name, "addr", "add", address, "dev", "v0");
    ip("-n", this.name, "link", "set", "v0", "up");
    ip("-n", this.name, "link", "set", "v1", "up");
    // passt picks its outbound interface by the default route; the gateway need not exist.
    const first = addresses[0]!.split("/")[0]!.split(".").slice(0, 3).join(".");
    ip("-n", this.name, "route", "add", "default", "via", `${first}.254`, "dev", "v0");
    // `ip netns exec` mounts these over /etc/hosts and /etc/resolv.conf; a resolver on 127.0.0.1 that is not there fails fast.
    const etc = join("/etc/netns", this.name);
    mkdirSync(etc, { recursive: true });
    writeFileSync(join(etc, "hosts"), `127.0.0.1 localhost\n${Object.entries(hosts).map(([name, address]) => `${address} ${name}`).join("\n")}\n`);
    writeFileSync(join(etc, "resolv.conf"), "nameserver 127.0.0.1\n");
  }

  /** Arguments that run `command` inside the namespace. */
  wrap(command: string, args: string[]): [string, string[]] {
    return ["ip", ["netns", "exec", this.name, command, ...args]];
  }

  destroy(): void {
    try {
      execFileSync("ip", ["netns", "del", this.name], { stdio: "ignore" });
    } catch {
      // not there
    }
    rmSync(join("/etc/netns", this.name), { recursive: true, force: true });
  }
}

/**
 * Starts a TCP server on each `host:port` (port 0: a free one), in `netns`
 * when given; each answers HTTP with 200 and reports every connection.
 */
export function startTcpServers(listen: string[], netns?: TestNetns): Promise<TestServers> {
  const script = join(ROOT, "test", "fixtures", "tcp-servers.mjs");
  const [command, args] = netns ? netns.wrap(process.execPath, [script, ...listen]) : [process.execPath, [script, ...listen]];
  return TestServers.attach(spawn(command, args, { stdio: ["ignore", "pipe", "inherit"] }), listen.length);
}

/** The connections each test server accepted, as its process reports them. */
export class TestServers {
  private readonly accepted = new Map<string, number>();
  /** The ports listened on, in the order asked for. */
  readonly ports: number[] = [];

  private constructor(private readonly child: ChildProcess) {}

  static attach(child: ChildProcess, count: number): Promise<TestServers> {
    const servers = new TestServers(child);
    const seen: string[] = [];
    return new Promise((resolvePromise, reject) => {
      let buffer = "";
      child.once("exit", (code) => reject(new Error(`test servers exited (${code})`)));
      child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
        buffer += chunk;
        const lines = buffer.split("\n");
        buffer = lines.pop() ?? "";
        for (const line of lines) {
          const [kind, where, listened] = line.split(" ");
          if (kind === "listening" && listened) {
            seen.push(listened);
            servers.ports[Number(where)] = Number(listened.split(":").pop());
            if (seen.length === count) resolvePromise(servers);
          } else if (kind === "accepted" && where) servers.accepted.set(where, (servers.accepted.get(where) ?? 0) + 1);
        }
      });
    });
  }

  /** Connections accepted on `host:port` so far. */
  count(where: string): number {
    return this.accepted.get(where) ?? 0;
  }

  /** All connections accepted so far, by `host:port`. */
  all(): Record<string, number> {
    return Object.fromEntries(this.accepted);
  }

  stop(): void {
    this.child.kill("SIGKILL");
  }
}
