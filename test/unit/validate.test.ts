import assert from "node:assert/strict";
import { availableParallelism } from "node:os";
import { test } from "node:test";
import { Defaults } from "../../src/config.js";
import { PyroError } from "../../src/errors.js";
import { resolveExecOptions, resolveVmOptions, resolveWorkspaceMeta } from "../../src/sdk/validate.js";
import { toSnake } from "../../src/util/case.js";

function refuses(fn: () => unknown, code: string, field: string): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof PyroError);
    assert.equal(error.code, code);
    assert.match(error.message, new RegExp(`^${field}\\b`));
    return true;
  });
}

test("defaults are the contract's", () => {
  const vm = resolveVmOptions({ environment: "debian:12" });
  assert.deepEqual(vm, { environment: "debian:12", vcpuCount: 1, memMib: 1024, ttlSeconds: 600, network: false, networkPolicy: "off", allowHosts: [], allowHostCompat: false });
  assert.equal(resolveExecOptions({ command: "true" }).timeoutSeconds, 30);
  assert.equal(Defaults.timeoutSeconds, 30);
});

test("bad values are refused with the field named", () => {
  refuses(() => resolveVmOptions({ environment: "debian:99" }), "unknown_environment", "environment");
  refuses(() => resolveVmOptions({ environment: "debian:12", vcpuCount: 0 }), "invalid_argument", "vcpuCount");
  refuses(() => resolveVmOptions({ environment: "debian:12", vcpuCount: availableParallelism() + 1 }), "invalid_argument", "vcpuCount");
  refuses(() => resolveVmOptions({ environment: "debian:12", vcpuCount: 1.5 }), "invalid_argument", "vcpuCount");
  refuses(() => resolveVmOptions({ environment: "debian:12", memMib: 127 }), "invalid_argument", "memMib");
  refuses(() => resolveVmOptions({ environment: "debian:12", ttlSeconds: 0 }), "invalid_argument", "ttlSeconds");
  refuses(() => resolveVmOptions({ environment: "debian:12", network: "yes" as unknown as boolean }), "invalid_argument", "network");
  refuses(() => resolveExecOptions({ command: "" }), "invalid_argument", "command");
  refuses(() => resolveExecOptions({ command: "   " }), "invalid_argument", "command");
  refuses(() => resolveExecOptions({ command: "true", timeoutSeconds: 0 }), "invalid_argument", "timeoutSeconds");
  refuses(() => resolveExecOptions({ command: "true", timeoutSeconds: -5 }), "invalid_argument", "timeoutSeconds");
});

test("JSON output uses snake_case keys all the way down", () => {
  assert.deepEqual(toSnake({ vmId: "a", cleanup: { vmDeleted: true }, list: [{ exitCode: 0 }] }), {
    vm_id: "a",
    cleanup: { vm_deleted: true },
    list: [{ exit_code: 0 }],
  });
});

test("workspace names and labels refuse control characters and bidirectional overrides", () => {
  assert.equal(resolveWorkspaceMeta({ name: "fix 123 ✓" }).name, "fix 123 ✓");
  for (const name of ["a\u0007b", "a\u009bb", "evil\u202egnp.exe", "a\u2066b", "\u200fx", "a\u007fb"]) {
    refuses(() => resolveWorkspaceMeta({ name }), "invalid_argument", "name");
    refuses(() => resolveWorkspaceMeta({ labels: { k: name } }), "invalid_argument", "labels");
  }
});
