/**
 * A writer for the `newc` cpio format the kernel unpacks as an initramfs.
 * Deterministic (all times zero, owner root), so the same inputs give the same
 * digest, and able to hold a device node without needing root to create one.
 */
export interface CpioEntry {
  name: string;
  /** Full st_mode, type bits included (0o100755 file, 0o040755 dir, 0o020600 char device). */
  mode: number;
  data?: Uint8Array;
  rdevMajor?: number;
  rdevMinor?: number;
}

function hex8(value: number): string {
  return value.toString(16).padStart(8, "0");
}

function pad4(length: number): Buffer {
  return Buffer.alloc((4 - (length % 4)) % 4);
}

export function buildCpio(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  const push = (entry: CpioEntry) => {
    const data = entry.data ?? new Uint8Array(0);
    const name = Buffer.from(`${entry.name}\0`, "utf8");
    const isDir = (entry.mode & 0o170000) === 0o040000;
    const header =
      "070701" +
      hex8(ino++) +
      hex8(entry.mode) +
      hex8(0) + // uid
      hex8(0) + // gid
      hex8(isDir ? 2 : 1) + // nlink
      hex8(0) + // mtime
      hex8(data.length) +
      hex8(0) + // devmajor
      hex8(0) + // devminor
      hex8(entry.rdevMajor ?? 0) +
      hex8(entry.rdevMinor ?? 0) +
      hex8(name.length) +
      hex8(0); // check
    const head = Buffer.concat([Buffer.from(header, "ascii"), name]);
    parts.push(head, pad4(head.length), Buffer.from(data), pad4(data.length));
  };
  for (const entry of entries) push(entry);
  push({ name: "TRAILER!!!", mode: 0 });
  const out = Buffer.concat(parts);
  // The kernel reads in 512-byte blocks; pad like cpio(1) does.
  return Buffer.concat([out, Buffer.alloc((512 - (out.length % 512)) % 512)]);
}
