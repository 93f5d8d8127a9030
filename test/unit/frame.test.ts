import assert from "node:assert/strict";
import { test } from "node:test";
import { encodeFrame, FrameDecoder, MAGIC, MAX_PAYLOAD_BYTES } from "../../src/agent/frame.js";

test("a frame survives a round trip split into single bytes", () => {
  const frame = encodeFrame({ type: "output", id: 7, stream: "stdout" }, Buffer.from("hello"));
  const decoder = new FrameDecoder();
  const got = [];
  for (const byte of frame) got.push(...decoder.push(Buffer.from([byte])));
  assert.equal(got.length, 1);
  assert.deepEqual(got[0]?.header, { type: "output", id: 7, stream: "stdout" });
  assert.equal(got[0]?.payload.toString(), "hello");
});

test("garbage before and between frames is skipped", () => {
  const a = encodeFrame({ type: "ok", id: 1 });
  const b = encodeFrame({ type: "ok", id: 2 });
  const decoder = new FrameDecoder();
  const frames = decoder.push(Buffer.concat([Buffer.from("noise PYR"), a, Buffer.from("PYRO\xff\xff\xff\xff"), b]));
  assert.deepEqual(
    frames.map((f) => f.header.id),
    [1, 2],
  );
  assert.ok(decoder.skippedBytes > 0);
});

test("oversized lengths from a hostile guest are not trusted", () => {
  const bogus = Buffer.alloc(12);
  MAGIC.copy(bogus);
  bogus.writeUInt32BE(10, 4);
  bogus.writeUInt32BE(MAX_PAYLOAD_BYTES + 1, 8);
  const good = encodeFrame({ type: "ok", id: 3 });
  const frames = new FrameDecoder().push(Buffer.concat([bogus, good]));
  assert.deepEqual(
    frames.map((f) => f.header.id),
    [3],
  );
});

test("headers that are not objects with type and id are rejected", () => {
  const make = (json: string) => {
    const body = Buffer.from(json);
    const prefix = Buffer.alloc(12);
    MAGIC.copy(prefix);
    prefix.writeUInt32BE(body.length, 4);
    prefix.writeUInt32BE(0, 8);
    return Buffer.concat([prefix, body]);
  };
  const frames = new FrameDecoder().push(
    Buffer.concat([make("[1,2]"), make('{"type":"x"}'), make('{"type":"x","id":-1}'), make("{not json"), encodeFrame({ type: "ok", id: 9 })]),
  );
  assert.deepEqual(
    frames.map((f) => f.header.id),
    [9],
  );
});

test("the decoder does not hold more than one frame's worth of junk", () => {
  const decoder = new FrameDecoder();
  decoder.push(Buffer.alloc(5 * 1024 * 1024, 0x41));
  assert.ok(decoder.skippedBytes >= 5 * 1024 * 1024 - 3);
  assert.throws(() => encodeFrame({ type: "x", id: 1 }, Buffer.alloc(MAX_PAYLOAD_BYTES + 1)), RangeError);
});
