import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { PoolDrains } from "../../src/runtime/pool-drains.js";

const root = mkdtempSync(join(tmpdir(), "pyro-drains-"));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const fresh = () => new PoolDrains(join(root, String(n++)));

test("a refill sees the drains that began after it, of its environment or of all", async () => {
  const drains = fresh();
  assert.equal(await drains.current(), 0);
  const since = await drains.current();
  assert.equal(await drains.drainedSince(since, "debian:12"), false);
  const first = await drains.begin("debian:12-base");
  assert.equal(await drains.current(), first);
  assert.equal(await drains.drainedSince(since, "debian:12"), false, "another environment's drain");
  assert.equal(await drains.drainedSince(since, "debian:12-base"), true);
  const second = await drains.begin(null);
  assert.ok(second > first);
  assert.equal(await drains.drainedSince(since, "debian:12"), true, "a drain of every environment");
  // A refill that began after both sees neither.
  assert.equal(await drains.drainedSince(await drains.current(), "debian:12"), false);
});

test("concurrent drains get distinct, increasing numbers", async () => {
  const drains = fresh();
  const numbers = await Promise.all(Array.from({ length: 8 }, () => drains.begin(null)));
  assert.equal(new Set(numbers).size, 8);
  assert.equal(await drains.current(), Math.max(...numbers));
});

test("a refill older than every drain remembered counts as drained", async () => {
  const drains = fresh();
  const numbers: number[] = [];
  for (let i = 0; i < 70; i++) numbers.push(await drains.begin("debian:12-base"));
  // The first six are forgotten: whether one covered debian:12 cannot be told, so it is assumed.
  assert.equal(await drains.drainedSince(0, "debian:12"), true);
  assert.equal(await drains.drainedSince(numbers[4]!, "debian:12"), true);
  assert.equal(await drains.drainedSince(numbers[5]!, "debian:12"), false);
  assert.equal(await drains.drainedSince(numbers[5]!, "debian:12-base"), true);
});

test("a log that became unreadable still numbers the next drain above every refill that read it", async () => {
  const dir = join(root, "broken");
  const drains = new PoolDrains(dir);
  await drains.begin(null);
  const since = await drains.current();
  writeFileSync(join(dir, "pool", "drains.json"), "{ not json");
  assert.equal(await drains.drainedSince(since, "debian:12"), false);
  const next = await drains.begin("debian:12");
  assert.ok(next > since);
  assert.equal(await drains.drainedSince(since, "debian:12"), true);
});
