import { spawn } from "node:child_process";
import { closeSync, existsSync, openSync, readFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { createServer, type Server, type Socket } from "node:net";
import { fileURLToPath } from "node:url";
import type { Readable } from "node:stream";
import type { AgentSession } from "../agent/client.js";
import { openSession, vmFiles, type LockedSession } from "../backends/qemu/vm.js";
import { ErrorCode, PyroError } from "../errors.js";
import { isSameProcessAlive, killTree, processStartTime } from "../util/proc.js";

/**
 * Published ports: a host port on 127.0.0.1 whose connections reach a port
 * of the guest's own loopback. They travel over the agent's channel (the
 * tcp_* requests of guest/PROTOCOL.md), not over the guest's NIC: the guest
 * never gets a way to reach the host, only the host reaches into the guest,
 * and only on ports a service published. One forwarder process per service
 * holds the listening sockets; it is detached (a CLI call that published a
 * port may exit), and ends when told to, when its VM's QEMU is gone, or when
 * the VM's directory is.
 */

export interface ForwardSpec {
  guestPort: number;
  /** 0 (or absent) for a free port. */
  hostPort?: number;
}

export interface ForwarderConfig {
  /** The VM's state directory (its agent sockets are in qemu/). */
  dir: string;
  qemu: { pid: number; startTime: string | undefined };
  ports: ForwardSpec[];
}

export interface StartedForwarder {
  pid: number;
  startTime: string;
  ports: { guestPort: number; hostPort: number }[];
}

export const PUBLISH_HOST = "127.0.0.1";

/** A client that does not read is cut off past this much output waiting for it. */
const MAX_CLIENT_BACKLOG = 8 * 1024 * 1024;
/** The agent session is given back this long after the last connection closed. */
const SESSION_IDLE_MS = 3000;
const WATCH_MS = 1000;
/** How long a new forwarder waits for the process that started it to record it. */
const RECORD_GRACE_MS = 15_000;
const FRAME_BYTES = 64 * 1024;

function entryScript(): { script: string; execArgv: string[] } {
  const js = fileURLToPath(new URL("./forwarder-main.js", import.meta.url));
  if (existsSync(js)) return { script: js, execArgv: [] };
  // Running from the TypeScript sources (tests): the child needs the same loader.
  const execArgv: string[] = [];
  for (let i = 0; i < process.execArgv.length; i++) {
    const arg = process.execArgv[i]!;
    if ((arg === "--import" || arg === "--require" || arg === "--loader") && i + 1 < process.execArgv.length) execArgv.push(arg, process.execArgv[++i]!);
    else if (/^--(import|require|loader)=/.test(arg)) execArgv.push(arg);
  }
  return { script: fileURLToPath(new URL("./forwarder-main.ts", import.meta.url)), execArgv };
}

/** Starts a forwarder and waits until every port is bound (or one could not be). */
export async function startForwarder(config: ForwarderConfig, logPath: string, deadline: number): Promise<StartedForwarder> {
  const { script, execArgv } = entryScript();
  const log = openSync(logPath, "a", 0o600);
  const child = (() => {
    try {
      return spawn(process.execPath, [...execArgv, script, JSON.stringify(config)], { detached: true, stdio: ["ignore", "ignore", log, "pipe"] });
    } finally {
      closeSync(log);
    }
  })();
  const ready = child.stdio[3] as Readable;
  try {
    const line = await new Promise<string>((resolvePromise, reject) => {
      let text = "";
      const timer = setTimeout(() => reject(new Error("it did not start in time")), Math.max(0, deadline - Date.now()));
      child.once("error", (error) => {
        clearTimeout(timer);
        reject(error);
      });
      ready.setEncoding("utf8");
      ready.on("data", (chunk: string) => {
        text += chunk;
        const newline = text.indexOf("\n");
        if (newline >= 0) {
          clearTimeout(timer);
          resolvePromise(text.slice(0, newline));
        }
      });
      ready.on("end", () => {
        clearTimeout(timer);
        reject(new Error("it exited before it was ready"));
      });
    });
    const reply = JSON.parse(line) as { ports?: { guestPort: number; hostPort: number }[]; error?: string };
    if (reply.error !== undefined || !reply.ports) {
      throw new PyroError(ErrorCode.invalidArgument, `a port could not be published: ${reply.error ?? "no reply"}`, {
        hint: "leave host_port out to get a free port, or pick one nothing else listens on",
        details: { field: "publish" },
      });
    }
    child.unref();
    const startTime = await processStartTime(child.pid!);
    if (startTime === undefined) throw new Error("it exited right after binding its ports");
    return { pid: child.pid!, startTime, ports: reply.ports };
  } catch (error) {
    if (child.pid !== undefined) await killTree(child.pid);
    if (error instanceof PyroError) throw error;
    throw new PyroError(ErrorCode.internal, `the port forwarder could not start: ${error instanceof Error ? error.message : String(error)}`);
  } finally {
    ready.destroy();
  }
}

/** The forwarder process itself (forwarder-main.ts). */
export async function runForwarder(config: ForwarderConfig, readyFd: number): Promise<void> {
  const servers: Server[] = [];
  const bound: { guestPort: number; hostPort: number }[] = [];
  const connections = new Connections(config.dir);
  const say = (value: unknown) => {
    writeSync(readyFd, `${JSON.stringify(value)}\n`);
    closeSync(readyFd);
  };
  try {
    for (const spec of config.ports) {
      const server = createServer({ pauseOnConnect: true });
      await new Promise<void>((resolvePromise, reject) => {
        server.once("error", reject);
        server.listen({ host: PUBLISH_HOST, port: spec.hostPort ?? 0, exclusive: true }, () => {
          server.off("error", reject);
          resolvePromise();
        });
      });
      const address = server.address();
      if (address === null || typeof address === "string") throw new Error("no address");
      servers.push(server);
      bound.push({ guestPort: spec.guestPort, hostPort: address.port });
      server.on("connection", (socket) => connections.accept(socket, spec.guestPort));
    }
  } catch (error) {
    say({ error: error instanceof Error ? error.message : String(error) });
    process.exit(1);
  }
  say({ ports: bound });
  const shutdown = () => {
    for (const server of servers) server.close();
    connections.closeAll();
    setTimeout(() => process.exit(0), 100).unref();
  };
  process.on("SIGTERM", shutdown);
  process.on("SIGINT", shutdown);
  const startedAt = Date.now();
  const watch = setInterval(() => {
    void (async () => {
      // Gone with its VM; and gone if the record never took it (the process that started it died first).
      const orphaned = Date.now() - startedAt > RECORD_GRACE_MS && !recordNamesMe(config.dir);
      if (orphaned || !existsSync(config.dir) || !(await isSameProcessAlive(config.qemu.pid, config.qemu.startTime))) {
        clearInterval(watch);
        shutdown();
      }
    })();
  }, WATCH_MS);
}


/** Whether the VM's record lists this process as a forwarder (an unreadable record counts as yes). */
function recordNamesMe(dir: string): boolean {
  try {
    const record = JSON.parse(readFileSync(join(dir, "vm.json"), "utf8")) as { published?: { forwarder?: { pid?: number } }[] };
    return (record.published ?? []).some((port) => port.forwarder?.pid === process.pid);
  } catch {
    return true;
  }
}

/** The open forwarded connections, all carried by one agent session while any is open. */
class Connections {
  private locked: LockedSession | undefined;
  private opening: Promise<LockedSession> | undefined;
  private readonly open = new Set<Socket>();
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(private readonly dir: string) {}

  private async session(): Promise<AgentSession> {
    if (this.locked && !this.locked.session.closed) return this.locked.session;
    this.opening ??= openSession(vmFiles(this.dir), { deadline: Date.now() + 10_000 }).then(
      (locked) => {
        this.locked = locked;
        this.opening = undefined;
        return locked;
      },
      (error: unknown) => {
        this.opening = undefined;
        throw error;
      },
    );
    return (await this.opening).session;
  }

  accept(client: Socket, guestPort: number): void {
    this.open.add(client);
    clearTimeout(this.idleTimer);
    client.on("error", () => undefined);
    client.once("close", () => {
      this.open.delete(client);
      if (this.open.size === 0) this.idleTimer = setTimeout(() => this.release(), SESSION_IDLE_MS);
    });
    void this.session().then(
      (session) => this.bridge(session, client, guestPort),
      (error: unknown) => {
        process.stderr.write(`forwarder: no agent session for port ${guestPort}: ${error instanceof Error ? error.message : String(error)}\n`);
        client.destroy();
      },
    );
  }

  private bridge(session: AgentSession, client: Socket, guestPort: number): void {
    if (client.destroyed) return;
    let finished = false;
    const channel = session.channel("tcp_open", { port: guestPort }, {
      onFrame: ({ header, payload }) => {
        switch (header.type) {
          case "tcp_opened":
            client.resume();
            break;
          case "tcp_data":
            client.write(payload);
            // The guest cannot be paused per connection; a client that stops reading is cut off.
            if (client.writableLength > MAX_CLIENT_BACKLOG) client.destroy();
            break;
          case "tcp_eof":
            client.end();
            break;
          case "error":
          case "tcp_closed":
            finished = true;
            channel.end();
            if (header.type === "error") client.destroy();
            else client.end();
            break;
        }
      },
      onClose: () => {
        finished = true;
        client.destroy();
      },
    });
    client.on("data", (data: Buffer) => {
      if (finished) return;
      for (let offset = 0; offset < data.length; offset += FRAME_BYTES) {
        if (!channel.send("tcp_send", data.subarray(offset, offset + FRAME_BYTES))) {
          client.pause();
          void session.whenWritable().then(() => client.resume());
        }
      }
    });
    client.once("end", () => {
      if (!finished) channel.send("tcp_shutdown");
    });
    client.once("close", () => {
      if (!finished) channel.send("tcp_close");
    });
  }

  private release(): void {
    if (this.open.size > 0 || !this.locked) return;
    const locked = this.locked;
    this.locked = undefined;
    locked.session.close();
    void locked.release().catch(() => undefined);
  }

  closeAll(): void {
    for (const client of this.open) client.destroy();
    clearTimeout(this.idleTimer);
    if (this.locked) {
      this.locked.session.close();
      void this.locked.release().catch(() => undefined);
      this.locked = undefined;
    }
  }
}
