/**
 * Snippets: the TypeScript, JavaScript and JSON blocks in README.md, docs/*.md and examples/*.md,
 * checked as tests so a document cannot show an API call or a client config the program does not
 * have.
 *
 * The format (also described in README.md, "Documentation"):
 * - every fenced block whose info string is `ts`, `typescript`, `js` or `javascript` is a code
 *   snippet, and every `json` block a JSON snippet;
 * - a code snippet with an `import` line starts a program; one without continues the program of the
 *   code snippet before it in the same document (so a page can show a call after the setup it
 *   needs without repeating the imports). Nothing else is added to a program;
 * - every program is type-checked against this checkout's src/ (`pyro-mcp` and each `pyro-mcp/x`
 *   subpath resolve as package.json's exports say) and then run, unless one of its snippets has
 *   `<!-- snippet: typecheck-only: REASON -->` on the line before it (a model's API key, the
 *   internet). A run passes when the program exits 0, leaves no VM or workspace, and every guest
 *   command it ran exited 0 (test/snippet-exits.ts records them);
 * - a JSON snippet must parse; one with `mcpServers` is an MCP client config whose servers must
 *   start and answer.
 *
 * This file only parses and assembles; test/integration/snippets.test.ts type-checks and runs.
 */

export type Language = "ts" | "js" | "json";

export interface Snippet {
  /** 1-based line of the opening fence. */
  line: number;
  language: Language;
  /** The block's lines. */
  code: string[];
  /** Set when the block is marked `<!-- snippet: typecheck-only: REASON -->`. */
  typecheckOnly?: string;
}

/** One or more code snippets of a document that make one module: a start and its continuations. */
export interface Program {
  /** The snippets, in document order; the first has imports. */
  snippets: Snippet[];
  language: "ts" | "js";
  /** The module's text. */
  text: string;
  /** The document line of each of the module's lines (index 0 is the module's line 1). */
  lineMap: number[];
  /** The reasons of the snippets marked typecheck-only; empty when the program runs. */
  typecheckOnly: string[];
}

export interface ParsedSnippets {
  programs: Program[];
  json: Snippet[];
  /** Format errors, each starting with the line number. */
  problems: string[];
}

const FENCE = /^(\s*)(`{3,}|~{3,})\s*([^`\s]*)/;
const MARKER = /^<!--\s*snippet:(.*?)-->\s*$/;
const TYPECHECK_ONLY = /^\s*typecheck-only:(.*)$/;
const LANGUAGES: Record<string, Language> = { ts: "ts", typescript: "ts", js: "js", javascript: "js", json: "json" };
const IMPORT = /^\s*import\s/;

/** Splits a markdown document into its programs and JSON snippets and reports misuse of the format. */
export function parseSnippets(markdown: string): ParsedSnippets {
  const lines = markdown.split("\n");
  const programs: Program[] = [];
  const json: Snippet[] = [];
  const problems: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = FENCE.exec(lines[i]!);
    if (!open) {
      if (MARKER.test(lines[i]!.trim()) && !FENCE.test(lines[i + 1] ?? "")) problems.push(`${i + 1}: a snippet marker must be on the line right before a fenced block`);
      continue;
    }
    const [, indent, fence, info] = open as unknown as [string, string, string, string];
    const close = new RegExp(`^\\s*${fence[0] === "`" ? "`" : "~"}{${fence.length},}\\s*$`);
    const code: string[] = [];
    let end = i + 1;
    for (; end < lines.length && !close.test(lines[end]!); end++) code.push(lines[end]!.slice(Math.min(indent.length, leadingSpaces(lines[end]!))));
    const language = LANGUAGES[info.toLowerCase()];
    const marker = MARKER.exec((lines[i - 1] ?? "").trim());
    const snippet: Snippet = { line: i + 1, language: language ?? "ts", code };
    if (marker) {
      const only = TYPECHECK_ONLY.exec(marker[1]!);
      if (!only) problems.push(`${i}: unknown snippet marker; the one marker is <!-- snippet: typecheck-only: REASON -->`);
      else if (only[1]!.trim() === "") problems.push(`${i}: a typecheck-only marker needs a reason: <!-- snippet: typecheck-only: REASON -->`);
      else if (language === undefined || language === "json") problems.push(`${i}: a typecheck-only marker before a block that is not TypeScript or JavaScript`);
      else snippet.typecheckOnly = only[1]!.trim();
    }
    if (language === "json") json.push(snippet);
    else if (language !== undefined) addToProgram(programs, snippet, problems);
    i = end;
  }
  return { programs, json, problems };
}

function leadingSpaces(line: string): number {
  return line.length - line.trimStart().length;
}

function addToProgram(programs: Program[], snippet: Snippet, problems: string[]): void {
  const language = snippet.language as "ts" | "js";
  const previous = programs[programs.length - 1];
  const starts = snippet.code.some((line) => IMPORT.test(line));
  if (!starts && previous === undefined) problems.push(`${snippet.line}: a code snippet without imports continues the one before it, and there is none; add its imports`);
  if (starts || previous === undefined) {
    programs.push({ snippets: [snippet], language, text: "", lineMap: [], typecheckOnly: [] });
  } else {
    if (previous.language !== language) problems.push(`${snippet.line}: a ${language} snippet cannot continue a ${previous.language} one; add its imports`);
    previous.snippets.push(snippet);
  }
  const program = programs[programs.length - 1]!;
  for (const [k, text] of snippet.code.entries()) {
    program.lineMap.push(snippet.line + 1 + k);
    program.text += `${text}\n`;
  }
  if (snippet.typecheckOnly !== undefined) program.typecheckOnly.push(snippet.typecheckOnly);
}

/** The document line of a 0-based line of a program's module. */
export function documentLine(program: Program, moduleLine: number): number {
  return program.lineMap[Math.min(moduleLine, program.lineMap.length - 1)] ?? program.snippets[0]!.line;
}

/** A name for a program's module file: the document and the first snippet's line, in safe characters. */
export function moduleName(document: string, program: Program): string {
  return `${document.replace(/[^A-Za-z0-9]+/g, "_")}_L${program.snippets[0]!.line}.${program.language === "ts" ? "ts" : "js"}`;
}

export interface McpServerConfig {
  name: string;
  command: string;
  args: string[];
  env: Record<string, string>;
}

/**
 * The servers of an MCP client config (`{"mcpServers": {NAME: {command, args, env}}}`), or a list of
 * what is wrong with its shape. Undefined when the JSON is not an MCP client config.
 */
export function mcpServers(value: unknown): { servers: McpServerConfig[]; problems: string[] } | undefined {
  if (typeof value !== "object" || value === null || !("mcpServers" in value)) return undefined;
  const servers: McpServerConfig[] = [];
  const problems: string[] = [];
  const entries = value.mcpServers;
  if (typeof entries !== "object" || entries === null) return { servers, problems: ["mcpServers is not an object"] };
  for (const [name, entry] of Object.entries(entries)) {
    const { command, args = [], env = {} } = (entry ?? {}) as { command?: unknown; args?: unknown; env?: unknown };
    if (typeof command !== "string") problems.push(`mcpServers.${name}.command is not a string`);
    else if (!Array.isArray(args) || args.some((a) => typeof a !== "string")) problems.push(`mcpServers.${name}.args is not a list of strings`);
    else if (typeof env !== "object" || env === null || Object.values(env).some((v) => typeof v !== "string")) problems.push(`mcpServers.${name}.env is not a map of strings`);
    else servers.push({ name, command, args: args as string[], env: env as Record<string, string> });
  }
  return { servers, problems };
}
