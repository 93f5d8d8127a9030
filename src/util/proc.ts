import { spawn } from "node:child_process";
import { readdir, readFile, stat } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";

/** The whole environment of a process a guest may take over (QEMU, the network helper): nothing of pyro's own, no tokens or credentials. */
export const CONFINED_ENV: NodeJS.ProcessEnv = { PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", LC_ALL: "C" };

/**
 * Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat).
 * Together with the pid it identifies a process even after pids are recycled.
 */
export async function processStartTime(pid: number): Promise<string | undefined> {
  let stat: string;
  try {
    stat = await readFile(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // The command name (field 2) may contain spaces and parentheses; fields after it are fixed.
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // rest[0] is field 3 (state); field 22 is rest[19].
  if (rest[0] === "Z" || rest[0] === "X") return undefined;
  return rest[19];
}

/** This process, as a record names it. */
export async function selfProcess(): Promise<{ pid: number; startTime: string }> {
  const startTime = await processStartTime(process.pid);
  if (startTime === undefined) throw new Error("cannot read this process's start time from /proc");
  return { pid: process.pid, startTime };
}

/** Whether two records name the same process. */
export function sameProcess(a: { pid: number; startTime: string } | null | undefined, b: { pid: number; startTime: string } | null | undefined): boolean {
  return !!a && !!b && a.pid === b.pid && a.startTime === b.startTime;
}

/** True when some process has this pid (it may not be ours; see isSameProcessAlive). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * True when `pid` is alive and is the same process that had `startTime`. A
 * process recorded without a start time cannot be told from a stranger that
 * reused its pid, so it counts as gone: pyro never signals what it cannot
 * identify.
 */
export async function isSameProcessAlive(pid: number, startTime: string | undefined): Promise<boolean> {
  if (startTime === undefined) return false;
  return (await processStartTime(pid)) === startTime;
}

/** The process and all its descendants, each with its start time, parents first. */
async function processTree(pid: number): Promise<{ pid: number; startTime: string | undefined }[]> {
  const found: { pid: number; startTime: string | undefined }[] = [];
  const queue = [pid];
  while (queue.length && found.length < 1024) {
    const next = queue.shift()!;
    found.push({ pid: next, startTime: await processStartTime(next) });
    const tasks = await readdir(`/proc/${next}/task`).catch(() => [] as string[]);
    for (const task of tasks) {
      const children = await readFile(`/proc/${next}/task/${task}/children`, "utf8").catch(() => "");
      for (const child of children.split(" ").filter(Boolean)) queue.push(Number(child));
    }
  }
  return found;
}

/** SIGKILLs a process and everything it started (e.g. a sandbox and what runs inside it), and waits until they are gone. */
export async function killTree(pid: number): Promise<void> {
  for (const process of await processTree(pid)) await killAndWait(process.pid, process.startTime);
}

/**
 * SIGKILLs a process we identified earlier and waits until it is gone. Safe to
 * call on a process that already exited, and never signals a recycled pid.
 */
export async function killAndWait(pid: number, startTime: string | undefined, timeoutMs = 5000): Promise<boolean> {
  if (!(await isSameProcessAlive(pid, startTime))) return true;
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    return true;
  }
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!(await isSameProcessAlive(pid, startTime))) return true;
    await sleep(5);
  }
  return false;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  input?: string;
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Called with each line written to stderr (progress of long tools). */
  onStderrLine?: (line: string) => void;
  /** Keep at most this many bytes of each stream (the tail). Default 1 MiB. */
  maxBytes?: number;
}

/** Runs a host tool to completion with a deadline, keeping a bounded tail of its output. */
export function runTool(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const maxBytes = options.maxBytes ?? 1024 * 1024;
  return new Promise((resolvePromise, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: [options.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
      signal: options.signal,
    });
    let stdout = "";
    let stderr = "";
    let partial = "";
    const keepTail = (acc: string, chunk: string) => {
      const next = acc + chunk;
      return next.length > maxBytes ? next.slice(next.length - maxBytes) : next;
    };
    child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
      stdout = keepTail(stdout, chunk);
    });
    child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
      stderr = keepTail(stderr, chunk);
      if (options.onStderrLine) {
        partial += chunk;
        const lines = partial.split("\n");
        partial = lines.pop() ?? "";
        for (const line of lines) options.onStderrLine(line);
      }
    });
    if (options.input !== undefined) child.stdin?.end(options.input);
    const timer =
      options.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            child.kill("SIGKILL");
          }, options.timeoutMs);
    child.on("error", (error) => {
      if (timer) clearTimeout(timer);
      reject(error);
    });
    child.on("close", (code, signal) => {
      if (timer) clearTimeout(timer);
      resolvePromise({ code, signal, stdout, stderr });
    });
  });
}

/**
 * Which build of a program a path holds: its path, size and modification
 * time. Keys what is known of a binary (a template's QEMU, whether that QEMU
 * has seccomp); a rebuilt or upgraded binary gets a new identity.
 */
export async function executableIdentity(path: string): Promise<string> {
  const info = await stat(path);
  return `${path}:${info.size}:${Math.floor(info.mtimeMs)}`;
}

/** Finds an executable on PATH (or checks an explicit path). */
export async function which(command: string): Promise<string | undefined> {
  const { access, constants } = await import("node:fs/promises");
  const candidates = command.includes("/")
    ? [command]
    : // System tools (mkfs.ext4) live in sbin, which a user's PATH often lacks.
      `${process.env.PATH ?? ""}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`
        .split(":")
        .filter(Boolean)
        .map((dir) => `${dir}/${command}`);
  for (const candidate of candidates) {
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // keep looking
    }
  }
  return undefined;
}
