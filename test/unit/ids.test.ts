import assert from "node:assert/strict";
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { Pyro, PyroError } from "../../src/index.js";
import { VmStore } from "../../src/runtime/store.js";
import { removeDir, runCli, tempStateDir } from "../helpers.js";

// A state directory inside a sandbox directory, with decoys beside and above it that a path-like id would reach.
const sandbox = tempStateDir("pyro-ids-");
const stateDir = join(sandbox, "a", "state");
mkdirSync(join(stateDir, "vms"), { recursive: true });
for (const decoy of [join(sandbox, "a", "x"), join(sandbox, "x"), join(sandbox, "etc"), join(stateDir, "x")]) {
  mkdirSync(decoy, { recursive: true });
  writeFileSync(join(decoy, "keep"), "keep\n");
}
const pyro = new Pyro({ stateDir });

after(() => removeDir(sandbox));

const HOSTILE = ["../x", "../../x", "../../etc", "..", ".", "", "x", "/etc", "0123456789ab/../../x", "0123456789AB", "0123456789abc", "0123456789a\0", "0123456789ab\n"];

function decoysIntact(): void {
  for (const decoy of [join(sandbox, "a", "x"), join(sandbox, "x"), join(sandbox, "etc"), join(stateDir, "x")]) {
    assert.ok(existsSync(join(decoy, "keep")), `${decoy} was touched`);
  }
  assert.deepEqual(readdirSync(join(stateDir, "vms")), []);
}

async function invalid(call: () => Promise<unknown>, label: string): Promise<void> {
  await assert.rejects(call(), (error: unknown) => {
    assert.ok(error instanceof PyroError, `${label}: ${String(error)}`);
    assert.equal(error.code, "invalid_argument", `${label}: ${error.message}`);
    assert.ok(error.hint, `${label}: has a hint`);
    return true;
  });
}

test("every SDK method that takes an id refuses a malformed one before touching a file", async () => {
  for (const id of HOSTILE) {
    await invalid(() => pyro.deleteVm(id), `deleteVm(${JSON.stringify(id)})`);
    await invalid(() => pyro.statusVm(id), `statusVm(${JSON.stringify(id)})`);
    await invalid(() => pyro.startVm(id), `startVm(${JSON.stringify(id)})`);
    await invalid(() => pyro.stopVm(id), `stopVm(${JSON.stringify(id)})`);
    await invalid(() => pyro.execVm(id, { command: "true" }), `execVm(${JSON.stringify(id)})`);
    await invalid(() => pyro.networkInfoVm(id), `networkInfoVm(${JSON.stringify(id)})`);
    await invalid(() => pyro.deleteWorkspace(id), `deleteWorkspace(${JSON.stringify(id)})`);
    await invalid(() => pyro.statusWorkspace(id), `statusWorkspace(${JSON.stringify(id)})`);
    await invalid(() => pyro.logsWorkspace(id), `logsWorkspace(${JSON.stringify(id)})`);
    await invalid(() => pyro.execWorkspace(id, { command: "true" }), `execWorkspace(${JSON.stringify(id)})`);
    await invalid(() => pyro.pushWorkspaceSync(id, sandbox), `pushWorkspaceSync(${JSON.stringify(id)})`);
  }
  decoysIntact();
});

test("the store refuses a malformed id too, whoever calls it", async () => {
  const store = new VmStore(stateDir);
  for (const id of HOSTILE) {
    assert.throws(() => store.dir(id), /12 lowercase hex/, JSON.stringify(id));
    await assert.rejects(store.remove(id), /12 lowercase hex/);
    await assert.rejects(store.read(id), /12 lowercase hex/);
  }
  decoysIntact();
});

test("the CLI exits 64 with the field named, and deletes nothing", async () => {
  for (const args of [["vm", "delete", "../../x"], ["workspace", "delete", "../x"], ["workspace", "status", "../../etc"], ["vm", "status", "x"]]) {
    const result = await runCli([...args, "--json"], { stateDir });
    assert.equal(result.code, 64, `${args.join(" ")}: ${result.stderr}`);
    const body = JSON.parse(result.stdout) as { error: { code: string; message: string } };
    assert.equal(body.error.code, "invalid_argument");
    assert.match(body.error.message, /^(<vm-id>|<workspace-id>): must be an id of 12 lowercase hex digits/);
  }
  decoysIntact();
});
