import assert from "node:assert/strict";
import { test } from "node:test";
import { clipHeadTail } from "../../src/util/clip.js";

test("output within the cap is returned whole", () => {
  assert.deepEqual(clipHeadTail(Buffer.from("hello\n"), 16), { text: "hello\n", clipped: false });
});

test("longer output keeps a quarter from the head, the rest from the tail, and says what was cut and where it is", () => {
  const lines = Array.from({ length: 1000 }, (_, i) => `line ${i}`).join("\n");
  const data = Buffer.from(lines);
  const { text, clipped } = clipHeadTail(data, 400, "see sequence 3");
  assert.ok(clipped);
  assert.ok(text.startsWith("line 0\nline 1\n"));
  assert.ok(text.endsWith("line 999"));
  const marker = /\n\[\.\.\. pyro: (\d+) bytes cut from the middle; see sequence 3 \.\.\.\]\n/.exec(text);
  assert.ok(marker, text);
  const [head, tail] = text.split(marker[0]);
  assert.equal(Buffer.byteLength(head!), 100);
  assert.equal(Buffer.byteLength(tail!), 300);
  assert.equal(Number(marker[1]), data.length - 400);
});

test("cuts never split a UTF-8 character", () => {
  const data = Buffer.from("é".repeat(1000));
  const { text } = clipHeadTail(data, 101);
  assert.ok(!text.includes("\uFFFD"), "no replacement characters");
});
