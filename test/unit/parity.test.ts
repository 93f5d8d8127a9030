import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import type { Command } from "commander";
import { z } from "zod";
import { buildProgram } from "../../src/cli/main.js";
import { newContext } from "../../src/cli/context.js";
import { Defaults } from "../../src/config.js";
import { Pyro } from "../../src/index.js";
import { TOOLS } from "../../src/tools/catalog.js";
import { PROFILE_TOOLS, PROFILES } from "../../src/tools/profiles.js";
import { CLI_ONLY, SURFACES } from "../../src/tools/surfaces.js";
import { snakeKey } from "../../src/util/case.js";
import { PYRO_BIN, ROOT } from "../helpers.js";

function leafCommands(command: Command, prefix = ""): Map<string, Command> {
  const out = new Map<string, Command>();
  for (const sub of command.commands) {
    const name = prefix ? `${prefix} ${sub.name()}` : sub.name();
    if (sub.commands.length) for (const [k, v] of leafCommands(sub, name)) out.set(k, v);
    else out.set(name, sub);
  }
  return out;
}

const program = buildProgram(newContext(new Pyro(), new AbortController().signal));
const cli = leafCommands(program);
const tools = new Map(TOOLS.map((t) => [t.name, t]));

test("every SDK operation has a CLI command and an MCP tool unless it says why not", () => {
  const methods = Object.getOwnPropertyNames(Pyro.prototype).filter((name) => name !== "constructor");
  assert.deepEqual(methods.sort(), Object.keys(SURFACES).sort(), "SDK methods and the surface table differ");
  for (const [method, surface] of Object.entries(SURFACES)) {
    if (surface.cli) assert.ok(cli.has(surface.cli), `${method}: no CLI command "${surface.cli}"`);
    else assert.ok(surface.noCliBecause, `${method} has no CLI command and no reason`);
    if (surface.mcp) assert.ok(tools.has(surface.mcp), `${method}: no MCP tool ${surface.mcp}`);
    else assert.ok(surface.noMcpBecause, `${method} has no MCP tool and no reason`);
  }
});

test("every CLI command and MCP tool maps back to an SDK operation", () => {
  const cliBacked = new Set(Object.values(SURFACES).map((s) => s.cli));
  for (const name of cli.keys()) assert.ok(cliBacked.has(name) || CLI_ONLY.has(name), `CLI command "${name}" has no SDK operation`);
  const mcpBacked = new Set(Object.values(SURFACES).map((s) => s.mcp));
  for (const name of tools.keys()) assert.ok(mcpBacked.has(name), `MCP tool ${name} has no SDK operation`);
});

test("option names agree: SDK camelCase, MCP snake_case, CLI kebab-case", () => {
  const vmOptions = ["vcpuCount", "memMib", "ttlSeconds", "network", "networkPolicy", "allowHosts", "allowHostCompat"];
  const expectations: [string, string, string[]][] = [
    ["vm_run", "run", ["environment", "command", "timeoutSeconds", ...vmOptions]],
    ["vm_create", "vm create", ["environment", ...vmOptions]],
    ["workspace_create", "workspace create", ["environment", "seedPath", "name", "labels", "secrets", ...vmOptions]],
    ["workspace_exec", "workspace exec", ["workspaceId", "command", "timeoutSeconds", "secretEnv"]],
    ["shell_open", "workspace shell open", ["workspaceId", "cwd", "cols", "rows", "secretEnv"]],
    ["shell_read", "workspace shell read", ["workspaceId", "shellId", "cursor", "maxChars", "plain", "waitForIdleMs"]],
    ["service_logs", "workspace service logs", ["workspaceId", "name", "tailLines"]],
    ["workspace_sync_push", "workspace sync push", ["workspaceId", "sourcePath", "dest", "timeoutSeconds"]],
    ["vm_exec", "vm exec", ["vmId", "command", "timeoutSeconds"]],
  ];
  // The operator's decisions are flags of `pyro mcp serve`, not arguments a model can pass.
  const operatorOnly = new Set(["allowHostCompat"]);
  for (const [toolName, cliName, sdkNames] of expectations) {
    const tool = tools.get(toolName)!;
    assert.deepEqual(Object.keys(tool.input.shape).sort(), sdkNames.filter((n) => !operatorOnly.has(n)).map(snakeKey).sort(), toolName);
    const command = cli.get(cliName)!;
    const flags = new Set(command.options.map((o) => o.long));
    const positional = new Set(command.registeredArguments.map((a) => a.name()));
    for (const name of sdkNames) {
      const kebab = name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
      const flag = name === "labels" ? "--label" : name === "allowHosts" ? "--allow-host" : name === "secrets" ? "--secret" : `--${kebab}`;
      assert.ok(flags.has(flag) || positional.has(kebab) || (name === "command" && positional.has("command")), `${cliName}: no ${flag} or <${kebab}>`);
    }
  }
});

test("defaults are the contract's on every surface", () => {
  assert.deepEqual(
    { ...Defaults, maxOutputBytes: undefined, bootTimeoutSeconds: undefined },
    {
      vcpuCount: 1,
      memMib: 1024,
      timeoutSeconds: 30,
      ttlSeconds: 600,
      network: false,
      allowHostCompat: false,
      maxOutputBytes: undefined,
      bootTimeoutSeconds: undefined,
      pushTimeoutSeconds: 600,
    },
  );
  const push = (z.toJSONSchema(tools.get("workspace_sync_push")!.input) as { properties: Record<string, { description?: string }> }).properties;
  assert.match(push.timeout_seconds?.description ?? "", /Default 600\./);
  assert.ok(cli.get("workspace sync push")!.helpInformation().replace(/\s+/g, " ").includes("(default 600)"));
  // What clients see: the JSON Schema of the tool's input.
  const run = (z.toJSONSchema(tools.get("vm_run")!.input) as { properties: Record<string, { description?: string }> }).properties;
  assert.match(run.vcpu_count?.description ?? "", /Default 1\./);
  assert.match(run.mem_mib?.description ?? "", /Default 1024\./);
  assert.match(run.timeout_seconds?.description ?? "", /Default 30\./);
  assert.match(run.ttl_seconds?.description ?? "", /Default 600\./);
  assert.match(run.network?.description ?? "", /Default false/);
  assert.match(run.network_policy?.description ?? "", /off: no NIC at all \(default\)/);
  assert.match(run.allow_hosts?.description ?? "", /Default: any public host/);
  assert.equal(run.allow_host_compat, undefined, "host-compat is the operator's switch, not a tool argument");
  const help = cli.get("run")!.helpInformation().replace(/\s+/g, " ");
  for (const text of ["(default 1)", "(default 1024)", "(default 30)", "(default 600)", "(default off: no NIC at all)", "(default off)"]) assert.ok(help.includes(text), text);
});

test("no tool of any profile lets a model turn isolation off", () => {
  for (const tool of TOOLS) {
    const schema = JSON.stringify(z.toJSONSchema(tool.input));
    assert.doesNotMatch(schema, /host.?compat/i, tool.name);
    assert.doesNotMatch(tool.description, /host.?compat|without isolation/i, tool.name);
  }
  const serve = cli.get("mcp serve")!;
  assert.ok(serve.options.some((o) => o.long === "--allow-host-compat"), "the operator's switch is a flag of pyro mcp serve");
});

test("the client configs are valid and name a command that works", () => {
  const bin = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { bin: Record<string, string> }).bin;
  for (const file of ["claude_desktop_mcp_config.json", "cursor_mcp_config.json"]) {
    const config = JSON.parse(readFileSync(join(ROOT, "examples", file), "utf8")) as { mcpServers: Record<string, { command: string; args: string[] }> };
    const server = config.mcpServers.pyro!;
    assert.ok(bin[server.command], `${file}: "${server.command}" is not a bin of this package`);
    const help = spawnSync(process.execPath, [PYRO_BIN, ...server.args, "--help"], { encoding: "utf8" });
    assert.equal(help.status, 0, `${file}: ${help.stderr}`);
  }
  const markdown = readFileSync(join(ROOT, "examples", "mcp_client_config.md"), "utf8");
  const block = /```json\n([\s\S]*?)```/.exec(markdown)?.[1];
  assert.ok(block);
  assert.ok((JSON.parse(block) as { mcpServers: object }).mcpServers);
  assert.match(markdown, /claude mcp add pyro -- pyro mcp serve/);
  assert.match(markdown, /codex mcp add pyro -- pyro mcp serve/);
});

test("examples/mcp_client_config.md lists each profile's tools as the server offers them", () => {
  const markdown = readFileSync(join(ROOT, "examples", "mcp_client_config.md"), "utf8");
  const rows = new Map([...markdown.matchAll(/^\| `([a-z-]+)`[^|]*\| (.*) \|$/gm)].map((m) => [m[1]!, [...m[2]!.matchAll(/`([a-z_]+)`/g)].map((t) => t[1]!)]));
  let above: string[] = [];
  for (const profile of PROFILES) {
    const listed = rows.get(profile);
    assert.ok(listed, `no row for profile ${profile}`);
    // "the above plus ..." rows add to the previous row.
    const tools = /the above plus/.test(markdown.split("\n").find((l) => l.startsWith(`| \`${profile}\``)) ?? "") ? [...above, ...listed] : listed;
    assert.deepEqual([...tools].sort(), [...PROFILE_TOOLS[profile]].sort(), `the ${profile} row`);
    above = tools;
  }
});
