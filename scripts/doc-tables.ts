/**
 * The tables in README.md and docs/*.md that are generated from the code:
 * environment variables from SETTINGS (src/settings.ts), exit statuses from
 * EXIT_CODES (src/cli/output.ts) with the meanings of ErrorCode
 * (src/errors.ts). Each sits between marker comments,
 *
 *   <!-- generated:NAME (npm run contract writes this table; edit its source) -->
 *   ...
 *   <!-- end generated:NAME -->
 *
 * which `npm run contract` rewrites and a unit test compares. Also here: the
 * scan of src/ for environment variable reads that keeps SETTINGS complete.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import ts from "typescript";
import { EXIT_CODES } from "../src/cli/output.js";
import { Defaults } from "../src/config.js";
import { ErrorCode } from "../src/errors.js";
import { SETTINGS, type Setting } from "../src/settings.js";

const ROOT = resolve(import.meta.dirname, "..");

// ---- environment variable reads in src/ ----

const NAME = "[A-Z][A-Z0-9_]*";
/** Bindings that hold an environment under another name than `env`: `vars: NodeJS.ProcessEnv`, `const vars = process.env`. */
const ALIAS_DECLARATIONS = [/\b([A-Za-z_$][\w$]*)\??\s*:\s*(?:NodeJS\.)?ProcessEnv\b/g, /\b(?:const|let|var)\s+([A-Za-z_$][\w$]*)\s*=\s*process\.env\b(?!\.)/g];

/** Names that environments are bound to in `source`, besides `env` itself. */
export function envAliasesIn(source: string): string[] {
  const names = new Set<string>();
  for (const pattern of ALIAS_DECLARATIONS) for (const match of source.matchAll(pattern)) if (match[1] !== "env") names.add(match[1]!);
  return [...names];
}

/**
 * The environment variables a piece of TypeScript reads, in order of first
 * appearance: `process.env.X`, `env.X`, `this.env.X`, `env?.X`, the same with
 * `["X"]`, `const { X } = process.env`, and all of these through `aliases`
 * (other names an environment is bound to).
 */
export function envReadsIn(source: string, aliases: readonly string[] = []): string[] {
  const holder = `\\b(?:${["env", ...aliases].map((a) => a.replace(/\$/g, "\\$")).join("|")})`;
  const names: string[] = [];
  const add = (name: string | undefined) => {
    if (name && !names.includes(name)) names.push(name);
  };
  for (const match of source.matchAll(new RegExp(`${holder}\\??\\.(${NAME})\\b`, "g"))) add(match[1]);
  for (const match of source.matchAll(new RegExp(`${holder}\\??\\.?\\[\\s*(["'\`])(${NAME})\\1\\s*\\]`, "g"))) add(match[2]);
  for (const match of source.matchAll(new RegExp(`\\{([^{}]*)\\}\\s*=\\s*(?:process\\.|this\\.)?${holder}\\b`, "g"))) {
    for (const part of match[1]!.split(",")) add(new RegExp(`^\\s*(${NAME})\\b`).exec(part)?.[1]);
  }
  return names;
}

/** Every environment variable read under src/, with the files (relative to the repository) that read it. */
export function scanEnvReads(dir = join(ROOT, "src")): Map<string, string[]> {
  const found = new Map<string, string[]>();
  const sources = new Map<string, string>();
  const walk = (current: string) => {
    for (const entry of readdirSync(current, { withFileTypes: true })) {
      const path = join(current, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith(".ts")) sources.set(relative(ROOT, path), readFileSync(path, "utf8"));
    }
  };
  walk(dir);
  // An environment handed around under another name is still read: follow every such name in every file.
  const aliases = [...new Set([...sources.values()].flatMap((source) => envAliasesIn(source)))];
  for (const [file, source] of sources) {
    for (const name of envReadsIn(source, aliases)) {
      const files = found.get(name) ?? [];
      files.push(file);
      found.set(name, files.sort());
    }
  }
  return found;
}

/** What keeps SETTINGS and the code in step: variables read but not listed, and rows nothing reads. */
export function settingsDrift(reads: Map<string, string[]> = scanEnvReads()): { unlisted: string[]; unread: string[] } {
  const listed = Object.keys(SETTINGS);
  return {
    unlisted: [...reads.keys()].filter((name) => !listed.includes(name)).map((name) => `${name} (read in ${reads.get(name)!.join(", ")})`),
    unread: listed.filter((name) => !reads.has(name)),
  };
}

// ---- error codes ----

/**
 * The doc comment of each `ErrorCode` entry, by code value, read from the
 * source with the TypeScript parser (no type checking: this is quick).
 */
export function errorCodeDocs(): Map<string, string> {
  const path = join(ROOT, "src", "errors.ts");
  const source = ts.createSourceFile(path, readFileSync(path, "utf8"), ts.ScriptTarget.ES2022, true);
  const docs = new Map<string, string>();
  const visit = (node: ts.Node) => {
    if (ts.isVariableDeclaration(node) && node.name.getText() === "ErrorCode" && node.initializer) {
      const object = ts.isAsExpression(node.initializer) ? node.initializer.expression : node.initializer;
      if (ts.isObjectLiteralExpression(object)) {
        for (const property of object.properties) {
          if (!ts.isPropertyAssignment(property) || !ts.isStringLiteral(property.initializer)) continue;
          const comment = ts.getJSDocCommentsAndTags(property).find(ts.isJSDoc)?.comment;
          docs.set(property.initializer.text, typeof comment === "string" ? comment.replace(/\s+/g, " ").trim() : "");
        }
      }
      return;
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return docs;
}

// ---- markdown ----

/** A table cell: one line, pipes escaped. */
function cell(text: string): string {
  return text.replace(/\s*\n\s*/g, " ").replace(/\|/g, "\\|").trim();
}

/** A markdown table; `align` is each column's delimiter (`---:` right-aligns). */
export function table(head: string[], rows: string[][], align: string[] = head.map(() => "---")): string {
  return [`| ${head.join(" | ")} |`, `| ${align.join(" | ")} |`, ...rows.map((row) => `| ${row.map(cell).join(" | ")} |`)].join("\n");
}

/** `NAME` or `NAME=values`, as code. */
export function settingLabel(name: string, setting: Setting): string {
  return setting.values === undefined ? name : `${name}=${setting.values}`;
}

/** The default of a row: a literal value as code, a description as written. */
export function defaultCell(setting: Setting): string {
  return setting.literal ? `\`${String(setting.default)}\`` : String(setting.default);
}

/** variable | default | effect, for every row of SETTINGS. */
export function settingsTable(): string {
  return table(
    ["variable", "default", "effect"],
    Object.entries(SETTINGS).map(([name, setting]) => [`\`${settingLabel(name, setting)}\``, defaultCell(setting), setting.effect]),
  );
}

/** exit | code | meaning, for every pyro error code; `link` turns each code into a link to its heading. */
export function exitCodeTable(link = false): string {
  const docs = errorCodeDocs();
  return table(
    ["exit", "code", "meaning"],
    Object.entries(EXIT_CODES)
      .sort(([, a], [, b]) => a - b)
      .map(([code, exit]) => [String(exit), link ? `[\`${code}\`](#${code})` : `\`${code}\``, docs.get(code) ?? ""]),
    ["---:", "---", "---"],
  );
}

/** The contract's defaults in one sentence, as the README's CLI section states them. */
export function defaultsLine(): string {
  const off = (on: boolean) => (on ? "on" : "off");
  return [
    `Defaults: ${Defaults.vcpuCount} vCPU, ${Defaults.memMib} MiB, command timeout ${Defaults.timeoutSeconds} s, VM time-to-live ${Defaults.ttlSeconds} s,`,
    `network ${off(Defaults.network)}, host-compat ${off(Defaults.allowHostCompat)}.`,
  ].join("\n");
}

/** The generated regions of the hand-written documents. */
export const REGIONS: readonly { file: string; name: string; render: () => string }[] = [
  { file: "README.md", name: "defaults", render: defaultsLine },
  { file: "README.md", name: "exit-codes", render: () => exitCodeTable() },
  { file: "README.md", name: "settings", render: settingsTable },
  { file: "docs/install.md", name: "settings", render: settingsTable },
  { file: "docs/troubleshooting.md", name: "exit-codes", render: () => exitCodeTable(true) },
];

function markers(name: string): { begin: RegExp; end: string } {
  return { begin: new RegExp(`<!-- generated:${name}\\b[^>]*-->\\n`), end: `<!-- end generated:${name} -->` };
}

/** `text` with the region `name` replaced by `content`; throws when its markers are missing. */
export function fillRegion(text: string, name: string, content: string, file: string): string {
  const { begin, end } = markers(name);
  const start = begin.exec(text);
  const stop = start ? text.indexOf(end, start.index) : -1;
  if (!start || stop < 0) throw new Error(`${file}: no "<!-- generated:${name} ... -->" ... "${end}" markers`);
  const from = start.index + start[0].length;
  return `${text.slice(0, from)}${content}\n${text.slice(stop)}`;
}

/** Each generated file's expected text (all its regions filled), beside what is on disk. */
export function regionFiles(root = ROOT): { file: string; path: string; expected: string; actual: string }[] {
  const files = [...new Set(REGIONS.map((r) => r.file))];
  return files.map((file) => {
    const path = join(root, file);
    const actual = readFileSync(path, "utf8");
    const expected = REGIONS.filter((r) => r.file === file).reduce((text, region) => fillRegion(text, region.name, region.render(), file), actual);
    return { file, path, expected, actual };
  });
}

/** The exit status each code's section of docs/troubleshooting.md states ("Exit 64."), beside EXIT_CODES. */
export function troubleshootingExitMismatches(text: string): string[] {
  const problems: string[] = [];
  const sections = new Map<string, string>();
  for (const match of text.matchAll(/^### `([a-z_]+)`\n+([^\n]*)/gm)) sections.set(match[1]!, match[2]!);
  for (const [code, exit] of Object.entries(EXIT_CODES)) {
    const first = sections.get(code);
    if (first === undefined) problems.push(`${code}: no "### \`${code}\`" section`);
    else if (!first.startsWith(`Exit ${exit}. `)) problems.push(`${code}: its section should start "Exit ${exit}. ", not "${first.slice(0, 40)}"`);
  }
  for (const code of sections.keys()) {
    if (!(Object.values(ErrorCode) as string[]).includes(code)) problems.push(`${code}: a section for a code pyro does not have`);
  }
  return problems;
}
