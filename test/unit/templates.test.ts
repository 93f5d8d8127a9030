import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync } from "node:fs";
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
  const files = { state: join(work, "saved"), disk: join(work, "disk") };
  writeFileSync(files.state, `${tag}:state`);
  writeFileSync(files.disk, `${tag}:disk.qcow2`);
  return Promise.resolve(files);
};

test("a template is found only for an identical key, and a damaged one is discarded", async () => {
  const store = new TemplateStore(join(root, "a"));
  const made = await store.build(key("e1"), makeState("one"));
  assert.equal((await store.find(key("e1")))?.dir, made.dir);
  assert.equal(await store.find(key("e2")), undefined);
  truncateSync(made.statePath, 2);
  assert.deepEqual(await store.lookup(key("e1")), { discarded: "state has 2 bytes, expected 9" });
  assert.equal(await store.find(key("e1")), undefined);
});

test("a changed file of the same size is caught by its digest", async () => {
  const store = new TemplateStore(join(root, "b"));
  const made = await store.build(key("e1"), makeState("one"));
  writeFileSync(made.diskPath, "two:disk.qcow2");
  assert.deepEqual(await store.lookup(key("e1")), { discarded: "disk.qcow2 does not match its digest" });
});

test("building a template removes every template of an older format, of any shape", async () => {
  const store = new TemplateStore(join(root, "e"));
  const old = join(store.root, "debian-12-2cpu-512m-net-tcg-0123456789abcdef");
  mkdirSync(old, { recursive: true });
  writeFileSync(join(old, "manifest.json"), JSON.stringify({ key: { ...key("e0", 512), format: TEMPLATE_FORMAT - 1 } }));
  const kept = await store.build(key("e1", 256), makeState("kept"));
  await store.build(key("e1"), makeState("one"));
  assert.ok(!existsSync(old), "the old-format template is gone");
  assert.ok(existsSync(kept.dir), "a current template of another shape stays");
});

test("templates hold whole VMs: readable by pyro's user only", async () => {
  const store = new TemplateStore(join(root, "d"));
  const made = await store.build(key("e1"), makeState("one"));
  assert.equal(statSync(store.root).mode & 0o777, 0o700);
  assert.equal(statSync(made.dir).mode & 0o777, 0o700);
  for (const file of [made.statePath, made.diskPath, join(made.dir, "manifest.json")]) assert.equal(statSync(file).mode & 0o777, 0o600, file);
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
