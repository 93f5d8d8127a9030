import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { after, describe, test } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import ts from "typescript";
import { Pyro } from "../../src/index.js";
import { assertNothingLeft, removeDir, ROOT } from "../helpers.js";
import type { RecordedExit } from "../snippet-exits.js";
import { documentLine, mcpServers, moduleName, parseSnippets, type Program } from "../snippets.js";

/**
 * Every TypeScript, JavaScript and JSON block of the documents (the format is in test/snippets.ts):
 * each program is type-checked against src/ in one compiler run, then run with tsx as a user would
 * (`node --import tsx`), against real guests; each MCP client config is started and asked for its
 * tools. The generated contract's blocks are declarations, not programs, and are left out.
 */
const DOCUMENTS = [
  join(ROOT, "README.md"),
  ...["docs", "examples"].flatMap((dir) =>
    readdirSync(join(ROOT, dir))
      .filter((name) => name.endsWith(".md") && name !== "public-contract.md")
      .sort()
      .map((name) => join(ROOT, dir, name)),
  ),
];

/** The ready-made config files next to examples/mcp_client_config.md are client configs too. */
const CONFIG_FILES = readdirSync(join(ROOT, "examples"))
  .filter((name) => name.endsWith(".json"))
  .sort()
  .map((name) => join(ROOT, "examples", name));

/** Generous: a program may boot a guest and run make in it, under TCG on a busy host. */
const RUN_TIMEOUT_MS = 10 * 60_000;

interface Located {
  document: string;
  program: Program;
  file: string;
}

const work = mkdtempSync(join(tmpdir(), "pyro-snippets-"));
const modules = join(work, "modules");
const scratch = join(work, "scratch");
const stateDir = join(work, "state");
const parsed = DOCUMENTS.map((path) => ({ document: relative(ROOT, path), ...parseSnippets(readFileSync(path, "utf8")) }));
const programs: Located[] = parsed.flatMap(({ document, programs }) => programs.map((program) => ({ document, program, file: join(modules, moduleName(document, program)) })));

after(() => removeDir(work));

/**
 * `pyro-mcp` and its subpaths, mapped to src/ as package.json's exports name them in dist/: the
 * snippets see the API of this checkout, not of a build that may be older.
 */
function packagePaths(): Record<string, string[]> {
  const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { name: string; exports: Record<string, { import?: string } | string> };
  const paths: Record<string, string[]> = {};
  for (const [subpath, target] of Object.entries(pkg.exports)) {
    if (typeof target === "string" || target.import === undefined) continue;
    const source = target.import.replace(/^\.\/dist\//, "src/").replace(/\.js$/, ".ts");
    paths[subpath === "." ? pkg.name : `${pkg.name}/${subpath.slice(2)}`] = [join(ROOT, source)];
  }
  return paths;
}

/**
 * A directory where the programs are modules of an ESM package with this checkout's compiler
 * options (strict, as src/ is), its node_modules (the optional peers openai, @langchain/core and ai
 * are dev dependencies), and `pyro-mcp` resolving to src/ for both tsc and tsx.
 */
function writeModules(): string {
  mkdirSync(modules, { recursive: true });
  symlinkSync(join(ROOT, "node_modules"), join(work, "node_modules"));
  writeFileSync(join(work, "package.json"), JSON.stringify({ type: "module", private: true }));
  const base = (ts.readConfigFile(join(ROOT, "tsconfig.json"), (p) => ts.sys.readFile(p)).config as { compilerOptions: Record<string, unknown> }).compilerOptions;
  const compilerOptions = { ...base, noEmit: true, allowJs: true, checkJs: true, moduleDetection: "force", paths: packagePaths() };
  const tsconfig = join(work, "tsconfig.json");
  writeFileSync(tsconfig, JSON.stringify({ compilerOptions, include: ["modules"] }, null, 2));
  for (const { program, file } of programs) writeFileSync(file, program.text);
  return tsconfig;
}

/** `./repo` as the snippets use it: a project with a Makefile (default and test targets) and a src/. */
function writeScratch(): void {
  mkdirSync(join(scratch, "repo", "src"), { recursive: true });
  writeFileSync(join(scratch, "repo", "Makefile"), "all:\n\t@echo built\ntest:\n\tsh src/check.sh\n");
  writeFileSync(join(scratch, "repo", "src", "check.sh"), 'echo "checked in $(pwd)"\n');
  mkdirSync(stateDir);
}

const tsconfig = writeModules();
writeScratch();

/** Every compiler error in a program's module, as `document:line: message`. */
function typeErrors(): string[] {
  const { options, fileNames, errors } = ts.parseJsonConfigFileContent(ts.readConfigFile(tsconfig, (p) => ts.sys.readFile(p)).config, ts.sys, work);
  assert.deepEqual(errors.map((e) => ts.flattenDiagnosticMessageText(e.messageText, "\n")), [], "the snippets' tsconfig");
  const compiler = ts.createProgram(fileNames, options);
  const byFile = new Map(programs.map((p) => [p.file, p]));
  const found: string[] = [];
  for (const diagnostic of ts.getPreEmitDiagnostics(compiler)) {
    const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, "\n");
    const located = diagnostic.file ? byFile.get(diagnostic.file.fileName) : undefined;
    if (!located || diagnostic.file === undefined || diagnostic.start === undefined) {
      found.push(`${diagnostic.file ? relative(ROOT, diagnostic.file.fileName) : "(no file)"}: ${message}`);
      continue;
    }
    const { line } = diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start);
    found.push(`${located.document}:${documentLine(located.program, line)}: ${message}`);
  }
  return found;
}

/** Where a program's guest commands and their exit statuses are written (test/snippet-exits.ts). */
const EXIT_HOOK = join(ROOT, "test", "snippet-exits.ts");

function runModule(file: string, exitLog: string): Promise<{ code: number | null; signal: NodeJS.Signals | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", "--import", EXIT_HOOK, file], {
      cwd: scratch,
      env: { ...process.env, PYRO_STATE_DIR: stateDir, PYRO_PROGRESS: "0", TSX_TSCONFIG_PATH: tsconfig, PYRO_SNIPPET_EXITS: exitLog },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
    const timer = setTimeout(() => child.kill("SIGKILL"), RUN_TIMEOUT_MS);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, output });
    });
  });
}

/** Environments a program names, so they can be pulled before it runs (a pull prints progress). */
function environmentsOf(program: Program): string[] {
  return [...new Set([...program.text.matchAll(/environment: "([^"]+)"/g)].map((m) => m[1]!))];
}

function where(located: Located): string {
  const { snippets } = located.program;
  return `${located.document}:${snippets.map((s) => s.line).join("+")}`;
}

describe("documents: every code snippet compiles against the package, and runs unless marked", () => {
  test("the snippet format is used correctly", () => {
    const problems = parsed.flatMap(({ document, problems }) => problems.map((p) => `${document}:${p}`));
    assert.deepEqual(problems, []);
    assert.ok(programs.length > 0, "no snippets found: is the parser looking at the right blocks?");
  });

  test(`${programs.length} programs type-check against src/`, () => {
    const errors = typeErrors();
    assert.equal(errors.length, 0, `snippets that do not compile; fix the document (or the program):\n${errors.join("\n")}\n`);
  });

  for (const located of programs) {
    const reasons = located.program.typecheckOnly;
    if (reasons.length > 0) {
      test(`${where(located)} (type-checked only)`, { skip: reasons.join("; ") }, () => {});
      continue;
    }
    test(`${where(located)} runs`, async () => {
      for (const environment of environmentsOf(located.program)) await new Pyro({ stateDir }).pullEnvironment(environment);
      const exitLog = `${located.file}.exits`;
      const result = await runModule(located.file, exitLog);
      try {
        assert.equal(result.code, 0, `${where(located)} failed (exit ${String(result.code ?? result.signal)}):\n${result.output}`);
        // The guest commands it ran must succeed too: a failing one only prints and the program still ends with 0.
        const exits = existsSync(exitLog) ? readFileSync(exitLog, "utf8").trim().split("\n").map((line) => JSON.parse(line) as RecordedExit) : [];
        if (/\.(run|runInVm|exec|execVm|execWorkspace)\(/.test(located.program.text)) assert.ok(exits.length > 0, `${where(located)} runs guest commands, but none was recorded: is test/snippet-exits.ts loaded?`);
        const failed = exits.filter((e) => e.exitCode !== 0);
        assert.deepEqual(failed, [], `${where(located)} ran guest commands that failed; fix the document:\n${result.output}`);
        await using pyro = new Pyro({ stateDir });
        assert.deepEqual((await pyro.listWorkspaces()).map((w) => w.workspaceId), [], `${where(located)} left workspaces`);
        assert.deepEqual((await pyro.listVms()).map((v) => v.vmId), [], `${where(located)} left VMs`);
      } finally {
        await using pyro = new Pyro({ stateDir });
        for (const ws of await pyro.listWorkspaces()) await pyro.deleteWorkspace(ws.workspaceId);
        for (const vm of await pyro.listVms()) await pyro.deleteVm(vm.vmId);
        assertNothingLeft(stateDir);
      }
    });
  }
});

describe("documents: every JSON block parses, and every MCP client config starts a server that answers", () => {
  const blocks = [
    ...parsed.flatMap(({ document, json }) => json.map((snippet) => ({ where: `${document}:${snippet.line}`, text: snippet.code.join("\n") }))),
    ...CONFIG_FILES.map((path) => ({ where: relative(ROOT, path), text: readFileSync(path, "utf8") })),
  ];
  for (const block of blocks) {
    test(block.where, async () => {
      let value: unknown;
      assert.doesNotThrow(() => (value = JSON.parse(block.text)), `${block.where} is not JSON`);
      const config = mcpServers(value);
      if (!config) return;
      assert.deepEqual(config.problems, [], `${block.where} is not an MCP client config`);
      assert.ok(config.servers.length > 0, `${block.where} names no server`);
      for (const server of config.servers) await assertServerAnswers(block.where, server.command, server.args, server.env);
    });
  }
});

/**
 * Starts the server the way a client would (the command looked up as an installed package's bin,
 * here this checkout's) and lists its tools: an unknown subcommand, option or profile fails here.
 */
async function assertServerAnswers(where: string, command: string, args: string[], env: Record<string, string>): Promise<void> {
  const bins = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { bin: Record<string, string> }).bin;
  const bin = bins[command];
  assert.ok(bin !== undefined, `${where}: command ${command} is not a bin of this package (${Object.keys(bins).join(", ")})`);
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [join(ROOT, bin), ...args],
    env: { ...(process.env as Record<string, string>), PYRO_STATE_DIR: stateDir, ...env },
    cwd: scratch,
    stderr: "pipe",
  });
  let stderr = "";
  transport.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const client = new Client({ name: "snippets-test", version: "1" });
  try {
    await client.connect(transport);
    const { tools } = await client.listTools();
    assert.ok(tools.length > 0, `${where}: ${command} ${args.join(" ")} offers no tools`);
  } catch (error) {
    assert.fail(`${where}: ${command} ${args.join(" ")} did not answer as an MCP server: ${String(error)}\n${stderr}`);
  } finally {
    await client.close();
  }
}
