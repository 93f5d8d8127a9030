import assert from "node:assert/strict";
import { test } from "node:test";
import { isKvmFailure } from "../../src/backends/qemu/accel.js";
import { buildProgram } from "../../src/cli/main.js";
import { newContext } from "../../src/cli/context.js";
import { cliVocabulary } from "../../src/cli/vocabulary.js";
import { DEFAULT_HINTS, ErrorCode, InvalidArgumentError, PyroError, type ErrorCodeValue } from "../../src/errors.js";
import { Pyro } from "../../src/sdk/pyro.js";
import { SURFACES } from "../../src/tools/surfaces.js";
import { checkArguments, MCP_VOCABULARY } from "../../src/tools/vocabulary.js";
import { findTool } from "../../src/tools/catalog.js";
import { renderError, SDK_VOCABULARY, type Vocabulary } from "../../src/vocabulary.js";
import { foreignWords, TOOL_NAMES } from "../vocabulary.js";

const program = buildProgram(newContext(new Pyro(), new AbortController().signal));
const find = (path: string) => path.split(" ").reduce((command, name) => command.commands.find((c) => c.name() === name)!, program);
const CLI = cliVocabulary(program);

const SURFACE_VOCABULARIES: Record<Vocabulary["surface"], Vocabulary> = { sdk: SDK_VOCABULARY, cli: CLI, mcp: MCP_VOCABULARY };

test("every error code has a hint on every surface, in that surface's words", () => {
  const codes = Object.values(ErrorCode) as ErrorCodeValue[];
  assert.deepEqual(Object.keys(DEFAULT_HINTS).sort(), [...codes].sort());
  for (const code of codes) {
    for (const [surface, vocabulary] of Object.entries(SURFACE_VOCABULARIES)) {
      const rendered = renderError(new PyroError(code, "something failed"), vocabulary);
      assert.ok(rendered.hint.trim().length > 10, `${code} on ${surface}: empty hint`);
      assert.deepEqual(foreignWords(`${rendered.message} ${rendered.hint}`, surface as Vocabulary["surface"]), [], `${code} on ${surface}: ${rendered.hint}`);
    }
  }
});

test("a field is named as each surface's caller typed it", () => {
  const error = new InvalidArgumentError("ttlSeconds", "must be between 1 and 604800, got 604801", "`ttlSeconds` takes whole seconds; expired VMs are listed by listVms()");
  assert.deepEqual(renderError(error, SDK_VOCABULARY), {
    code: "invalid_argument",
    message: "ttlSeconds: must be between 1 and 604800, got 604801",
    hint: "`ttlSeconds` takes whole seconds; expired VMs are listed by listVms()",
  });
  assert.equal(renderError(error, CLI).message, "--ttl-seconds: must be between 1 and 604800, got 604801");
  assert.equal(renderError(error, CLI).hint, "`--ttl-seconds` takes whole seconds; expired VMs are listed by `pyro vm list`");
  assert.equal(renderError(error, MCP_VOCABULARY).message, "ttl_seconds: must be between 1 and 604800, got 604801");
  assert.equal(renderError(error, MCP_VOCABULARY).hint, "`ttl_seconds` takes whole seconds; expired VMs are listed by `pyro vm list` (run by the operator on the host)");
});

test("the CLI names the flag or argument of the command that ran", () => {
  const port = cliVocabulary(program, find("mcp serve"));
  assert.equal(renderError(new InvalidArgumentError("port", "must be between 0 and 65535, got 70000"), port).message, "--port: must be between 0 and 65535, got 70000");
  const read = cliVocabulary(program, find("workspace file read"));
  assert.equal(renderError(new InvalidArgumentError("workspaceId", "must be an id"), read).message, "<workspace-id>: must be an id");
  assert.equal(renderError(new InvalidArgumentError("allowHosts", "too many"), CLI).message, "--allow-host: too many");
  assert.equal(renderError(new InvalidArgumentError("allowHostCompat", "must be true or false"), MCP_VOCABULARY).message, "--allow-host-compat (the operator's setting): must be true or false");
});

test("a field inside a list is the flag that gives it on the CLI, and keeps its index in SDK and MCP words", () => {
  const create = cliVocabulary(program, find("workspace create"));
  const file = new InvalidArgumentError("secrets[1].filePath", 'secret A: "/nope" is not a readable file', "or drop `secrets[1].filePath`");
  assert.equal(renderError(file, SDK_VOCABULARY).message, 'secrets[1].filePath: secret A: "/nope" is not a readable file');
  assert.equal(renderError(file, create).message, '--secret-file: secret A: "/nope" is not a readable file');
  assert.equal(renderError(file, create).hint, "or drop `--secret-file`");
  assert.equal(renderError(file, MCP_VOCABULARY).message, 'secrets[1].file_path: secret A: "/nope" is not a readable file');
  assert.equal(renderError(file, MCP_VOCABULARY).hint, "or drop `secrets[1].file_path`");
  assert.equal(renderError(new InvalidArgumentError("secrets[0]", "secret A is empty"), create).message, "`--secret` or `--secret-file`: secret A is empty");
  assert.equal(renderError(new InvalidArgumentError("secrets[0].value", "not a string"), create).message, "--secret: not a string");
});

test("the caller's own values, in double quotes, are never rewritten", () => {
  const error = new PyroError(ErrorCode.fileNotFound, 'no file "src/ttlSeconds.ts" (listVms() is not it)');
  assert.equal(renderError(error, CLI).message, 'no file "src/ttlSeconds.ts" (`pyro vm list` is not it)');
  assert.equal(renderError(error, MCP_VOCABULARY).message, 'no file "src/ttlSeconds.ts" (`pyro vm list` (run by the operator on the host) is not it)');
});

test("every operation a hint can name exists on the CLI, and over MCP as a tool or a host command", () => {
  for (const method of Object.keys(SURFACES)) {
    const cli = CLI.operation(method);
    const mcp = MCP_VOCABULARY.operation(method);
    if (SURFACES[method]!.cli) assert.ok(cli && find(SURFACES[method]!.cli), method);
    if (SURFACES[method]!.mcp) assert.ok(TOOL_NAMES.includes(mcp!), method);
  }
});

test("QEMU's ways of saying KVM cannot run the guest are recognised, so the hint names PYRO_ACCEL", () => {
  for (const log of [
    "KVM internal error. Suberror: 1\nemulation failure",
    "Could not access KVM kernel module: Permission denied\nqemu-system-x86_64: -accel kvm: failed to initialize kvm: Permission denied",
    "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\nqemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion `ret == cpu->kvm_msr_buf->nmsrs' failed.",
  ]) {
    assert.ok(isKvmFailure(log), log);
  }
  assert.ok(!isKvmFailure("qemu-system-x86_64: -drive file=x: Could not open 'x': No such file or directory"));
});

test("arguments a model gets wrong, or a prompt-injected one makes up, are invalid_argument naming the argument, and bounded", () => {
  const tool = findTool("vm_run")!;
  const refused = (args: unknown) => {
    const checked = checkArguments(tool, args);
    assert.ok("error" in checked, JSON.stringify(args)?.slice(0, 80));
    assert.equal(checked.error.code, "invalid_argument");
    assert.ok(checked.error.hint.length > 10);
    assert.ok(JSON.stringify(checked.error).length < 2000, "an error stays short whatever the input");
    return checked.error;
  };
  assert.match(refused("rm -rf /").message, /^arguments: must be an object, got "rm -rf \/"/);
  assert.match(refused([1, 2]).message, /^arguments: must be an object, got a list/);
  assert.match(refused(null).message, /^environment: is required; command: is required/);
  assert.match(refused({ environment: 5, command: "true" }).message, /^environment: must be a string, got 5/);
  assert.match(refused({ environment: "debian:12", command: "x".repeat(300_000) }).message, /^command: must be at most 262144 characters$/);
  const policy = refused({ environment: "debian:12", command: "true", network_policy: "all" });
  assert.match(policy.message, /^network_policy: must be one of "off", "egress", "egress\+published-ports", got "all"/);
  assert.match(policy.hint, /^`network_policy` takes one of/);
  const range = refused({ environment: "debian:12", command: "true", timeout_seconds: 1e12 });
  assert.match(range.message, /^timeout_seconds: must be at most 86400, got 1000000000000/);
  assert.deepEqual(foreignWords(`${range.message} ${range.hint}`, "mcp"), []);
  // An own property named __proto__ is an argument like any other, not a prototype.
  assert.match(refused(JSON.parse('{"__proto__": {"command": "true"}, "environment": "debian:12"}')).message, /^command: is required/);
});
