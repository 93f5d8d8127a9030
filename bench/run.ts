/**
 * Benchmarks on real guests, all in one run so the figures are comparable:
 * cold boot to a ready agent, runInVm of `true` end to end, exec round trip in
 * a running VM, and host `bash -c true` as the floor.
 *
 *   npm run bench [-- --runs N] [-- --json]
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Pyro } from "../src/index.js";
import { VmManager } from "../src/runtime/vms.js";

const { values } = parseArgs({ options: { runs: { type: "string", default: "10" }, json: { type: "boolean", default: false } } });
const runs = Math.max(1, Number(values.runs));
const stateDir = mkdtempSync(join(tmpdir(), "pyro-bench-"));
const pyro = new Pyro({ stateDir });
const runtime = new VmManager(pyro.paths);

interface Stats {
  name: string;
  runs: number;
  minMs: number;
  medianMs: number;
  p95Ms: number;
  maxMs: number;
}

function stats(name: string, samples: number[]): Stats {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
  const median = sorted.length % 2 ? at(0.5) : ((sorted[sorted.length / 2 - 1] ?? 0) + (sorted[sorted.length / 2] ?? 0)) / 2;
  return { name, runs: samples.length, minMs: sorted[0] ?? NaN, medianMs: median, p95Ms: at(0.95), maxMs: sorted[sorted.length - 1] ?? NaN };
}

async function time(fn: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await fn();
  return performance.now() - started;
}

function log(message: string): void {
  process.stderr.write(`bench: ${message}\n`);
}

async function main(): Promise<void> {
  await pyro.pullEnvironment("debian:12");
  const results: Stats[] = [];

  log(`cold boot to agent ready, ${runs} runs`);
  const boots: number[] = [];
  for (let i = 0; i < runs; i++) {
    const vm = await pyro.createVm({ environment: "debian:12" });
    boots.push(await time(() => pyro.startVm(vm.vmId)));
    await pyro.deleteVm(vm.vmId);
  }
  results.push(stats("cold boot to agent ready", boots));

  log(`runInVm("true") end to end, ${runs} runs`);
  const ends: number[] = [];
  for (let i = 0; i < runs; i++) ends.push(await time(() => pyro.runInVm({ environment: "debian:12", command: "true" })));
  results.push(stats("runInVm true, end to end", ends));

  log(`exec round trip in a running VM, ${runs} runs`);
  const vm = await pyro.createVm({ environment: "debian:12" });
  await pyro.startVm(vm.vmId);
  await runtime.exec(vm.vmId, { command: "true", timeoutSeconds: 30 }); // first exec pays for the boot session
  const execs: number[] = [];
  for (let i = 0; i < runs; i++) execs.push(await time(() => runtime.exec(vm.vmId, { command: "true", timeoutSeconds: 30 })));
  await pyro.deleteVm(vm.vmId);
  results.push(stats("exec round trip (bash -lc true)", execs));

  log(`host bash -c true, ${runs} runs`);
  const host: number[] = [];
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    spawnSync("bash", ["-c", "true"]);
    host.push(performance.now() - started);
  }
  results.push(stats("host bash -c true (floor)", host));

  const accel = (await pyro.doctor({ bootCheck: false })).accel.accel;
  if (values.json) {
    process.stdout.write(`${JSON.stringify({ accel, runs, results }, null, 2)}\n`);
    return;
  }
  const fmt = (ms: number) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`);
  const rows = [["benchmark", "runs", "min", "median", "p95", "max"], ...results.map((r) => [r.name, String(r.runs), fmt(r.minMs), fmt(r.medianMs), fmt(r.p95Ms), fmt(r.maxMs)])];
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  process.stdout.write(`accelerator: ${accel}\n`);
  for (const row of rows) process.stdout.write(`${row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join("  ")}\n`);
  const [boot, end, exec, floor] = results;
  process.stdout.write(
    `ratios (medians): runInVm/cold boot ${(end!.medianMs / boot!.medianMs).toFixed(2)}, exec/host floor ${(exec!.medianMs / floor!.medianMs).toFixed(1)}x\n`,
  );
}

try {
  await main();
} finally {
  rmSync(stateDir, { recursive: true, force: true });
}
