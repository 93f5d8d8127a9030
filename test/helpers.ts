import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import assert from "node:assert/strict";
import { Pyro, PyroError } from "../src/index.js";

export const ROOT = resolve(import.meta.dirname, "..");
export const PYRO_BIN = join(ROOT, "bin", "pyro");

/**
 * Each test file gets its own state directory (so leftovers are attributable)
 * and shares the user's environment cache, so environments are built once per
 * machine (or CI run) and reused by every test.
 */
export function tempStateDir(prefix = "pyro-test-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
  /** Largest resident set size seen while the process ran, in bytes. */
  peakRssBytes: number;
  wallMs: number;
}

/** Runs the built CLI as a real process. */
export function runCli(args: string[], options: { stateDir: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = { stateDir: "" }): Promise<CliResult> {
  return new Promise((resolvePromise, reject) => {
    const started = Date.now();
    const child = spawn(process.execPath, [PYRO_BIN, ...args], {
      env: { ...process.env, PYRO_STATE_DIR: options.stateDir, PYRO_PROGRESS: "0", ...options.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    let peakRssBytes = 0;
    child.stdout.setEncoding("utf8").on("data", (c: string) => (stdout += c));
    child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
    const sampler = setInterval(() => {
      try {
        const status = readFileSync(`/proc/${child.pid}/status`, "utf8");
        const match = /VmRSS:\s+(\d+) kB/.exec(status);
        if (match) peakRssBytes = Math.max(peakRssBytes, Number(match[1]) * 1024);
      } catch {
        // exited
      }
    }, 25);
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 180_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearInterval(sampler);
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr, peakRssBytes, wallMs: Date.now() - started });
    });
  });
}

/** Processes whose program name (argv[0]'s last part) matches `program` and whose command line mentions `needle`. */
function processesUnder(needle: string, program: RegExp): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8");
      const argv0 = cmdline.slice(0, cmdline.indexOf("\0"));
      if (program.test(argv0.split("/").pop() ?? "") && cmdline.includes(needle)) pids.push(Number(entry));
    } catch {
      // gone
    }
  }
  return pids;
}

/** QEMU processes whose command line mentions `needle` (a state directory): QEMU itself, not the sandbox (bubblewrap) that started it and carries its argv. */
export function qemuProcessesUnder(needle: string): number[] {
  return processesUnder(needle, /^qemu-system/);
}

/** What runs for a VM: QEMU, the sandboxes around it and its network helper, the helper and passt, the launcher before it execs. */
const VM_PROGRAMS = /^(qemu-system.*|bwrap|pyro-netd|pyro-launch|passt)$/;

/**
 * Every process of a VM whose command line mentions `needle` (a state directory, a VM id):
 * QEMU and all that runs around it. A sandbox (bubblewrap) left without its QEMU counts too,
 * which counting QEMUs alone would miss.
 */
export function vmProcessesUnder(needle: string): number[] {
  return processesUnder(needle, VM_PROGRAMS);
}

/** VM directories left under a state directory. */
export function vmDirsUnder(stateDir: string): string[] {
  try {
    return readdirSync(join(stateDir, "vms"));
  } catch {
    return [];
  }
}

/**
 * After each test: nothing of it may remain (no QEMU, sandbox or network helper mentioning the
 * state directory, no VM directory). Whatever did remain is killed and removed before asserting, so one failing test is
 * reported once instead of failing every test after it.
 */
export function assertNothingLeft(stateDir: string, options: { dirs?: boolean } = {}): void {
  const pids = vmProcessesUnder(stateDir);
  const dirs = options.dirs === false ? [] : vmDirsUnder(stateDir);
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  for (const dir of dirs) rmSync(join(stateDir, "vms", dir), { recursive: true, force: true });
  assert.deepEqual({ vmPids: pids, vmDirs: dirs }, { vmPids: [], vmDirs: [] });
}

let pulled: Promise<unknown> | undefined;

/** Builds debian:12 once (the first test run pays for it; later runs reuse the cache). */
export function ensureEnvironment(name = "debian:12"): Promise<unknown> {
  pulled ??= new Pyro().pullEnvironment(name, {
    onProgress: (e) => process.stderr.write(`# pull ${name}: ${e.message}\n`),
  });
  return pulled;
}

/** Awaits a promise that must fail with a PyroError of `code` (and a message matching `message`). */
export async function rejectsWith(promise: Promise<unknown>, code: string, message?: RegExp): Promise<PyroError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof PyroError, `not a PyroError: ${String(error)}`);
    assert.equal(error.code, code, error.message);
    if (message) assert.match(error.message, message);
    return error;
  }
  assert.fail(`expected ${code}`);
}

/** Waits until `check` holds, polling; what a test waits for is a state, never a duration. */
export async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolvePromise) => setTimeout(resolvePromise, 50));
  }
}
