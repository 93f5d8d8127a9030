import { spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { constants } from "node:fs";
import { chown, lstat, mkdir, open, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import type { Socket } from "node:net";
import { join } from "node:path";
import { AgentSession, isHandshakeTimeout, connectUnix, type HelloOptions } from "../../agent/client.js";
import { qemuBinary } from "../../config.js";
import { ErrorCode, PyroError } from "../../errors.js";
import { tryLock } from "../../util/lock.js";
import { debug } from "../../util/log.js";
import { CONFINED_ENV, killAndWait, killTree, processStartTime } from "../../util/proc.js";
import { AGENT_PORTS, qemuArgs, type LaunchSpec } from "./argv.js";
import { isKvmFailure, type Accel } from "./accel.js";
import { confinedPid, jailCommand, launched, openPidReport, type JailHost } from "./jail.js";
import { QmpClient } from "./qmp.js";

/** QEMU's control, console and agent sockets. */
export interface VmSockets {
  qmp: string;
  serial: string;
  agents: string[];
}

/**
 * Files of one VM inside its directory. Socket paths must stay under the
 * 107-byte limit. QEMU sees (and may write) only `jailDir`: its disk, and the
 * sockets it creates there (`bound`). Before the guest runs any code, pyro
 * moves those sockets into `sockDir`, which QEMU cannot write: a QEMU taken
 * over by its guest could otherwise swap a socket for a link to another VM's
 * and have pyro send that VM this one's commands and files. The record, logs
 * and locks are pyro's alone.
 */
export interface VmFiles extends VmSockets {
  dir: string;
  jailDir: string;
  sockDir: string;
  disk: string;
  /** Where QEMU creates its sockets (moved to the VmSockets paths once it has). */
  bound: VmSockets;
  /** The network helper's socket, to which QEMU connects the guest's NIC. */
  net: string;
  qemuLog: string;
  portLocks: string[];
}

function socketsIn(dir: string): VmSockets {
  return {
    qmp: join(dir, "qmp.sock"),
    serial: join(dir, "serial.sock"),
    agents: Array.from({ length: AGENT_PORTS }, (_, i) => join(dir, `agent${i}.sock`)),
  };
}

export function vmFiles(dir: string): VmFiles {
  const jailDir = join(dir, "qemu");
  const sockDir = join(dir, "sock");
  return {
    dir,
    jailDir,
    sockDir,
    disk: join(jailDir, "disk.qcow2"),
    ...socketsIn(sockDir),
    bound: socketsIn(jailDir),
    net: join(jailDir, "net.sock"),
    qemuLog: join(dir, "qemu.log"),
    portLocks: Array.from({ length: AGENT_PORTS }, (_, i) => join(dir, `port${i}`)),
  };
}

/**
 * Makes the directory QEMU works in ready for a new QEMU, owned by the user
 * QEMU runs as. A previous QEMU of this VM (perhaps taken over by its guest)
 * may have left anything there, so everything but the disk is removed, and
 * the disk must still be a regular file with one link: pyro, as root, is
 * about to hand it to QEMU's user and must not follow a link to a host file.
 * No QEMU of this VM runs now, and no other process of the QEMU user can
 * reach this directory (the VM directory above it is pyro's, 0700).
 */
export async function prepareJailDir(files: VmFiles, owner: { uid: number; gid: number } | undefined): Promise<void> {
  await mkdir(files.sockDir, { recursive: true, mode: 0o700 });
  await mkdir(files.jailDir, { recursive: true, mode: 0o700 });
  const dir = await lstat(files.jailDir);
  if (!dir.isDirectory()) throw tampered(files, `${files.jailDir} is not a directory`);
  for (const name of await readdir(files.jailDir)) {
    const path = join(files.jailDir, name);
    if (path === files.disk) await checkDisk(files);
    else await rm(path, { recursive: true, force: true });
  }
  if (owner) await chown(files.jailDir, owner.uid, owner.gid);
}

/** The VM's disk, checked to be a regular file of its own, is given to QEMU's user (through a descriptor, never a path that could be swapped). */
export async function handDiskTo(files: VmFiles, owner: { uid: number; gid: number } | undefined): Promise<void> {
  const handle = await open(files.disk, constants.O_RDWR | constants.O_NOFOLLOW);
  try {
    const info = await handle.stat();
    if (!info.isFile() || info.nlink !== 1) throw tampered(files, "the disk is not a regular file with a single link");
    await handle.chmod(0o600);
    if (owner) await handle.chown(owner.uid, owner.gid);
  } finally {
    await handle.close();
  }
}

async function checkDisk(files: VmFiles): Promise<void> {
  const info = await lstat(files.disk);
  if (!info.isFile() || info.nlink !== 1) throw tampered(files, "the disk is not a regular file with a single link");
}

function tampered(files: VmFiles, what: string): PyroError {
  return new PyroError(ErrorCode.stateError, `${files.dir}: ${what}; its QEMU may have been taken over by the guest`, {
    hint: "delete this VM or workspace; nothing of it can be trusted",
  });
}

/**
 * Moves the sockets QEMU created into the directory only pyro can write.
 * Called while QEMU is still paused, before any guest code ran, so the
 * sockets are QEMU's own; renaming a bound socket keeps it working.
 */
async function adoptSockets(files: VmFiles): Promise<void> {
  const pairs: [string, string][] = [
    [files.bound.qmp, files.qmp],
    [files.bound.serial, files.serial],
    ...files.bound.agents.map((path, i): [string, string] => [path, files.agents[i]!]),
  ];
  for (const [from, to] of pairs) {
    const info = await lstat(from);
    if (!info.isSocket()) throw new PyroError(ErrorCode.bootFailed, `QEMU did not create the socket ${from}`);
    await rename(from, to);
  }
}

export function checkSocketPaths(files: VmFiles): void {
  const longest = [files.qmp, files.serial, files.net, ...files.agents, ...files.bound.agents].reduce((a, b) => (a.length > b.length ? a : b));
  if (Buffer.byteLength(longest) > 100) {
    throw new PyroError(ErrorCode.stateError, `the state directory path is too long for unix sockets (${longest})`, {
      hint: "set PYRO_STATE_DIR to a shorter path of your own, e.g. mkdir -m 700 /var/tmp/pyro-$USER",
    });
  }
}

export interface QemuProcess {
  pid: number;
  /** Process start time; with the pid it identifies this QEMU even after pid reuse. */
  startTime: string | undefined;
}

/** Keeps the last `limit` bytes the guest wrote to its serial console. */
class SerialTail {
  private chunks: Buffer[] = [];
  private size = 0;
  private socket: Socket | undefined;
  constructor(private readonly limit = 64 * 1024) {}

  attach(socket: Socket): void {
    this.socket = socket;
    socket.on("data", (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.size += chunk.length;
      while (this.size > this.limit && this.chunks.length > 1) this.size -= this.chunks.shift()!.length;
    });
    socket.on("error", () => undefined);
  }

  text(maxChars = 4000): string {
    const all = Buffer.concat(this.chunks).toString("utf8").replace(/\r/g, "");
    return all.slice(-maxChars);
  }

  detach(): void {
    this.socket?.destroy();
  }
}

async function tail(path: string, maxChars = 4000): Promise<string> {
  const text = await readFile(path, "utf8").catch(() => "");
  return text.slice(-maxChars);
}

/** How QEMU is confined (see jail.ts), and what it may see. */
export interface BootJail {
  host: JailHost;
  /** Files QEMU reads: kernel, initramfs, the root image behind its disk. */
  readOnly: string[];
  /** The cgroup to move QEMU into before it runs anything, when cgroups are usable. */
  cgroupDirs?: string[];
  /** Its name, for removal once QEMU is gone. */
  cgroupName?: string;
}

export interface BootOptions {
  deadline: number;
  /** Confinement; without it QEMU runs as the caller with nothing else applied. */
  jail?: BootJail;
  /** A saved state to restore (the spec says `incomingFd`): opened here and given to QEMU as that fd. */
  incomingPath?: string;
  /** The QEMU to run (default: PYRO_QEMU_BINARY of this process, or qemu-system-x86_64). */
  qemuBinary?: string;
  signal?: AbortSignal;
  hello?: HelloOptions;
  onPhase?: (message: string) => void;
  /** Called as soon as QEMU has a pid, so the caller can record it before waiting. */
  onSpawned?: (qemu: QemuProcess) => Promise<void>;
}

export interface BootResult {
  qemu: QemuProcess;
  /** An open session on port 0 (its lock held), ready for the first command. */
  session: LockedSession;
}

export interface LockedSession {
  session: AgentSession;
  release: () => Promise<void>;
}

/**
 * Starts QEMU detached (it outlives this process), waits for the guest agent's
 * handshake, and on any failure kills QEMU and reports the tail of the serial
 * console and of QEMU's own log.
 */
export async function bootVm(spec: LaunchSpec, files: VmFiles, options: BootOptions): Promise<BootResult> {
  checkSocketPaths(files);
  const t0 = performance.now();
  const mark = (what: string) => debug("boot", `${(performance.now() - t0).toFixed(0)} ms ${what}`);
  const binary = options.qemuBinary ?? qemuBinary();
  const args = qemuArgs({ ...spec, seccomp: spec.seccomp ?? options.jail?.host.seccomp ?? false });
  const confined = options.jail
    ? await jailCommand(options.jail.host, { binary, args }, { readOnly: options.jail.readOnly, writableDir: files.jailDir, devices: spec.accel === "kvm" ? ["/dev/kvm"] : [] }, await kvmGroups(spec.accel))
    : { file: binary, args, infoFd: undefined };
  const command = launched(confined, options.jail?.cgroupDirs);
  debug("qemu", `${command.file} ${command.args.join(" ")}`);
  let exited: string | undefined;
  let onExit: (() => void) | undefined;
  let report: number | undefined;
  const child = (() => {
    const logFd = openSync(files.qemuLog, "a", 0o600);
    // fd 3: the saved state QEMU restores from; fd 4: where bubblewrap reports the confined QEMU's pid (a file, see openPidReport).
    const stateFd = options.incomingPath === undefined ? undefined : openSync(options.incomingPath, "r");
    try {
      report = command.infoFd === undefined ? undefined : openPidReport(files.dir);
      return spawn(command.file, command.args, {
        cwd: files.jailDir,
        // Nothing of pyro's environment (tokens, credentials) for a process a guest may take over.
        env: CONFINED_ENV,
        detached: true,
        stdio: ["ignore", logFd, logFd, stateFd ?? "ignore", report ?? "ignore"],
      });
    } catch (error) {
      if (report !== undefined) closeSync(report);
      throw error;
    } finally {
      closeSync(logFd);
      if (stateFd !== undefined) closeSync(stateFd);
    }
  })();
  const spawnError = await new Promise<Error | undefined>((resolvePromise) => {
    child.once("spawn", () => resolvePromise(undefined));
    child.once("error", (error) => resolvePromise(error));
  });
  if (spawnError || child.pid === undefined) {
    if (report !== undefined) closeSync(report);
    throw new PyroError(ErrorCode.guestUnavailable, `could not start QEMU (${command.file}): ${spawnError?.message ?? "no pid"}`, {
      hint: "install QEMU (apt-get install qemu-system-x86 qemu-utils) or set PYRO_QEMU_BINARY",
    });
  }
  child.on("exit", (code, signal) => {
    exited = signal ? `QEMU was killed by ${signal}` : `QEMU exited with status ${code}`;
    onExit?.();
  });
  child.unref();
  let qemuPid = child.pid;
  if (report !== undefined) {
    try {
      qemuPid = await confinedPid(report, () => exited === undefined, Math.min(options.deadline, Date.now() + 15_000));
    } catch (error) {
      // bubblewrap may have started QEMU without telling us: take everything below it.
      await killTree(child.pid);
      const log = await tail(files.qemuLog);
      throw new PyroError(ErrorCode.bootFailed, `the guest failed to boot: QEMU's sandbox did not start (${error instanceof Error ? error.message : String(error)})`, {
        cause: error,
        hint: "see the log tail below; doctor() lists the confinement layers this host supports",
        details: { qemuLogTail: log },
      });
    }
  }
  const qemu: QemuProcess = { pid: qemuPid, startTime: await processStartTime(qemuPid) };
  const serial = new SerialTail();
  let qmp: QmpClient | undefined;
  let locked: LockedSession | undefined;
  let portRelease: (() => Promise<void>) | undefined;
  try {
    mark(`spawned QEMU pid ${qemu.pid}`);
    await options.onSpawned?.(qemu);
    const exitPromise = new Promise<never>((_, reject) => {
      onExit = () => reject(new PyroError(ErrorCode.bootFailed, `${exited}`));
      if (exited) onExit();
    });
    exitPromise.catch(() => undefined);
    // Cancelling ends whichever step is running: none of them waits out its deadline.
    const abortPromise = new Promise<never>((_, reject) => {
      const cancelled = () => reject(new PyroError(ErrorCode.cancelled, "cancelled while the guest was starting"));
      if (options.signal?.aborted) cancelled();
      else options.signal?.addEventListener("abort", cancelled, { once: true });
    });
    abortPromise.catch(() => undefined);
    // A step that loses the race to QEMU's exit still settles later; that must not become an unhandled rejection.
    const race = <T>(promise: Promise<T>) => {
      promise.catch(() => undefined);
      return Promise.race([promise, exitPromise, abortPromise]);
    };

    qmp = await race(QmpClient.connect(files.bound.qmp, Math.min(options.deadline, Date.now() + 15_000)));
    // QEMU answers QMP only after it made every chardev socket; none of the guest's code has run yet.
    await race(adoptSockets(files));
    serial.attach(await race(connectUnix(files.serial, options.deadline)));
    mark("QMP and console connected");
    if (spec.incomingFd !== undefined) {
      options.onPhase?.("restoring saved state");
      await race(qmp.execute("migrate-incoming", { uri: `fd:${spec.incomingFd}` }, options.deadline));
      await race(waitForIncoming(qmp, options.deadline));
      mark("saved state loaded");
    }
    options.onPhase?.(spec.incomingFd !== undefined ? "resuming the guest" : `booting the guest (${spec.accel})`);
    await race(qmp.execute("cont", undefined, options.deadline));
    portRelease = (await tryLock(files.portLocks[0]!)) ?? undefined;
    const opening = AgentSession.open(files.agents[0]!, { deadline: options.deadline, hello: options.hello, signal: options.signal });
    const session = await race(opening).catch((error: unknown) => {
      // QEMU exited first: a session that still opens later is closed at once.
      void opening.then((late) => late.close(), () => undefined);
      throw error;
    });
    mark("agent handshake done");
    locked = { session, release: portRelease ?? (() => Promise.resolve()) };
    return { qemu, session: locked };
  } catch (error) {
    // Whether QEMU ended by itself, before the kill below ends it (and its sandbox reports 137).
    const exitedFirst = exited;
    // The handshake's own timer is set to the deadline and may fire a moment before the clock reads it.
    const timedOut = Date.now() >= options.deadline || isHandshakeTimeout(error);
    await portRelease?.().catch(() => undefined);
    const qemuLog = await tail(files.qemuLog);
    const consoleTail = serial.text();
    await killAndWait(qemu.pid, qemu.startTime);
    const base = error instanceof PyroError ? error : undefined;
    const code =
      base?.code === ErrorCode.cancelled ? ErrorCode.cancelled : timedOut && !exitedFirst ? ErrorCode.bootTimeout : ErrorCode.bootFailed;
    const what = exitedFirst ?? (error instanceof Error ? error.message : String(error));
    throw new PyroError(code, code === ErrorCode.bootTimeout ? "the guest did not become ready before the boot deadline" : `the guest failed to boot: ${what}`, {
      cause: error,
      hint: isKvmFailure(qemuLog)
        ? "KVM cannot run this guest here (the QEMU log below says why); set PYRO_ACCEL=tcg, or unset PYRO_ACCEL and pyro picks what works"
        : code === ErrorCode.bootTimeout
          ? "the host may be overloaded; retry, or raise PYRO_BOOT_TIMEOUT_SECONDS"
          : "see the console tail below; doctor() checks the host",
      details: { consoleTail, qemuLogTail: qemuLog, kvmFailure: isKvmFailure(qemuLog) },
    });
  } finally {
    serial.detach();
    qmp?.close();
  }
}

async function waitForIncoming(qmp: QmpClient, deadline: number): Promise<void> {
  while (Date.now() < deadline) {
    const { status } = (await qmp.execute("query-status", undefined, deadline)) as { status?: string };
    if (status === "paused" || status === "prelaunch") return;
    if (status !== "inmigrate") throw new PyroError(ErrorCode.bootFailed, `restoring the saved state ended in state ${status}`);
    await new Promise((r) => setTimeout(r, 2));
  }
  throw new PyroError(ErrorCode.bootTimeout, "restoring the saved state did not finish in time");
}

/** Supplementary groups the QEMU user needs: the group that may open /dev/kvm. */
async function kvmGroups(accel: Accel): Promise<number[]> {
  if (accel !== "kvm") return [];
  const info = await stat("/dev/kvm").catch(() => undefined);
  return info && info.gid !== 0 ? [info.gid] : [];
}

/** Pause between a hello that went unanswered and the next connection. */
const RECONNECT_PAUSE_MS = 500;

/**
 * Opens a session on a free agent port of a running VM. Ports are taken with a
 * lock so concurrent pyro processes each get their own; when all are busy this
 * waits for one until the deadline.
 */
export async function openSession(files: VmFiles, options: { deadline: number; signal?: AbortSignal; hello?: HelloOptions }): Promise<LockedSession> {
  checkSocketPaths(files);
  while (Date.now() < options.deadline) {
    for (let i = 0; i < files.agents.length; i++) {
      const release = await tryLock(files.portLocks[i]!);
      if (!release) continue;
      try {
        // A session cut off mid-transfer (a push that hit its deadline) can leave the agent
        // reading the rest of an old frame, which swallows our hello; a new connection
        // makes its read end, so a hello that goes unanswered is sent again on one.
        for (let attemptMs = 2000; ; attemptMs *= 2) {
          debug("agent", `opening a session on port ${i}`);
          const attemptDeadline = Math.min(options.deadline, Date.now() + attemptMs);
          try {
            const session = await AgentSession.open(files.agents[i]!, { deadline: attemptDeadline, signal: options.signal, hello: options.hello });
            return { session, release };
          } catch (error) {
            if (!isHandshakeTimeout(error) || attemptDeadline >= options.deadline) throw error;
            // Long enough for the guest to see the port closed before the next connection opens it.
            await new Promise((r) => setTimeout(r, RECONNECT_PAUSE_MS));
          }
        }
      } catch (error) {
        await release().catch(() => undefined);
        throw error;
      }
    }
    if (options.signal?.aborted) throw new PyroError(ErrorCode.cancelled, "cancelled while waiting for a free agent port");
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new PyroError(ErrorCode.agentError, "every agent port of this VM stayed busy until the deadline", {
    hint: "other commands are running in this VM; wait for them or raise the timeout",
  });
}

/** Asks the guest to sync and power off, then makes sure QEMU is gone. */
export async function shutdownVm(files: VmFiles, qemu: QemuProcess, graceMs = 10_000): Promise<void> {
  try {
    const locked = await openSession(files, { deadline: Date.now() + Math.min(graceMs, 3000) });
    try {
      await locked.session.poweroff();
    } finally {
      locked.session.close();
      await locked.release();
    }
    const deadline = Date.now() + graceMs;
    while (Date.now() < deadline && (await processStartTime(qemu.pid)) === qemu.startTime) {
      await new Promise((r) => setTimeout(r, 50));
    }
  } catch (error) {
    debug("qemu", `graceful shutdown failed: ${String(error)}`);
  }
  await killAndWait(qemu.pid, qemu.startTime);
}
