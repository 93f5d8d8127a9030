import { spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Readable } from "node:stream";
import { ErrorCode, PyroError } from "../errors.js";
import { debug } from "../util/log.js";
import { confinedPid, launched, openPidReport } from "../backends/qemu/jail.js";
import { CONFINED_ENV, killTree, processStartTime } from "../util/proc.js";

/**
 * The network stack behind a guest's NIC, the one seam to swap it: QEMU's
 * `-netdev stream` connects to a socket served by pyro-netd (netd/), which
 * filters every frame by the VM's policy, answers DNS itself, and hands
 * what passes to passt, which turns frames into host sockets. QEMU itself
 * opens no host socket and lives in an empty network namespace.
 *
 * Why this and not QEMU's own user networking: libslirp (QEMU 7.2) connects
 * a root guest's crafted packets to 127.0.0.1 and to the host's addresses,
 * and `restrict=on` with a forward to a filtering proxy needs QEMU to spawn
 * a process per connection, which QEMU's seccomp sandbox (spawn=deny)
 * forbids. A frame filter in front of passt works for any protocol, needs no
 * root and no host firewall, and keeps QEMU fully sandboxed.
 */
export interface HelperProcess {
  pid: number;
  startTime: string | undefined;
}

export interface HelperOptions {
  /** pyro-netd. */
  binary: string;
  passt: string;
  /** The socket QEMU connects its NIC to (inside QEMU's jail directory). */
  socket: string;
  cwd: string;
  /** Where refusals are recorded, one JSON object per line (read by networkInfo). */
  eventsPath: string;
  /** The helper's and passt's own diagnostics. */
  logPath: string;
  policyJson: string;
  /** The unprivileged user to drop to (when pyro runs as root). */
  user: { uid: number; gid: number } | undefined;
  /** bubblewrap around the helper (see helperSandbox), and the VM's cgroup to join. */
  sandbox?: { file: string; args: string[]; infoFd: number };
  cgroupDirs?: string[];
  deadline: number;
}

/** Starts the helper detached (it lives as long as the VM's QEMU) and waits until it listens. */
export async function startNetworkHelper(options: HelperOptions): Promise<HelperProcess> {
  const args = [
    "--socket", options.socket,
    "--policy", options.policyJson,
    "--passt", options.passt,
    "--ready-fd", "3",
    ...(options.user ? ["--user", `${options.user.uid}:${options.user.gid}`] : []),
  ];
  const { file, args: argv } = launched(options.sandbox ? { file: options.sandbox.file, args: [...options.sandbox.args, options.binary, ...args] } : { file: options.binary, args }, options.cgroupDirs);
  debug("net", `${file} ${argv.join(" ")}`);
  const events = openSync(options.eventsPath, "a", 0o600);
  const log = openSync(options.logPath, "a", 0o600);
  let report: number | undefined;
  const child = (() => {
    try {
      report = options.sandbox ? openPidReport(dirname(options.logPath)) : undefined;
      // fd 3: the helper says "ready" there; fd 4: bubblewrap reports the helper's pid (a file, see openPidReport).
      return spawn(file, argv, { cwd: options.cwd, env: CONFINED_ENV, detached: true, stdio: ["ignore", events, log, "pipe", report ?? "ignore"] });
    } catch (error) {
      if (report !== undefined) closeSync(report);
      throw error;
    } finally {
      closeSync(events);
      closeSync(log);
    }
  })();
  const failure = async (reason: string): Promise<PyroError> => {
    const tail = (await readFile(options.logPath, "utf8").catch(() => "")).trim().split("\n").slice(-5).join("\n");
    return new PyroError(ErrorCode.bootFailed, `the guest's network could not start: ${reason}${tail ? `\n${tail}` : ""}`, {
      hint: "doctor() checks networking; passt must be installed (apt-get install passt)",
    });
  };
  const ready = child.stdio[3] as Readable;
  let pid = child.pid;
  try {
    if (report !== undefined) {
      const pidReport = report;
      report = undefined;
      if (pid === undefined) closeSync(pidReport);
      else pid = await confinedPid(pidReport, () => child.exitCode === null && child.signalCode === null, options.deadline);
    }
    await new Promise<void>((resolvePromise, reject) => {
      let text = "";
      const timer = setTimeout(() => reject(new Error("it did not start in time")), Math.max(0, options.deadline - Date.now()));
      child.once("error", (error) => {
        clearTimeout(timer);
        reject(error);
      });
      ready.setEncoding("utf8");
      ready.on("data", (chunk: string) => {
        text += chunk;
        if (text.includes("ready\n")) {
          clearTimeout(timer);
          resolvePromise();
        }
      });
      ready.on("end", () => {
        clearTimeout(timer);
        reject(new Error("it exited before it was ready"));
      });
    });
  } catch (error) {
    if (report !== undefined) closeSync(report);
    if (child.pid !== undefined) await killTree(child.pid);
    throw await failure(error instanceof Error ? error.message : String(error));
  } finally {
    ready.destroy();
  }
  child.unref();
  return { pid: pid!, startTime: await processStartTime(pid!) };
}

/** Where a VM's network helper records refusals. */
export function networkEventsPath(files: { dir: string }): string {
  return join(files.dir, "network-events.jsonl");
}

export interface NetworkEvent {
  time: string;
  kind: "blocked" | "dns_refused" | "suppressed";
  proto?: string;
  dest?: string;
  port?: number;
  name?: string;
  reason: string;
}

/** The latest refusals the helper recorded for a VM, newest last. */
export async function recentNetworkEvents(eventsPath: string, limit = 20): Promise<NetworkEvent[]> {
  const text = await readFile(eventsPath, "utf8").catch(() => "");
  const events: NetworkEvent[] = [];
  for (const line of text.split("\n").slice(-limit - 1)) {
    if (!line.trim()) continue;
    try {
      const event = JSON.parse(line) as NetworkEvent;
      if (typeof event.reason === "string" && typeof event.time === "string") events.push(event);
    } catch {
      // a line cut short by a crash
    }
  }
  return events.slice(-limit);
}
