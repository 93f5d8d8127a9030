import { readdir, readFile } from "node:fs/promises";
import { processStartTime } from "../../util/proc.js";

/** Running QEMU processes started by pyro, with the QMP socket that identifies each. */
export async function listPyroQemus(): Promise<{ pid: number; startTime: string | undefined; qmpSocket: string }[]> {
  const pids = (await readdir("/proc").catch(() => [] as string[])).filter((entry) => /^\d+$/.test(entry));
  const cmdline = (pid: string) => readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
  // One read per process, all at once; only pyro's QEMUs are looked at again.
  const found = await Promise.all(
    pids.map(async (entry) => {
      const line = await cmdline(entry);
      const argv = line.split("\0");
      if (!argv[0]?.includes("qemu-system") || argv[1] !== "-name" || argv[2] !== "pyro") return undefined;
      const qmp = argv[argv.indexOf("-qmp") + 1];
      const match = qmp ? /^unix:([^,]+),/.exec(qmp) : null;
      if (!match?.[1]) return undefined;
      // The start time, then the command line again: a pid reused before the start time was read is not the process matched.
      const startTime = await processStartTime(Number(entry));
      if (startTime === undefined || (await cmdline(entry)) !== line) return undefined;
      return { pid: Number(entry), startTime, qmpSocket: match[1] };
    }),
  );
  return found.filter((qemu) => qemu !== undefined);
}
