import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { dropZeroPages, UnknownStreamError } from "../../src/backends/qemu/stream.js";
import { removeDir, tempStateDir } from "../helpers.js";

const dir = tempStateDir("pyro-stream-");
after(() => removeDir(dir));

const be32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};
const be64 = (n: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(n);
  return b;
};
const name = (s: string) => Buffer.concat([Buffer.from([s.length]), Buffer.from(s)]);
const page = (fill: number) => Buffer.alloc(4096, fill);

/** A stream as QEMU 7.2 writes it: header, configuration, RAM start (block list), a part with records, end, then device state. */
function stream(records: Buffer[]): Buffer {
  return Buffer.concat([
    Buffer.from("QEVM"),
    be32(3),
    Buffer.from([0x07]),
    be32(7),
    Buffer.from("microvm"),
    Buffer.from([0x01]),
    be32(2),
    name("ram"),
    be32(0),
    be32(4),
    be64(0x3000n | 0x04n),
    name("main.ram"),
    be64(0x2000n),
    name("rom"),
    be64(0x1000n),
    be64(0x10n),
    Buffer.from([0x7e]),
    be32(2),
    Buffer.from([0x02]),
    be32(2),
    ...records,
    be64(0x10n),
    Buffer.from([0x7e]),
    be32(2),
    Buffer.from([0x04, 0xde, 0xad, 0xbe, 0xef]),
  ]);
}

test("zero-page records are dropped; blocks are named again where a dropped record named them", async () => {
  const input = stream([
    Buffer.concat([be64(0x0000n | 0x02n), name("main.ram"), Buffer.from([0])]), // zero, names the block
    Buffer.concat([be64(0x1000n | 0x08n | 0x20n), page(7)]), // data, continues main.ram
    Buffer.concat([be64(0x0000n | 0x02n), name("rom"), Buffer.from([0])]), // zero, names rom
    Buffer.concat([be64(0x0000n | 0x02n | 0x20n), Buffer.from([9])]), // a fill of 9 in rom: kept
  ]);
  const expected = stream([
    Buffer.concat([be64(0x1000n | 0x08n), name("main.ram"), page(7)]),
    Buffer.concat([be64(0x0000n | 0x02n), name("rom"), Buffer.from([9])]),
  ]);
  writeFileSync(join(dir, "in"), input);
  const result = await dropZeroPages(join(dir, "in"), join(dir, "out"));
  assert.deepEqual(result, { dropped: 2, kept: 2 });
  assert.ok(readFileSync(join(dir, "out")).equals(expected));
});

test("a stream of another shape is refused, not rewritten", async () => {
  writeFileSync(join(dir, "odd"), stream([Buffer.concat([be64(0x0000n | 0x40n), name("main.ram")])]));
  await assert.rejects(dropZeroPages(join(dir, "odd"), join(dir, "odd-out")), UnknownStreamError);
  writeFileSync(join(dir, "short"), stream([]).subarray(0, 40));
  await assert.rejects(dropZeroPages(join(dir, "short"), join(dir, "short-out")), UnknownStreamError);
});
