import { connect, type Socket } from "node:net";

/**
 * What a root guest can put on its NIC: hand-built Ethernet frames with any
 * destination. QEMU's stream backend carries them to pyro's network helper
 * as a 4-byte big-endian length and the frame; a test that speaks the same
 * framing on the helper's socket is exactly what a hostile guest can send.
 */
export const GUEST_MAC = Buffer.from([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
const BROADCAST = Buffer.alloc(6, 0xff);

function addr(ip: string): Buffer {
  return Buffer.from(ip.split(".").map(Number));
}

function sum16(buffer: Buffer, initial = 0): number {
  let sum = initial;
  for (let i = 0; i + 1 < buffer.length; i += 2) sum += buffer.readUInt16BE(i);
  if (buffer.length % 2) sum += buffer[buffer.length - 1]! << 8;
  return sum;
}

function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** An ARP request for `target`, so the helper (through passt) learns the guest. */
export function arpRequest(target: string, sender = "10.0.2.15"): Buffer {
  const arp = Buffer.alloc(28);
  arp.writeUInt16BE(1, 0);
  arp.writeUInt16BE(0x0800, 2);
  arp[4] = 6;
  arp[5] = 4;
  arp.writeUInt16BE(1, 6);
  GUEST_MAC.copy(arp, 8);
  addr(sender).copy(arp, 14);
  addr(target).copy(arp, 24);
  return Buffer.concat([BROADCAST, GUEST_MAC, Buffer.from([0x08, 0x06]), arp]);
}

/** A TCP SYN from the guest to `dst:port`, with valid checksums. */
export function tcpSyn(dst: string, port: number, options: { src?: string; dstMac?: Buffer; srcPort?: number } = {}): Buffer {
  const src = options.src ?? "10.0.2.15";
  const tcp = Buffer.alloc(20);
  tcp.writeUInt16BE(options.srcPort ?? 40000 + Math.floor(Math.random() * 20000), 0);
  tcp.writeUInt16BE(port, 2);
  tcp.writeUInt32BE(Math.floor(Math.random() * 0xffffffff), 4);
  tcp[12] = 5 << 4;
  tcp[13] = 0x02; // SYN
  tcp.writeUInt16BE(64240, 14);
  const pseudo = Buffer.concat([addr(src), addr(dst), Buffer.from([0, 6]), Buffer.from([0, 20])]);
  tcp.writeUInt16BE(fold(sum16(tcp, sum16(pseudo))), 16);
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(40, 2);
  ip.writeUInt16BE(0x4000, 6);
  ip[8] = 64;
  ip[9] = 6;
  addr(src).copy(ip, 12);
  addr(dst).copy(ip, 16);
  ip.writeUInt16BE(fold(sum16(ip)), 10);
  return Buffer.concat([options.dstMac ?? BROADCAST, GUEST_MAC, Buffer.from([0x08, 0x00]), ip, tcp]);
}

/** A UDP datagram from the guest to `dst:port`, with valid checksums. */
export function udpFrame(dst: string, port: number, payload: Buffer, options: { srcMac?: Buffer; src?: string } = {}): Buffer {
  const src = options.src ?? "10.0.2.15";
  const udp = Buffer.alloc(8 + payload.length);
  udp.writeUInt16BE(40000, 0);
  udp.writeUInt16BE(port, 2);
  udp.writeUInt16BE(udp.length, 4);
  payload.copy(udp, 8);
  const pseudo = Buffer.concat([addr(src), addr(dst), Buffer.from([0, 17]), Buffer.from([udp.length >> 8, udp.length & 255])]);
  udp.writeUInt16BE(fold(sum16(udp, sum16(pseudo))) || 0xffff, 6);
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + udp.length, 2);
  ip.writeUInt16BE(0x4000, 6);
  ip[8] = 64;
  ip[9] = 17;
  addr(src).copy(ip, 12);
  addr(dst).copy(ip, 16);
  ip.writeUInt16BE(fold(sum16(ip)), 10);
  return Buffer.concat([BROADCAST, options.srcMac ?? GUEST_MAC, Buffer.from([0x08, 0x00]), ip, udp]);
}

/**
 * The stream-desync attack on passt (2023): four 65531-byte frames, then a
 * 300-byte "ARP" frame whose body is itself a length prefix and a UDP frame
 * to `dst:port` (its source MAC puts 08 06 where the carrier's EtherType
 * goes). If the helper batched its writes to passt so that a read ended
 * right after the carrier's own prefix, passt would drop that prefix and
 * read the hidden frame as a real one.
 */
export function desyncBurst(dst: string, port: number): Buffer[] {
  const hidden = udpFrame(dst, port, Buffer.from("SMUGGLED"), { srcMac: Buffer.from([0x52, 0x54, 0x08, 0x06, 0x34, 0x56]) });
  const carrier = Buffer.alloc(Math.max(256, Math.ceil((4 + hidden.length) / 4) * 4));
  carrier.writeUInt32BE(hidden.length, 0);
  hidden.copy(carrier, 4);
  const filler = Buffer.alloc(65531);
  filler[12] = 0x08;
  filler[13] = 0x06;
  return [filler, filler, filler, filler, carrier];
}

/** Plays the guest's NIC on the helper's socket. */
export class FakeNic {
  private buffer = Buffer.alloc(0);
  private readonly frames: Buffer[] = [];

  private constructor(private readonly socket: Socket) {
    socket.on("data", (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      while (this.buffer.length >= 4 && this.buffer.length >= 4 + this.buffer.readUInt32BE(0)) {
        const n = this.buffer.readUInt32BE(0);
        this.frames.push(this.buffer.subarray(4, 4 + n));
        this.buffer = this.buffer.subarray(4 + n);
      }
    });
    socket.on("error", () => undefined);
  }

  static connect(path: string): Promise<FakeNic> {
    return new Promise((resolvePromise, reject) => {
      const socket = connect(path, () => resolvePromise(new FakeNic(socket)));
      socket.once("error", reject);
    });
  }

  send(frame: Buffer): void {
    this.sendAll([frame]);
  }

  /** Several frames in one write, as a burst from the guest arrives. */
  sendAll(frames: Buffer[]): void {
    this.socket.write(
      Buffer.concat(
        frames.flatMap((frame) => {
          const length = Buffer.alloc(4);
          length.writeUInt32BE(frame.length);
          return [length, frame];
        }),
      ),
    );
  }

  /** Frames received so far. */
  received(): Buffer[] {
    return [...this.frames];
  }

  close(): void {
    this.socket.destroy();
  }
}
