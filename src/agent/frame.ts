/**
 * Framing of the guest agent protocol (guest/PROTOCOL.md):
 * "PYRO" | u32 BE header length | u32 BE payload length | JSON header | payload.
 * Everything read from the guest is hostile: sizes are bounded and a bad frame
 * makes the reader skip to the next magic instead of trusting lengths.
 */
export const MAGIC = Buffer.from("PYRO", "ascii");
export const MAX_HEADER_BYTES = 64 * 1024;
export const MAX_PAYLOAD_BYTES = 1024 * 1024;
const PREFIX = 12;

export interface FrameHeader {
  type: string;
  id: number;
  [key: string]: unknown;
}

export interface Frame {
  header: FrameHeader;
  payload: Buffer;
}

export function encodeFrame(header: FrameHeader, payload: Uint8Array = new Uint8Array(0)): Buffer {
  const json = Buffer.from(JSON.stringify(header), "utf8");
  if (json.length > MAX_HEADER_BYTES) throw new RangeError(`frame header of ${json.length} bytes exceeds ${MAX_HEADER_BYTES}`);
  if (payload.length > MAX_PAYLOAD_BYTES) throw new RangeError(`frame payload of ${payload.length} bytes exceeds ${MAX_PAYLOAD_BYTES}`);
  const prefix = Buffer.alloc(PREFIX);
  MAGIC.copy(prefix, 0);
  prefix.writeUInt32BE(json.length, 4);
  prefix.writeUInt32BE(payload.length, 8);
  return Buffer.concat([prefix, json, payload]);
}

/**
 * Incremental decoder. Holds at most one maximal frame of buffered input, so a
 * guest cannot make the host buffer without bound.
 */
export class FrameDecoder {
  private buffer: Buffer = Buffer.alloc(0);
  /** Bytes dropped while resynchronising; reported for diagnostics. */
  skippedBytes = 0;

  push(chunk: Buffer): Frame[] {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    const frames: Frame[] = [];
    for (;;) {
      const frame = this.next();
      if (frame === undefined) break;
      frames.push(frame);
    }
    return frames;
  }

  private skip(count: number): void {
    this.skippedBytes += count;
    this.buffer = this.buffer.subarray(count);
  }

  private next(): Frame | undefined {
    for (;;) {
      const at = this.buffer.indexOf(MAGIC);
      if (at < 0) {
        // Keep a possible partial magic at the end.
        this.skip(Math.max(0, this.buffer.length - (MAGIC.length - 1)));
        return undefined;
      }
      if (at > 0) this.skip(at);
      if (this.buffer.length < PREFIX) return undefined;
      const headerLength = this.buffer.readUInt32BE(4);
      const payloadLength = this.buffer.readUInt32BE(8);
      if (headerLength < 2 || headerLength > MAX_HEADER_BYTES || payloadLength > MAX_PAYLOAD_BYTES) {
        this.skip(1);
        continue;
      }
      const total = PREFIX + headerLength + payloadLength;
      if (this.buffer.length < total) return undefined;
      const header = parseHeader(this.buffer.subarray(PREFIX, PREFIX + headerLength));
      if (header === undefined) {
        this.skip(1);
        continue;
      }
      const payload = Buffer.from(this.buffer.subarray(PREFIX + headerLength, total));
      this.buffer = this.buffer.subarray(total);
      return { header, payload };
    }
  }
}

function parseHeader(bytes: Buffer): FrameHeader | undefined {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString("utf8"));
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  const header = value as Record<string, unknown>;
  if (typeof header.type !== "string" || typeof header.id !== "number" || !Number.isSafeInteger(header.id) || header.id < 0) return undefined;
  return header as FrameHeader;
}
