import { readdir, readFile } from "node:fs/promises";
import { processStartTime } from "../../util/proc.js";

/** Running QEMU processes started by pyro, with the QMP socket that identifies each. */
export async function listPyroQemus(): Promise<{ pid: number; startTime: string | undefined; qmpSocket: string }[]> {
  const found: { pid: number; startTime: string | undefined; qmpSocket: string }[] = [];
  for (const entry of await readdir("/proc").catch(() => [] as string[])) {
    if (!/^\d+$/.test(entry)) continue;
    // The start time before and after the command line: a pid reused in between is not the process we read.
    const startTime = await processStartTime(Number(entry));
    const argv = (await readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "")).split("\0");
    if (!argv[0]?.includes("qemu-system") || argv[1] !== "-name" || argv[2] !== "pyro") continue;
    const qmp = argv[argv.indexOf("-qmp") + 1];
    const match = qmp ? /^unix:([^,]+),/.exec(qmp) : null;
    if (match?.[1] && startTime !== undefined && (await processStartTime(Number(entry))) === startTime) found.push({ pid: Number(entry), startTime, qmpSocket: match[1] });
  }
  return found;
}
