import assert from "node:assert/strict";
import { test } from "node:test";
import type { Command } from "commander";
import { envAliasesIn, envReadsIn, fillRegion, regionFiles, scanEnvReads, settingsDrift, troubleshootingExitMismatches } from "../../scripts/doc-tables.js";
import { firstDifference } from "../../scripts/contract.js";
import { newContext } from "../../src/cli/context.js";
import { PASS_THROUGH_COMMANDS } from "../../src/cli/help-text.js";
import { buildProgram } from "../../src/cli/main.js";
import { EXIT_CODES } from "../../src/cli/output.js";
import { Defaults, qemuBinary, resolvePaths } from "../../src/config.js";
import { poolSettings } from "../../src/runtime/pool.js";
import { DEFAULT_QEMU_USER } from "../../src/backends/qemu/jail.js";
import { MIN_POOL_TTL_SECONDS, SETTINGS } from "../../src/settings.js";
import { Pyro } from "../../src/sdk/pyro.js";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "../helpers.js";

test("the scan finds every form of environment read, and nothing else", () => {
  const source = [
    "const a = process.env.ALPHA_ONE;",
    "const b = env.BRAVO ?? 1;",
    "if (this.env.CHARLIE !== '0') {}",
    "const d = env?.DELTA_2;",
    'const e = process.env["ECHO"]; const f = env[\'FOXTROT\']; const g = env?.["GOLF"];',
    "const { HOTEL, INDIA: india } = process.env;",
    // Not reads of a named variable: a whole environment passed on, a computed key, a lower-case property, a write of a key.
    "spawn(x, { env: options.env ?? process.env }); env[name] = v; const z = { PYRO_X: 1 }; opts.environment.kilo;",
  ].join("\n");
  assert.deepEqual(envReadsIn(source).sort(), ["ALPHA_ONE", "BRAVO", "CHARLIE", "DELTA_2", "ECHO", "FOXTROT", "GOLF", "HOTEL", "INDIA"]);
});

test("the scan follows an environment bound to another name", () => {
  const source = [
    "function f(vars: NodeJS.ProcessEnv, other?: ProcessEnv) { return vars.JULIET ?? other?.[\"KILO\"]; }",
    "const all = process.env; const lima = all.LIMA;",
    "const { MIKE } = all;",
  ].join("\n");
  const aliases = envAliasesIn(source);
  assert.deepEqual(aliases.sort(), ["all", "other", "vars"]);
  assert.deepEqual(envReadsIn(source, aliases).sort(), ["JULIET", "KILO", "LIMA", "MIKE"]);
  assert.deepEqual(envReadsIn(source), [], "without the aliases these reads are invisible");
});

test("every environment variable read in src/ is in SETTINGS, and every row of SETTINGS is read", () => {
  const reads = scanEnvReads();
  // The scan must see the reads this test knows of, or a broken scan would pass vacuously.
  for (const name of ["PYRO_STATE_DIR", "NO_COLOR", "TERM", "XDG_CACHE_HOME", "PYRO_MCP_TOKEN"]) assert.ok(reads.has(name), `the scan missed ${name}`);
  const drift = settingsDrift(reads);
  assert.deepEqual(drift.unlisted, [], "read in src/ but missing from SETTINGS in src/settings.ts");
  assert.deepEqual(drift.unread, [], "listed in SETTINGS but read nowhere in src/");
});

test("readers fall back to the defaults SETTINGS documents", () => {
  const pool = poolSettings({});
  assert.equal(pool.size, SETTINGS.PYRO_POOL_SIZE.default);
  assert.equal(pool.maxMib, SETTINGS.PYRO_POOL_MAX_MIB.default);
  assert.equal(pool.ttlSeconds, SETTINGS.PYRO_POOL_TTL_SECONDS.default);
  assert.equal(poolSettings({ PYRO_POOL_TTL_SECONDS: "1" }).ttlSeconds, MIN_POOL_TTL_SECONDS);
  assert.equal(qemuBinary({}), SETTINGS.PYRO_QEMU_BINARY.default);
  assert.equal(DEFAULT_QEMU_USER, SETTINGS.PYRO_QEMU_USER.default);
  assert.equal(Defaults.bootTimeoutSeconds, SETTINGS.PYRO_BOOT_TIMEOUT_SECONDS.default);
  const paths = resolvePaths({}, { HOME: "/nonexistent-home", XDG_STATE_HOME: "/x/state", XDG_CACHE_HOME: "/x/cache" });
  assert.equal(paths.stateDir, "/x/state/pyro-mcp");
  assert.equal(paths.cacheDir, "/x/cache/pyro-mcp");
  assert.equal(paths.environmentsDir, "/x/cache/pyro-mcp/environments");
});

test("the generated tables of README.md and docs/ match the code", () => {
  for (const file of regionFiles()) {
    const difference = firstDifference(file.expected, file.actual);
    assert.equal(difference, undefined, `${file.file}: a generated table is out of date; run \`npm run contract\`. First difference at ${difference ?? ""}`);
  }
});

test("each error code's section of docs/troubleshooting.md states its exit status", () => {
  const text = readFileSync(join(ROOT, "docs", "troubleshooting.md"), "utf8");
  assert.deepEqual(troubleshootingExitMismatches(text), []);
  // The check itself notices a wrong status and a missing section.
  const broken = text.replace("### `patch_failed`\n\nExit 80. ", "### `patch_failed`\n\nExit 81. ").replace("### `shell_not_found`", "### `shell_gone`");
  assert.deepEqual(troubleshootingExitMismatches(broken), [
    'patch_failed: its section should start "Exit 80. ", not "Exit 81. A patch did not apply, and noth"',
    'shell_not_found: no "### `shell_not_found`" section',
    "shell_gone: a section for a code pyro does not have",
  ]);
});

/** The full help a command prints, after-texts included. */
function helpOf(command: Command): string {
  let text = "";
  command.configureOutput({ writeOut: (s) => (text += s), writeErr: (s) => (text += s) });
  command.outputHelp();
  return text;
}

test("pyro --help lists every setting and every exit status, and names the commands that pass the guest's status through", () => {
  const program = buildProgram(newContext(new Pyro(), new AbortController().signal));
  const help = helpOf(program);
  for (const name of Object.keys(SETTINGS)) assert.match(help, new RegExp(`^  ${name}\\b`, "m"), `pyro --help does not list ${name}`);
  for (const [code, exit] of Object.entries(EXIT_CODES)) assert.match(help, new RegExp(`^ +${exit} +${code}$`, "m"), `pyro --help does not list ${exit} ${code}`);
  assert.match(help, /loopback\s+included/, "pyro --help must say the MCP token is required on loopback too");
  const names = PASS_THROUGH_COMMANDS.map((c) => c.replace(/^pyro /, ""));
  assert.match(help.replace(/\s+/g, " "), new RegExp(`${names.slice(0, -1).join(", ")} and ${names.at(-1)} exit with the guest command's own status`));
  // Each of them is a real command.
  for (const path of PASS_THROUGH_COMMANDS) {
    let command: Command | undefined = program;
    for (const part of path.split(" ").slice(1)) command = command?.commands.find((c) => c.name() === part);
    assert.ok(command, `${path} is not a command`);
  }
});

test("a generated region is replaced between its markers, and missing markers are an error", () => {
  const text = "intro\n<!-- generated:t (note) -->\nold\nrows\n<!-- end generated:t -->\noutro\n";
  assert.equal(fillRegion(text, "t", "| new |", "X.md"), "intro\n<!-- generated:t (note) -->\n| new |\n<!-- end generated:t -->\noutro\n");
  assert.throws(() => fillRegion("no markers here", "t", "x", "X.md"), /X\.md: no "<!-- generated:t/);
  assert.throws(() => fillRegion("<!-- generated:t -->\nunterminated", "t", "x", "X.md"), /end generated:t/);
});
