import { spawn } from "node:child_process";
import { access } from "node:fs/promises";
import type { ExecOutcome, ExecHooks } from "../../agent/client.js";

/**
 * Runs a command on the host, with NO isolation: the opt-in fallback for hosts
 * that cannot boot a guest. Same result shape and bounds as a guest command.
 */
export async function hostExec(
  command: string,
  options: { cwd: string; timeoutMs: number; maxOutputBytes: number },
  hooks: ExecHooks = {},
): Promise<ExecOutcome> {
  const shell = (await access("/bin/bash").then(() => true).catch(() => false)) ? "/bin/bash" : "/bin/sh";
  const started = Date.now();
  const child = spawn(shell, ["-lc", command], { cwd: options.cwd, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  const kept = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
  const keptBytes = { stdout: 0, stderr: 0 };
  const seen = { stdout: 0, stderr: 0 };
  const collect = (stream: "stdout" | "stderr") => (chunk: Buffer) => {
    seen[stream] += chunk.length;
    const room = options.maxOutputBytes - keptBytes[stream];
    if (room <= 0) return;
    const slice = chunk.length > room ? chunk.subarray(0, room) : chunk;
    kept[stream].push(slice);
    keptBytes[stream] += slice.length;
    hooks.onOutput?.(stream, slice);
  };
  child.stdout.on("data", collect("stdout"));
  child.stderr.on("data", collect("stderr"));
  let timedOut = false;
  const killGroup = () => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
    } catch {
      // already gone
    }
  };
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup();
  }, options.timeoutMs);
  const onAbort = () => killGroup();
  hooks.signal?.addEventListener("abort", onAbort, { once: true });
  if (child.pid !== undefined) hooks.onStarted?.(child.pid);
  const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolvePromise, reject) => {
    child.once("error", reject);
    child.once("exit", (c, s) => resolvePromise({ code: c, signal: s }));
  });
  // Background children may hold the pipes open; give them a moment, then stop reading.
  await Promise.race([
    Promise.all([new Promise((r) => child.stdout.once("close", r)), new Promise((r) => child.stderr.once("close", r))]),
    new Promise((r) => setTimeout(r, 250)),
  ]);
  child.stdout.destroy();
  child.stderr.destroy();
  clearTimeout(timer);
  hooks.signal?.removeEventListener("abort", onAbort);
  const signalNumber = signal ? (await import("node:os")).constants.signals[signal] : undefined;
  return {
    exitCode: timedOut ? 124 : (code ?? 128 + (signalNumber ?? 0)),
    signal: signal ?? null,
    timedOut,
    durationMs: Date.now() - started,
    stdout: Buffer.concat(kept.stdout),
    stderr: Buffer.concat(kept.stderr),
    stdoutBytes: seen.stdout,
    stderrBytes: seen.stderr,
    stdoutTruncated: seen.stdout > keptBytes.stdout,
    stderrTruncated: seen.stderr > keptBytes.stderr,
  };
}
