/**
 * Benchmarks on real guests, all in one run so the figures are comparable:
 * cold boot, restore from a template snapshot, runInVm end to end three ways
 * (cold, restored, from a warm pool),
 * exec round trip in a running VM, host `bash -c true` as the floor,
 * QEMU memory per VM, and
 * workspaces: create (empty and seeded), exec round trip, sync push rate,
 * file read/write round trips, patch apply, diff of 1,000 files, export
 * rate, snapshot create and reset, stop and start with memory, fork of 1
 * and of 4;
 * what QEMU's confinement costs (the same boots with PYRO_CONFINEMENT=off),
 * and the network: restore with a NIC and its helper, and egress throughput
 * from a guest to a server in a network namespace made for the purpose
 * (opened explicitly; as root only).
 *
 * Last, the performance targets, each beside its host floor (bench/targets.ts):
 * exec round trips, the CLI's `pyro run`, `vm_run` through `pyro mcp serve`,
 * push/seed/export rates, runs per second with 1-8 in parallel, 16 idle
 * workspaces, and `workspace list` with 100 records.
 *
 *   npm run bench [-- --runs N] [-- --json] [-- --only work|targets]
 */
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { packageRoot } from "../src/config.js";
import { Pyro } from "../src/index.js";
import { VmManager } from "../src/runtime/vms.js";
import { startTcpServers, TestNetns } from "../test/netns.js";
import { cpuTicks, formatMs, median, repeat, rssMib, time } from "./measure.js";
import { benchTargets, formatTargets } from "./targets.js";

const { values } = parseArgs({ options: { runs: { type: "string", default: "10" }, json: { type: "boolean", default: false }, only: { type: "string" } } });
const runs = Math.max(1, Number(values.runs));
const restoreRuns = Math.max(20, runs);
const stateDir = mkdtempSync(join(tmpdir(), "pyro-bench-"));
const pyro = new Pyro({ stateDir });
const cold = new Pyro({ stateDir, env: { ...process.env, PYRO_TEMPLATES: "0" } });
const unconfined = new Pyro({ stateDir, env: { ...process.env, PYRO_CONFINEMENT: "off" } });
const unconfinedCold = new Pyro({ stateDir, env: { ...process.env, PYRO_CONFINEMENT: "off", PYRO_TEMPLATES: "0" } });
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
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? NaN;
  return { name, runs: samples.length, minMs: sorted[0] ?? NaN, medianMs: median(sorted), p95Ms: at(0.95), maxMs: sorted[sorted.length - 1] ?? NaN };
}

function log(message: string): void {
  process.stderr.write(`bench: ${message}\n`);
}

async function waitForFillers(): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline && spawnSync("pgrep", ["-f", `[b]in/pyro pool fill`]).status === 0) await new Promise((r) => setTimeout(r, 200));
}

/** Shells, services and published ports; returns the published port's throughput in MB/s. */
async function benchWork(results: Stats[]): Promise<number> {
  log(`shells and services: open, echo round trip, service start to ready (HTTP), published-port requests; ${runs} runs`);
  const work = await pyro.createWorkspace({ environment: "debian:12", networkPolicy: "egress+published-ports" });
  // An HTTP/1.0 server in the guest's perl: a short page, or BIG bytes for throughput.
  await work.writeFile(
    "srv.pl",
    'use IO::Socket::INET; $SIG{PIPE} = "IGNORE"; my $port = shift; my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => $port, Listen => 64, ReuseAddr => 1) or die "$!";\n' +
      'my $body = $ENV{BIG} ? "x" x $ENV{BIG} : "ok\\n"; $| = 1;\n' +
      'while (my $c = $s->accept) { my $r = <$c>; while (my $l = <$c>) { last if $l =~ /^\\r?\\n$/ } print $c "HTTP/1.0 200 OK\\r\\nContent-Length: " . length($body) . "\\r\\n\\r\\n" . $body; close $c }\n',
  );
  const shellIds: string[] = [];
  results.push(stats("shell open", await repeat(runs, async () => shellIds.push((await pyro.openShell(work.workspaceId)).shellId))));
  const shell = shellIds[0]!;
  let cursor = (await pyro.readShell(work.workspaceId, shell, { waitForIdleMs: 300 })).nextCursor;
  let mark = 0;
  const echoes = await repeat(runs, async () => {
    const want = `mark-${++mark}-end`;
    // Typed as two words, so only the command's output holds the whole mark.
    await pyro.writeShell(work.workspaceId, shell, `echo mark-${mark} -end | tr -d ' '`);
    let seen = "";
    while (!seen.includes(want)) {
      const read = await pyro.readShell(work.workspaceId, shell, { cursor });
      seen += read.output;
      cursor = read.nextCursor;
    }
  });
  results.push(stats("shell write + read of an echo, round trip", echoes));
  for (const id of shellIds) await pyro.closeShell(work.workspaceId, id);
  let svc = 0;
  const serviceStarts = await repeat(runs, async () => {
    const port = 8200 + svc;
    await pyro.startService(work.workspaceId, { name: `s${svc++}`, command: `perl srv.pl ${port}`, readiness: { type: "http", url: `http://127.0.0.1:${port}/` } });
  });
  results.push(stats("service start until ready (HTTP readiness)", serviceStarts));
  for (let i = 0; i < svc; i++) await pyro.stopService(work.workspaceId, `s${i}`);
  const web = await pyro.startService(work.workspaceId, { name: "web", command: "perl srv.pl 8300", readiness: { type: "tcp", port: 8300 }, publish: [{ guestPort: 8300 }] });
  const hostPort = web.publishedPorts[0]!.hostPort;
  await (await fetch(`http://127.0.0.1:${hostPort}/`)).text();
  results.push(stats("published port: HTTP request from the host", await repeat(Math.max(runs, 10), async () => (await fetch(`http://127.0.0.1:${hostPort}/`)).text())));
  const bigBytes = 20 * 1024 * 1024;
  const bigService = await pyro.startService(work.workspaceId, { name: "big", command: `BIG=${bigBytes} perl srv.pl 8302`, readiness: { type: "tcp", port: 8302 }, publish: [{ guestPort: 8302 }] });
  const bigPort = bigService.publishedPorts[0]?.hostPort;
  if (bigPort === undefined) throw new Error(`no published port: ${JSON.stringify(bigService)}`);
  const transfers = await repeat(3, async () => {
    const body = await (await fetch(`http://127.0.0.1:${bigPort}/`)).arrayBuffer();
    if (body.byteLength !== bigBytes) throw new Error(`got ${body.byteLength} bytes`);
  });
  await work.delete();
  return bigBytes / 1e6 / (stats("", transfers).medianMs / 1000);
}

async function main(): Promise<void> {
  await pyro.pullEnvironment("debian:12", { warm: true });
  const results: Stats[] = [];
  if (values.only === "targets") {
    // Only the performance targets with their host floors (npm run bench -- --only targets).
    const targets = await benchTargets(pyro, stateDir, runs, log);
    process.stdout.write(values.json ? `${JSON.stringify(targets, null, 2)}\n` : `${formatTargets(targets)}\n`);
    return;
  }
  if (values.only === "work") {
    // Only shells, services and published ports (npm run bench -- --only work).
    const publishedMBps = await benchWork(results);
    for (const r of results) process.stdout.write(`${r.name}: median ${r.medianMs.toFixed(1)} ms (min ${r.minMs.toFixed(1)}, max ${r.maxMs.toFixed(1)}, ${r.runs} runs)\n`);
    process.stdout.write(`published port throughput (20 MiB HTTP body, median of 3): ${publishedMBps.toFixed(1)} MB/s\n`);
    return;
  }

  // First, while this process is small: spawning from a large process costs more, which is not the floor.
  log(`host bash -c true, ${runs} runs`);
  results.push(stats("host bash -c true (floor)", await repeat(runs, () => Promise.resolve(spawnSync("bash", ["-c", "true"])))));

  log(`cold boot to agent ready, ${runs} runs`);
  results.push(
    stats(
      "cold boot to agent ready",
      await repeat(runs, async () => {
        const vm = await cold.createVm({ environment: "debian:12" });
        try {
          await cold.startVm(vm.vmId);
        } finally {
          await cold.deleteVm(vm.vmId);
        }
      }),
    ),
  );

  log(`restore from template to agent ready, ${restoreRuns} runs`);
  const restores: number[] = [];
  for (let i = 0; i < restoreRuns; i++) {
    const vm = await pyro.createVm({ environment: "debian:12" });
    restores.push(await time(() => pyro.startVm(vm.vmId)));
    await pyro.deleteVm(vm.vmId);
  }
  results.push(stats("restore to agent ready", restores));

  log(`runInVm("true") cold, ${runs} runs`);
  results.push(stats("runInVm true, cold boot", await repeat(runs, () => cold.runInVm({ environment: "debian:12", command: "true" }))));

  log(`runInVm("true") restored, ${restoreRuns} runs`);
  results.push(stats("runInVm true, restored", await repeat(restoreRuns, () => pyro.runInVm({ environment: "debian:12", command: "true" }))));

  log(`without confinement (PYRO_CONFINEMENT=off): cold boot, restore, runInVm; ${runs} runs each`);
  results.push(
    stats(
      "cold boot to agent ready, unconfined",
      await repeat(runs, async () => {
        const vm = await unconfinedCold.createVm({ environment: "debian:12" });
        try {
          await unconfinedCold.startVm(vm.vmId);
        } finally {
          await unconfinedCold.deleteVm(vm.vmId);
        }
      }),
    ),
  );
  const unconfinedRestores: number[] = [];
  for (let i = 0; i < runs; i++) {
    const vm = await unconfined.createVm({ environment: "debian:12" });
    unconfinedRestores.push(await time(() => unconfined.startVm(vm.vmId)));
    await unconfined.deleteVm(vm.vmId);
  }
  results.push(stats("restore to agent ready, unconfined", unconfinedRestores));
  results.push(stats("runInVm true, restored, unconfined", await repeat(runs, () => unconfined.runInVm({ environment: "debian:12", command: "true" }))));

  log(`restore with network (egress: the helper and passt start too), ${runs} runs`);
  const networked: number[] = [];
  for (let i = 0; i < runs + 1; i++) {
    const vm = await pyro.createVm({ environment: "debian:12", networkPolicy: "egress" });
    // The first start makes the network shape's template.
    const ms = await time(() => pyro.startVm(vm.vmId));
    if (i > 0) networked.push(ms);
    await pyro.deleteVm(vm.vmId);
  }
  results.push(stats("restore to agent ready, with network", networked));
  const egress = await egressThroughput();

  log(`runInVm("true") from a warm pool (PYRO_POOL_SIZE=2), ${restoreRuns} runs, each after the pool refilled`);
  const poolEnv = { ...process.env, PYRO_POOL_SIZE: "2" };
  const pooledPyro = new Pyro({ stateDir, env: poolEnv });
  const poolRuntime = new VmManager(pooledPyro.paths, poolEnv);
  const waiting = async () => (await poolRuntime.list()).filter((r) => r.state === "pooled").length;
  await pooledPyro.fillPool({ environment: "debian:12" });
  const pooledRuns: number[] = [];
  for (let i = 0; i < restoreRuns; i++) {
    const deadline = Date.now() + 30_000;
    while ((await waiting()) < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    // Let the filler process exit before timing, so it does not share the CPU with the run.
    await new Promise((r) => setTimeout(r, 500));
    pooledRuns.push(await time(() => pooledPyro.runInVm({ environment: "debian:12", command: "true" })));
  }
  results.push(stats("runInVm true, warm pool", pooledRuns));
  // The last run started a filler; let it finish before removing what it made.
  await waitForFillers();
  for (const record of await poolRuntime.list()) await poolRuntime.delete(record.vmId);

  log(`exec round trip in a running VM, ${runs} runs`);
  const vm = await pyro.createVm({ environment: "debian:12" });
  await pyro.startVm(vm.vmId);
  await runtime.exec(vm.vmId, { command: "true", timeoutSeconds: 30 }); // the first exec uses the boot's session
  results.push(stats("exec round trip in a running VM (true)", await repeat(runs, () => runtime.exec(vm.vmId, { command: "true", timeoutSeconds: 30 }))));
  await pyro.deleteVm(vm.vmId);


  log("QEMU resident memory and idle CPU of restored 1024 MiB guests (4 at once; CPU over 10 s)");
  const held = await Promise.all([1, 2, 3, 4].map(async () => pyro.startVm((await pyro.createVm({ environment: "debian:12", memMib: 1024 })).vmId)));
  const rss: number[] = [];
  const qemuPids: number[] = [];
  for (const info of held) {
    const record = await runtime.status(info.vmId);
    if (record.qemu) {
      rss.push(rssMib(record.qemu.pid));
      qemuPids.push(record.qemu.pid);
    }
  }
  await new Promise((r) => setTimeout(r, 2000));
  const before = qemuPids.map(cpuTicks);
  await new Promise((r) => setTimeout(r, 10_000));
  // Clock ticks are 1/100 s: ticks over 10 s are the percentage of one core over 10.
  const idleCpuPercent = qemuPids.map((pid, i) => (cpuTicks(pid) - before[i]!) / 10);
  for (const info of held) await pyro.deleteVm(info.vmId);
  const memory = { guestMemMib: 1024, qemuRssMib: rss.map((m) => Math.round(m)), averageMib: Math.round(rss.reduce((a, b) => a + b, 0) / rss.length), idleCpuPercent };

  log(`workspaces: create empty, create seeded (10 MB in 1,000 files), exec, push; ${runs} runs`);
  const seed = join(stateDir, "seed");
  mkdirSync(seed);
  for (let i = 0; i < 1000; i++) {
    const dir = join(seed, `d${i % 20}`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, `f${i}.bin`), randomBytes(10 * 1024));
  }
  const seedBytes = 1000 * 10 * 1024;
  const empties: number[] = [];
  const seeded: number[] = [];
  for (let i = 0; i < runs; i++) {
    let id = "";
    empties.push(await time(async () => (id = (await pyro.createWorkspace({ environment: "debian:12" })).workspaceId)));
    await pyro.deleteWorkspace(id);
    seeded.push(await time(async () => (id = (await pyro.createWorkspace({ environment: "debian:12", seedPath: seed })).workspaceId)));
    await pyro.deleteWorkspace(id);
  }
  results.push(stats("workspace create, empty", empties));
  results.push(stats("workspace create, seeded 10 MB / 1,000 files", seeded));
  const ws = (await pyro.createWorkspace({ environment: "debian:12" })).workspaceId;
  await pyro.execWorkspace(ws, { command: "true" });
  results.push(stats("workspace exec round trip (true)", await repeat(runs, () => pyro.execWorkspace(ws, { command: "true" }))));
  const pushes = await repeat(runs, () => pyro.pushWorkspaceSync(ws, seed, { dest: "pushed" }));
  results.push(stats("workspace sync push 10 MB / 1,000 files", pushes));
  await pyro.deleteWorkspace(ws);
  const pushMBps = seedBytes / 1e6 / (stats("", pushes).medianMs / 1000);

  // The editing surface, on a workspace seeded with the same 1,000 files.
  const edit = await pyro.createWorkspace({ environment: "debian:12", seedPath: seed });
  const text = "x".repeat(4095) + "\n";
  await edit.writeFile("bench/a.txt", text);
  results.push(stats("file write round trip (4 KiB)", await repeat(runs, () => edit.writeFile("bench/a.txt", text))));
  results.push(stats("file read round trip (4 KiB)", await repeat(runs, () => edit.readFile("bench/a.txt"))));
  await edit.writeFile("bench/p.txt", "a\nb\nc\n");
  let flip = false;
  const patches = await repeat(runs, () => {
    flip = !flip;
    return edit.applyPatch(flip ? "--- a/bench/p.txt\n+++ b/bench/p.txt\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n" : "--- a/bench/p.txt\n+++ b/bench/p.txt\n@@ -1,3 +1,3 @@\n a\n-B\n+b\n c\n");
  });
  results.push(stats("patch apply (one hunk)", patches));
  await edit.exec("for i in 1 2 3 4 5; do echo changed >> d$i/f$i.bin; done; rm d0/f0.bin");
  results.push(stats("diff of a 1,000-file workspace (7 changes)", await repeat(Math.min(runs, 5), () => edit.diff())));
  const exportDir = mkdtempSync(join(tmpdir(), "pyro-bench-export-"));
  let n = 0;
  const exports = await repeat(Math.min(runs, 5), () => edit.export(join(exportDir, `out${n++}`)));
  rmSync(exportDir, { recursive: true, force: true });
  results.push(stats("export 10 MB / 1,000 files to a directory", exports));
  const exportMBps = seedBytes / 1e6 / (stats("", exports).medianMs / 1000);
  let s = 0;
  const snapshots = await repeat(Math.min(runs, 5), () => pyro.createSnapshot(edit.workspaceId, `s${s++}`));
  results.push(stats("snapshot create", snapshots));
  results.push(stats("reset to a snapshot (boots cold)", await repeat(3, () => pyro.resetWorkspace(edit.workspaceId, { snapshot: "s0" }))));
  const stops: number[] = [];
  const starts: number[] = [];
  for (let i = 0; i < 3; i++) {
    stops.push(await time(() => pyro.stopWorkspace(edit.workspaceId)));
    starts.push(await time(() => pyro.startWorkspace(edit.workspaceId)));
  }
  results.push(stats("workspace stop, memory saved (1024 MiB)", stops));
  results.push(stats("workspace start, resumed with its memory", starts));
  for (const count of [1, 4]) {
    let forks: string[] = [];
    const wall = await time(async () => (forks = (await pyro.forkWorkspace(edit.workspaceId, { count })).workspaces.map((w) => w.workspaceId)));
    results.push(stats(`fork of ${count}, until all are ready`, [wall]));
    for (const id of forks) await pyro.deleteWorkspace(id);
  }
  await edit.delete();

  const publishedMBps = await benchWork(results);
  const targets = await benchTargets(pyro, stateDir, runs, log);

  const accel = (await pyro.doctor({ bootCheck: false })).accel.accel;
  const byName = (name: string) => results.find((r) => r.name === name)!;
  const ratios = {
    coldOverRestoreRunInVm: byName("runInVm true, cold boot").medianMs / byName("runInVm true, restored").medianMs,
    coldBootOverRestore: byName("cold boot to agent ready").medianMs / byName("restore to agent ready").medianMs,
    restoredRunInVmOverHostFloor: byName("runInVm true, restored").medianMs / byName("host bash -c true (floor)").medianMs,
    confinedOverUnconfinedRestore: byName("restore to agent ready").medianMs / byName("restore to agent ready, unconfined").medianMs,
    confinedOverUnconfinedColdBoot: byName("cold boot to agent ready").medianMs / byName("cold boot to agent ready, unconfined").medianMs,
    coldOverPooledRunInVm: byName("runInVm true, cold boot").medianMs / byName("runInVm true, warm pool").medianMs,
    pooledRunInVmOverHostFloor: byName("runInVm true, warm pool").medianMs / byName("host bash -c true (floor)").medianMs,
  };
  if (values.json) {
    process.stdout.write(`${JSON.stringify({ accel, results, ratios, memory, pushMBps, exportMBps, publishedMBps, egress, targets }, null, 2)}\n`);
    return;
  }

  const rows = [["benchmark", "runs", "min", "median", "p95", "max"], ...results.map((r) => [r.name, String(r.runs), formatMs(r.minMs), formatMs(r.medianMs), formatMs(r.p95Ms), formatMs(r.maxMs)])];
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  const out: string[] = [`accelerator: ${accel}`];
  for (const row of rows) out.push(row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join("  "));
  out.push(
    `ratios (medians): runInVm cold/restored ${ratios.coldOverRestoreRunInVm.toFixed(1)}x, boot cold/restore ${ratios.coldBootOverRestore.toFixed(1)}x, runInVm restored/host floor ${ratios.restoredRunInVmOverHostFloor.toFixed(1)}x`,
    `ratios with a warm pool (medians): runInVm cold/pooled ${ratios.coldOverPooledRunInVm.toFixed(1)}x, runInVm pooled/host floor ${ratios.pooledRunInVmOverHostFloor.toFixed(1)}x`,
    `QEMU RSS per restored ${memory.guestMemMib} MiB guest: ${memory.qemuRssMib.join(", ")} MiB (average ${memory.averageMib} MiB)`,
    `idle VM, host CPU per QEMU over 10 s: ${memory.idleCpuPercent.map((p) => `${p.toFixed(1)} %`).join(", ")} of one core`,
    `workspace sync push throughput (10 MB in 1,000 files, median): ${pushMBps.toFixed(1)} MB/s`,
    `workspace export throughput (10 MB in 1,000 files, median): ${exportMBps.toFixed(1)} MB/s`,
    `published port throughput (20 MiB HTTP body from a guest service to a host client, median of 3): ${publishedMBps.toFixed(1)} MB/s`,
    `confinement cost (medians, confined/unconfined): restore ${ratios.confinedOverUnconfinedRestore.toFixed(2)}x, cold boot ${ratios.confinedOverUnconfinedColdBoot.toFixed(2)}x`,
    egress.mbps.length
      ? `egress throughput, guest to a server in a test network namespace (${egress.megabytes} MB per run): ${egress.mbps.map((m) => m.toFixed(1)).join(", ")} MB/s`
      : `egress throughput: skipped (${egress.skipped})`,
  );
  out.push("", "targets (medians; each beside the same work on the host):", formatTargets(targets));
  process.stdout.write(`${out.join("\n")}\n`);
}

/**
 * MB/s from a guest to a TCP sink in a network namespace the bench makes,
 * opened with PYRO_NETWORK_ALLOW_DESTINATIONS. The workspace is created by
 * pyro running inside the namespace, so its helper and passt are there.
 */
async function egressThroughput(): Promise<{ megabytes: number; mbps: number[]; skipped?: string }> {
  const megabytes = 200;
  if (process.getuid?.() !== 0) return { megabytes, mbps: [], skipped: "needs root for a network namespace" };
  log(`egress throughput: ${megabytes} MB from a guest to a server in a network namespace, 3 runs`);
  const netns = new TestNetns("pyrob");
  netns.create(["10.77.0.1/24", "10.77.0.2/24"], {});
  const servers = await startTcpServers(["10.77.0.2:0"], netns);
  let id = "";
  try {
    const [command, args] = netns.wrap(process.execPath, [join(packageRoot(), "bin", "pyro"), "workspace", "create", "debian:12", "--network-policy", "egress", "--id-only"]);
    const created = spawnSync(command, args, {
      env: { ...process.env, PYRO_STATE_DIR: stateDir, PYRO_NETWORK_ALLOW_DESTINATIONS: `10.77.0.2:${servers.ports[0]}` },
      encoding: "utf8",
    });
    if (created.status !== 0) throw new Error(`creating the workspace in the namespace failed: ${created.stderr}`);
    id = created.stdout.trim();
    const mbps: number[] = [];
    for (let i = 0; i < 3; i++) {
      const result = await pyro.execWorkspace(id, {
        command: `dd if=/dev/zero bs=1M count=${megabytes} 2>&1 >/dev/tcp/10.77.0.2/${servers.ports[0]} | tail -1`,
        timeoutSeconds: 300,
      });
      // dd: "N bytes (...) copied, S s, R MB/s"
      const seconds = Number(/copied, ([\d.]+) s/.exec(result.stdout)?.[1]);
      if (!(seconds > 0)) throw new Error(`no dd figure: ${result.stdout} ${result.stderr}`);
      mbps.push((megabytes * 1024 * 1024) / 1e6 / seconds);
    }
    return { megabytes, mbps };
  } finally {
    if (id) await pyro.deleteWorkspace(id).catch(() => undefined);
    servers.stop();
    netns.destroy();
  }
}

try {
  await main();
} finally {
  // Whatever a failed step left running goes with the state directory.
  await waitForFillers();
  for (const record of await runtime.list().catch(() => [])) await runtime.delete(record.vmId).catch(() => undefined);
  rmSync(stateDir, { recursive: true, force: true });
}
