import { readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { buildCpio, type CpioEntry } from "./cpio.js";

/**
 * The initramfs is the guest agent as /init plus the virtio modules it loads
 * before it mounts the root disk (see guest/PROTOCOL.md, PID-1 duties).
 */
export async function buildInitramfs(agentPath: string, modulesDir: string): Promise<Buffer> {
  const dir = (name: string): CpioEntry => ({ name, mode: 0o040755 });
  const entries: CpioEntry[] = [
    dir("dev"),
    // The kernel opens /dev/console for init's stdio before init runs.
    { name: "dev/console", mode: 0o020600, rdevMajor: 5, rdevMinor: 1 },
    dir("proc"),
    dir("sys"),
    dir("newroot"),
    dir("lib"),
    dir("lib/modules"),
    dir("lib/modules/pyro"),
    { name: "init", mode: 0o100755, data: await readFile(agentPath) },
  ];
  for (const file of (await readdir(modulesDir)).sort()) {
    entries.push({ name: `lib/modules/pyro/${file}`, mode: 0o100644, data: await readFile(join(modulesDir, file)) });
  }
  return buildCpio(entries);
}
