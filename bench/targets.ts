/**
 * The performance targets, each measured beside its host floor: what the
 * same work costs on the host with no VM in between. Every figure is a
 * median of real runs on real guests; nothing is estimated.
 */
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { packageRoot } from "../src/config.js";
import type { Pyro } from "../src/index.js";
import { VmManager } from "../src/runtime/vms.js";
import { cpuTicks, formatMs, hostBusyTicks, median, pssMib, repeat, rssMib, sleep, time } from "./measure.js";

export interface TargetRow {
  figure: string;
  measured: string;
  target: string;
  floor: string;
  /** measured / floor, where both are times or both are rates (then floor / measured). */
  ratio: string;
  met: boolean | null;
}

export interface ScaleFigures {
  startPath: string;
  runsPerSecond: { parallel: number; runsPerSecond: number }[];
  idle: { workspaces: number; up: number; qemuRssMib: number[]; qemuPssMib: number[]; qemuCpuPercent: number[]; hostCpuPercent: number };
  list: { records: number; workspaces: number; cliMs: number; sdkMs: number; cliMsWith16: number };
}

const PYRO = join(packageRoot(), "bin", "pyro");

function run(args: string[], env: NodeJS.ProcessEnv): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [PYRO, ...args], { env, stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`pyro ${args.join(" ")} exited ${code}: ${stderr}`))));
  });
}

/** The moments a CLI run reaches, from its debug lines, in ms since it was spawned. */
function startPath(args: string[], env: NodeJS.ProcessEnv): Promise<{ total: number; marks: [string, number][] }> {
  const wanted: [RegExp, string][] = [
    [/\[pyro:jail\]/, "confinement probed"],
    [/spawned QEMU/, "QEMU spawned"],
    [/QMP and console connected/, "QMP up"],
    [/saved state loaded/, "state loaded"],
    [/agent handshake done/, "agent ready"],
    [/\[pyro:vm\] \w+ started/, "started"],
    [/\[pyro:vm\] deleted/, "deleted"],
  ];
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const marks: [string, number][] = [];
    const child = spawn(process.execPath, [PYRO, ...args], { env, stdio: ["ignore", "ignore", "pipe"] });
    let pending = "";
    child.stderr.on("data", (d: Buffer) => {
      const at = performance.now() - started;
      pending += d.toString();
      const lines = pending.split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines) {
        const hit = wanted.find(([re]) => re.test(line));
        if (hit && !marks.some(([m]) => m === hit[1])) marks.push([hit[1], at]);
      }
    });
    child.on("close", (code) => (code === 0 ? resolve({ total: performance.now() - started, marks }) : reject(new Error(`pyro ${args.join(" ")} exited ${code}`))));
  });
}


/**
 * Measures every target of the performance work, with `runs` samples each
 * (fewer where one sample takes seconds). `log` reports progress.
 */
export async function benchTargets(pyro: Pyro, stateDir: string, runs: number, log: (m: string) => void): Promise<{ rows: TargetRow[]; scale: ScaleFigures }> {
  const rows: TargetRow[] = [];
  const env = { ...process.env, PYRO_STATE_DIR: stateDir, PYRO_PROGRESS: "0" };
  const row = (figure: string, measured: number, target: number, floor: number, unit: "ms" | "MB/s" | "%", note = "") => {
    const show = (v: number) => (unit === "ms" ? formatMs(v) : unit === "MB/s" ? `${v.toFixed(1)} MB/s` : `${v.toFixed(1)} %`);
    const ratio = unit === "ms" ? measured / floor : unit === "MB/s" ? floor / measured : NaN;
    const met = unit === "MB/s" ? measured >= target : measured <= target;
    rows.push({
      figure: figure + note,
      measured: show(measured),
      target: `${unit === "MB/s" ? "≥" : "≤"} ${show(target)}`,
      floor: Number.isFinite(floor) ? show(floor) : "-",
      ratio: Number.isFinite(ratio) ? `${ratio.toFixed(1)}x` : "-",
      met,
    });
  };

  log(`targets: host floors (bash -c true, bash -lc true, node start, cp of the tree); ${runs} runs`);
  const bashFloor = median(await repeat(runs, () => spawnSync("bash", ["-c", "true"])));
  const loginFloor = median(await repeat(runs, () => spawnSync("bash", ["-lc", "true"])));
  const nodeFloor = median(await repeat(Math.min(runs, 5), () => spawnSync(process.execPath, ["-e", ""])));

  log(`targets: exec round trips in a running workspace; ${Math.max(runs, 20)} runs`);
  const ws = await pyro.createWorkspace({ environment: "debian:12" });
  await ws.exec("true");
  const execTrue = median(await repeat(Math.max(runs, 20), () => ws.exec("true")));
  // Every shell command runs under the login environment, so `true` above already has bash -lc semantics; this is the old way, a whole login shell.
  const execLogin = median(await repeat(Math.max(runs, 20), () => ws.exec("bash -lc true")));
  // The same without a workspace's journal and disk sync: a plain VM's exec through the runtime.
  const runtime = new VmManager(pyro.paths);
  const vm = await pyro.createVm({ environment: "debian:12" });
  await pyro.startVm(vm.vmId);
  await runtime.exec(vm.vmId, { command: "true", timeoutSeconds: 30 });
  const vmExec = median(await repeat(Math.max(runs, 20), () => runtime.exec(vm.vmId, { command: "true", timeoutSeconds: 30 })));
  await pyro.deleteVm(vm.vmId);
  row("exec round trip, `true`, running workspace (SDK)", execTrue, 30, bashFloor, "ms");
  row("exec round trip, `true`, running VM, no journal or sync", vmExec, 30, bashFloor, "ms");
  row("exec round trip, `bash -lc true` semantics (login env)", execTrue, 40, loginFloor, "ms");
  row("exec round trip, a literal `bash -lc true`", execLogin, 40, loginFloor, "ms");

  log("targets: sync push, seed and export of 10 MB in 1,000 files");
  const tree = mkdtempSync(join(tmpdir(), "pyro-bench-tree-"));
  for (let i = 0; i < 1000; i++) {
    mkdirSync(join(tree, `d${i % 20}`), { recursive: true });
    writeFileSync(join(tree, `d${i % 20}`, `f${i}.bin`), randomBytes(10 * 1024));
  }
  const treeMB = (1000 * 10 * 1024) / 1e6;
  let copies = 0;
  const cpFloor = treeMB / (median(await repeat(3, () => cpSync(tree, join(tree, "..", `${tree.split("/").pop()}-copy${copies++}`), { recursive: true }))) / 1000);
  for (let i = 0; i < copies; i++) rmSync(join(tree, "..", `${tree.split("/").pop()}-copy${i}`), { recursive: true, force: true });
  let pushes = 0;
  const push = treeMB / (median(await repeat(3, () => ws.push(tree, { dest: `p${pushes++}` }))) / 1000);
  const exportDir = mkdtempSync(join(tmpdir(), "pyro-bench-out-"));
  let exports = 0;
  const exported = treeMB / (median(await repeat(3, () => ws.export(join(exportDir, `e${exports++}`), { path: "p0" }))) / 1000);
  rmSync(exportDir, { recursive: true, force: true });
  const seededIds: string[] = [];
  const emptyCreate = median(
    await repeat(3, async () => {
      seededIds.push((await pyro.createWorkspace({ environment: "debian:12" })).workspaceId);
    }),
  );
  const seededCreate = median(
    await repeat(3, async () => {
      seededIds.push((await pyro.createWorkspace({ environment: "debian:12", seedPath: tree })).workspaceId);
    }),
  );
  for (const id of seededIds) await pyro.deleteWorkspace(id);
  // The seed's own rate: the seeded create less an empty one.
  const seed = treeMB / (Math.max(1, seededCreate - emptyCreate) / 1000);
  row("sync push, 10 MB in 1,000 files", push, 30, cpFloor, "MB/s");
  row("seed (create seeded less create empty), 10 MB in 1,000 files", seed, 30, cpFloor, "MB/s");
  row("export, 10 MB in 1,000 files", exported, 30, cpFloor, "MB/s");
  // What the guest itself can do with that tree: GNU tar, from memory to its disk and back, then a sync.
  const inGuest = await ws.exec(
    "cd /workspace && tar cf /dev/shm/t.tar p0 && sync && s=$(date +%s%N) && mkdir /tmp/t && tar xf /dev/shm/t.tar -C /tmp/t && sync && m=$(date +%s%N) && tar cf /dev/shm/u.tar -C /tmp/t . && e=$(date +%s%N) && echo $(( (m - s) / 1000 )) $(( (e - m) / 1000 )) && rm -rf /tmp/t /dev/shm/t.tar /dev/shm/u.tar",
    { timeoutSeconds: 120 },
  );
  const [extractUs, archiveUs] = inGuest.stdout.trim().split(" ").map(Number);
  if (!extractUs || !archiveUs) throw new Error(`no in-guest tar figures: ${inGuest.stdout} ${inGuest.stderr}`);
  rows.push({ figure: "  in-guest floor: GNU tar extract + sync / archive, same tree", measured: `${(treeMB / (extractUs / 1e6)).toFixed(1)} / ${(treeMB / (archiveUs / 1e6)).toFixed(1)} MB/s`, target: "-", floor: "-", ratio: "-", met: null });
  const big = mkdtempSync(join(tmpdir(), "pyro-bench-big-"));
  writeFileSync(join(big, "one.bin"), randomBytes(10 * 1024 * 1000));
  let bigPushes = 0;
  const bigPush = treeMB / (median(await repeat(3, () => ws.push(big, { dest: `b${bigPushes++}` }))) / 1000);
  rmSync(big, { recursive: true, force: true });
  rows.push({ figure: "  sync push of one 10 MB file (the channel's rate)", measured: `${bigPush.toFixed(1)} MB/s`, target: "-", floor: "-", ratio: "-", met: null });
  rmSync(tree, { recursive: true, force: true });
  await ws.delete();

  log(`targets: \`pyro run debian:12 -- true\` as a CLI process, no pool; ${Math.min(runs, 10)} runs`);
  const noPool = { ...env, PYRO_POOL_SIZE: "0" };
  await run(["run", "debian:12", "--", "true"], noPool);
  const cliRun = median(await repeat(Math.min(runs, 10), () => run(["run", "debian:12", "--", "true"], noPool)));
  row("`pyro run debian:12 -- true`, CLI end to end, no pool", cliRun, 300, nodeFloor, "ms", " (floor: node start)");

  log("targets: where a `pyro run` spends its time (PYRO_DEBUG lines, timed as they arrive; 3 runs, the median total shown)");
  const breakdowns: { total: number; marks: [string, number][] }[] = [];
  for (let i = 0; i < 3; i++) breakdowns.push(await startPath(["run", "debian:12", "--", "true"], { ...noPool, PYRO_DEBUG: "1" }));
  breakdowns.sort((a, b) => a.total - b.total);
  const path = breakdowns[1]!;
  const startPathLine = `start path of \`pyro run debian:12 -- true\` (ms since the process started): ${path.marks.map(([m, t]) => `${m} ${t.toFixed(0)}`).join(", ")}, exited ${path.total.toFixed(0)}`;

  log(`targets: vm_run of \`true\` through \`pyro mcp serve\` (default settings), ${Math.max(runs, 10)} calls, 2 s apart`);
  const transport = new StdioClientTransport({ command: process.execPath, args: [PYRO, "mcp", "serve"], env: env, stderr: "ignore" });
  const client = new Client({ name: "pyro-bench", version: "1.0.0" });
  await client.connect(transport);
  const mcpRuns: number[] = [];
  try {
    await client.listTools();
    // The first call finds no pool yet (it makes the shape's template and starts keeping one warm).
    await client.callTool({ name: "vm_run", arguments: { environment: "debian:12", command: "true" } }, undefined, { timeout: 600_000 });
    for (let i = 0; i < Math.max(runs, 10); i++) {
      // A model takes seconds between calls; the server refills meanwhile.
      await sleep(2000);
      mcpRuns.push(
        await time(async () => {
          const result = (await client.callTool({ name: "vm_run", arguments: { environment: "debian:12", command: "true" } })) as { isError?: boolean; content: unknown };
          if (result.isError) throw new Error(`vm_run failed: ${JSON.stringify(result.content)}`);
        }),
      );
    }
  } finally {
    await client.close();
  }
  row("`vm_run` of `true` through `pyro mcp serve` (default settings)", median(mcpRuns), 120, bashFloor, "ms");

  log("scale: runs per second with 1, 2, 4 and 8 in parallel (restored runInVm)");
  const runsPerSecond: ScaleFigures["runsPerSecond"] = [];
  for (const parallel of [1, 2, 4, 8]) {
    const total = Math.max(8, parallel * 2);
    let next = 0;
    const wall = await time(() =>
      Promise.all(
        Array.from({ length: parallel }, async () => {
          while (next++ < total) await pyro.runInVm({ environment: "debian:12", command: "true" });
        }),
      ),
    );
    runsPerSecond.push({ parallel, runsPerSecond: total / (wall / 1000) });
  }

  log("scale: 16 idle 1024 MiB workspaces at once (20 s to settle, then CPU over 10 s)");
  const idleIds: string[] = [];
  for (let i = 0; i < 16; i++) idleIds.push((await pyro.createWorkspace({ environment: "debian:12", memMib: 1024 })).workspaceId);
  const records = await Promise.all(idleIds.map((id) => runtime.status(id, "workspace")));
  const up = records.filter((r) => r.state === "started").length;
  const pids = records.map((r) => r.qemu?.pid).filter((pid): pid is number => typeof pid === "number");
  await sleep(20_000);
  const qemuBefore = pids.map(cpuTicks);
  const hostBefore = hostBusyTicks();
  await sleep(10_000);
  const qemuCpuPercent = pids.map((pid, i) => (cpuTicks(pid) - qemuBefore[i]!) / 10);
  const hostCpuPercent = (hostBusyTicks() - hostBefore) / 10;
  const qemuRssMib = pids.map((pid) => Math.round(rssMib(pid)));
  const qemuPssMib = pids.map((pid) => Math.round(pssMib(pid)));
  row("idle VM, host CPU (each of 16, median)", median(qemuCpuPercent), 1, NaN, "%");
  row("16 idle 1024 MiB workspaces: whole host CPU", hostCpuPercent, 20, NaN, "%");
  rows.push({
    figure: "16 idle 1024 MiB workspaces: QEMU RSS (max of 16)",
    measured: `${Math.max(...qemuRssMib)} MiB, PSS ${Math.max(...qemuPssMib)} MiB (${up} of 16 up)`,
    target: "≤ 100 MiB, all up",
    floor: "-",
    ratio: "-",
    met: up === 16 && Math.max(...qemuRssMib) <= 100,
  });

  log("scale: `pyro workspace list` with 16 records (the workspaces), then 100 (and 84 created VMs)");
  await run(["workspace", "list", "--json"], env);
  const cliList16 = median(await repeat(5, () => run(["workspace", "list", "--json"], env)));
  const extra: string[] = [];
  for (let i = 0; i < 84; i++) extra.push((await pyro.createVm({ environment: "debian:12" })).vmId);
  await run(["workspace", "list", "--json"], env);
  const cliList = median(await repeat(5, () => run(["workspace", "list", "--json"], env)));
  const sdkList = median(await repeat(5, () => pyro.listWorkspaces()));
  rows.push({ figure: "`pyro workspace list`, 100 records (CLI process)", measured: formatMs(cliList), target: "grows no faster than records", floor: formatMs(nodeFloor), ratio: `${(cliList / nodeFloor).toFixed(1)}x`, met: null });
  for (const id of extra) await pyro.deleteVm(id);
  for (const id of idleIds) await pyro.deleteWorkspace(id);

  return {
    rows,
    scale: {
      startPath: startPathLine,
      runsPerSecond,
      idle: { workspaces: 16, up, qemuRssMib, qemuPssMib, qemuCpuPercent, hostCpuPercent },
      list: { records: 100, workspaces: 16, cliMs: cliList, sdkMs: sdkList, cliMsWith16: cliList16 },
    },
  };
}

export function formatTargets(result: { rows: TargetRow[]; scale: ScaleFigures }): string {
  const header = ["figure", "measured", "target", "host floor", "ratio", "met"];
  const table = [header, ...result.rows.map((r) => [r.figure, r.measured, r.target, r.floor, r.ratio, r.met === null ? "-" : r.met ? "yes" : "no"])];
  const widths = header.map((_, c) => Math.max(...table.map((r) => r[c]!.length)));
  const lines = table.map((r) => r.map((cell, c) => cell.padEnd(widths[c]!)).join("  ").trimEnd());
  const { runsPerSecond, idle, list } = result.scale;
  lines.push(
    result.scale.startPath,
    `runs per second (restored runInVm true): ${runsPerSecond.map((t) => `${t.parallel} at a time ${t.runsPerSecond.toFixed(2)}/s`).join(", ")}`,
    `16 idle workspaces: QEMU RSS ${idle.qemuRssMib.join(", ")} MiB; PSS ${idle.qemuPssMib.join(", ")} MiB; QEMU CPU ${idle.qemuCpuPercent.map((p) => p.toFixed(1)).join(", ")} % of a core`,
    `workspace list with ${list.records} records (${list.workspaces} workspaces): CLI ${formatMs(list.cliMs)} (with 16 records: ${formatMs(list.cliMsWith16)}), SDK ${formatMs(list.sdkMs)}`,
  );
  return lines.join("\n");
}
