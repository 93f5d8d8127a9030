import { open, type FileHandle } from "node:fs/promises";

/**
 * QEMU's migration stream, as far as pyro needs to read it: the RAM
 * records at its start. A saved VM lists every page of guest RAM; pages that
 * are all zero come as a one-byte record, and QEMU restoring such a record
 * reads the page to see whether it must clear it. On hosts without a shared
 * zero page (some virtualised hosts), that read makes the page resident, so
 * a restored 1 GiB guest would hold 1 GiB. Restoring into fresh (zero)
 * memory, a zero page needs no record at all: dropping them leaves QEMU
 * touching only pages that hold data.
 *
 * Format (QEMU 7.2, precopy, no compression or multifd): "QEVM", version 3,
 * a configuration section (0x07, a length-prefixed machine name), then the
 * "ram" section's start (0x01) and parts (0x02) and end (0x03), each a list
 * of records ending with EOS and a footer (0x7e + section id); then device
 * sections, which are copied as they are.
 */

const FLAG_ZERO = 0x02;
const FLAG_MEM_SIZE = 0x04;
const FLAG_PAGE = 0x08;
const FLAG_EOS = 0x10;
const FLAG_CONTINUE = 0x20;
const PAGE_SIZE = 4096;

/** The stream is not one pyro can read: it is then used as it is. */
export class UnknownStreamError extends Error {}

class Reader {
  private buffer = Buffer.alloc(0);
  private offset = 0;
  private position = 0;
  private ended = false;
  constructor(private readonly handle: FileHandle) {}

  /** At least `n` bytes at the cursor, or an error at the end of the file. */
  async need(n: number): Promise<Buffer> {
    while (this.buffer.length - this.offset < n) {
      if (this.ended) throw new UnknownStreamError("the stream ends early");
      const chunk = Buffer.alloc(Math.max(1 << 20, n));
      const { bytesRead } = await this.handle.read(chunk, 0, chunk.length, this.position);
      this.position += bytesRead;
      if (bytesRead === 0) this.ended = true;
      this.buffer = Buffer.concat([this.buffer.subarray(this.offset), chunk.subarray(0, bytesRead)]);
      this.offset = 0;
    }
    return this.buffer.subarray(this.offset, this.offset + n);
  }

  async take(n: number): Promise<Buffer> {
    const bytes = Buffer.from(await this.need(n));
    this.offset += n;
    return bytes;
  }

  /** Everything from the cursor to the end of the file, in chunks. */
  async *rest(): AsyncGenerator<Buffer> {
    if (this.offset < this.buffer.length) yield this.buffer.subarray(this.offset);
    for (;;) {
      const chunk = Buffer.alloc(1 << 20);
      const { bytesRead } = await this.handle.read(chunk, 0, chunk.length, this.position);
      if (bytesRead === 0) return;
      this.position += bytesRead;
      yield chunk.subarray(0, bytesRead);
    }
  }
}

class Writer {
  private parts: Buffer[] = [];
  private size = 0;
  private position = 0;
  constructor(private readonly handle: FileHandle) {}

  async push(bytes: Buffer): Promise<void> {
    this.parts.push(bytes);
    this.size += bytes.length;
    if (this.size >= 1 << 20) await this.flush();
  }

  async flush(): Promise<void> {
    const data = Buffer.concat(this.parts);
    this.parts = [];
    this.size = 0;
    await this.handle.write(data, 0, data.length, this.position);
    this.position += data.length;
  }
}

function be64(value: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(value);
  return b;
}

/**
 * Writes `input` to `output` without the records of all-zero pages. Throws
 * UnknownStreamError for a stream of another shape; the caller then keeps
 * the original. Returns how many records were dropped.
 */
export async function dropZeroPages(input: string, output: string): Promise<{ dropped: number; kept: number }> {
  const source = await open(input, "r");
  const target = await open(output, "wx", 0o600);
  try {
    const r = new Reader(source);
    const w = new Writer(target);
    const head = await r.take(8);
    if (head.toString("latin1", 0, 4) !== "QEVM" || head.readUInt32BE(4) !== 3) throw new UnknownStreamError("not a version 3 migration stream");
    await w.push(head);
    if ((await r.need(1))[0] === 0x07) {
      const configuration = await r.need(5);
      await w.push(await r.take(5 + configuration.readUInt32BE(1)));
    }
    let dropped = 0;
    let kept = 0;
    // The RAM block named last, as read and as written: CONTINUE means "the same block as the record before".
    let readBlock: Buffer | undefined;
    let writtenBlock: Buffer | undefined;
    for (;;) {
      const type = (await r.need(1))[0]!;
      if (type === 0x01) {
        const nameLength = (await r.need(6))[5]!;
        const start = await r.take(6 + nameLength + 8);
        if (start.toString("latin1", 6, 6 + nameLength) !== "ram") throw new UnknownStreamError("the first section is not RAM");
        await w.push(start);
      } else if (type === 0x02 || type === 0x03) {
        await w.push(await r.take(5));
      } else break;
      for (;;) {
        const word = (await r.take(8)).readBigUInt64BE(0);
        const flags = Number(word & 0xfffn);
        const address = word & ~0xfffn;
        if (flags & FLAG_MEM_SIZE) {
          // The block list: for each block a length-prefixed name and its size, until the sizes add up.
          const parts = [be64(word)];
          let total = 0n;
          while (total < address) {
            const length = (await r.need(1))[0]!;
            const entry = await r.take(1 + length + 8);
            total += entry.readBigUInt64BE(1 + length);
            parts.push(entry);
          }
          await w.push(Buffer.concat(parts));
          continue;
        }
        if (flags & FLAG_EOS) {
          await w.push(be64(word));
          break;
        }
        if (flags & ~(FLAG_ZERO | FLAG_PAGE | FLAG_CONTINUE) || !(flags & (FLAG_ZERO | FLAG_PAGE))) {
          throw new UnknownStreamError(`RAM record flags 0x${flags.toString(16)}`);
        }
        if (!(flags & FLAG_CONTINUE)) {
          const length = (await r.need(1))[0]!;
          readBlock = (await r.take(1 + length)).subarray(1);
        }
        if (!readBlock) throw new UnknownStreamError("a RAM record continues no block");
        const body = await r.take(flags & FLAG_ZERO ? 1 : PAGE_SIZE);
        if (flags & FLAG_ZERO && body[0] === 0) {
          dropped += 1;
          continue;
        }
        const same = writtenBlock !== undefined && writtenBlock.equals(readBlock);
        const record = [be64(address | BigInt(flags & ~FLAG_CONTINUE) | (same ? BigInt(FLAG_CONTINUE) : 0n))];
        if (!same) record.push(Buffer.from([readBlock.length]), readBlock);
        writtenBlock = readBlock;
        record.push(body);
        await w.push(Buffer.concat(record));
        kept += 1;
      }
      const footer = await r.take(5);
      if (footer[0] !== 0x7e) throw new UnknownStreamError("a section without its footer");
      await w.push(footer);
    }
    for await (const chunk of r.rest()) await w.push(Buffer.from(chunk));
    await w.flush();
    await target.sync();
    return { dropped, kept };
  } finally {
    await source.close();
    await target.close();
  }
}
