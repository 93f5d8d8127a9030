import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { TEMPLATE_FORMAT, TemplateStore, type TemplateKey } from "../../src/runtime/templates.js";

const root = mkdtempSync(join(tmpdir(), "pyro-templates-"));
after(() => rmSync(root, { recursive: true, force: true }));

const key = (environmentDigest: string, memMib = 1024): TemplateKey => ({
  format: TEMPLATE_FORMAT,
  environment: "debian:12",
  environmentDigest,
  accel: "tcg",
  vcpuCount: 1,
  memMib,
  network: false,
  tscKhz: 2_000_000,
  qemu: "/usr/bin/qemu-system-x86_64:1:1",
});

// The files a VM boot would leave; their content does not matter to the store.
const makeState = (tag: string) => (work: string) => {
  for (const name of ["state.zst", "disk.qcow2", "ram"]) writeFileSync(join(work, name), `${tag}:${name}`);
  return Promise.resolve();
};

test("a template is found only for an identical key, and a damaged one is discarded", async () => {
  const store = new TemplateStore(join(root, "a"));
  const made = await store.build(key("e1"), makeState("one"));
  assert.equal((await store.find(key("e1")))?.dir, made.dir);
  assert.equal(await store.find(key("e2")), undefined);
  truncateSync(made.statePath, 2);
  assert.deepEqual(await store.lookup(key("e1")), { discarded: "state.zst has 2 bytes, expected 13" });
  assert.equal(await store.find(key("e1")), undefined);
});

test("a changed file of the same size is caught by its digest", async () => {
  const store = new TemplateStore(join(root, "b"));
  const made = await store.build(key("e1"), makeState("one"));
  writeFileSync(made.memoryPath, "two:ram");
  assert.deepEqual(await store.lookup(key("e1")), { discarded: "ram does not match its digest" });
});

test("building a template removes older ones of the same shape, and only those", async () => {
  const store = new TemplateStore(join(root, "c"));
  const old = await store.build(key("e1"), makeState("old"));
  const otherShape = await store.build(key("e1", 512), makeState("small"));
  const fresh = await store.build(key("e2"), makeState("new"));
  const dirs = readdirSync(store.root).filter((name) => !name.endsWith(".lock"));
  assert.deepEqual(dirs.sort(), [otherShape.dir, fresh.dir].map((d) => d.slice(store.root.length + 1)).sort());
  assert.ok(!dirs.includes(old.dir.slice(store.root.length + 1)));
});
