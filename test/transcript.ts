/**
 * Transcripts: the shell sessions in README.md and docs/*.md, run as tests so a document and the
 * program can only disagree in a failing test.
 *
 * The format (also described in docs/architecture.md, "Documentation that runs"):
 * - every fenced block whose info string is `console` is a transcript;
 * - a line starting with `$ ` is a command; a command line ending in `\` continues on the next line;
 * - the lines after a command, up to the next `$ ` line or the end of the block, are what it prints,
 *   stdout and stderr together as a terminal shows them;
 * - a line that is exactly `...` stands for any number of lines;
 * - `<!-- transcript: skip: REASON -->` on the line before a block keeps it from running;
 * - a `$ ` line in any other fenced block is an error, so a session cannot hide from the test.
 *
 * This file only parses and compares; test/integration/transcripts.test.ts runs them.
 */

export interface Command {
  /** 1-based line of the `$ ` line in the document. */
  line: number;
  /** The command as bash reads it (continuation lines joined with their newlines). */
  text: string;
  /** What the document says it prints, one entry per line. */
  expected: string[];
}

export interface Block {
  /** 1-based line of the opening fence. */
  line: number;
  /** Set when the block is marked `<!-- transcript: skip: REASON -->`. */
  skip?: string;
  commands: Command[];
}

export interface ParsedDocument {
  blocks: Block[];
  /** Format errors, each starting with the line number. */
  problems: string[];
}

const FENCE = /^(\s*)(`{3,}|~{3,})\s*([^`\s]*)/;
const SKIP = /^<!--\s*transcript:\s*skip:?(.*?)-->\s*$/;
const PROMPT = /^\$ /;

/** Splits a markdown document into its transcripts and reports misuse of the format. */
export function parseDocument(markdown: string): ParsedDocument {
  const lines = markdown.split("\n");
  const blocks: Block[] = [];
  const problems: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = FENCE.exec(lines[i]!);
    if (!open) {
      if (SKIP.test(lines[i]!.trim()) && !FENCE.test(lines[i + 1] ?? "")) problems.push(`${i + 1}: a transcript skip marker must be on the line right before a fenced block`);
      continue;
    }
    const [, indent, fence, info] = open as unknown as [string, string, string, string];
    const body: string[] = [];
    let end = i + 1;
    const close = new RegExp(`^\\s*${fence[0] === "`" ? "`" : "~"}{${fence.length},}\\s*$`);
    while (end < lines.length && !close.test(lines[end]!)) body.push(stripIndent(lines[end++]!, indent.length));
    const marker = SKIP.exec((lines[i - 1] ?? "").trim());
    if (info === "console") {
      const block: Block = { line: i + 1, commands: parseCommands(body, i + 2) };
      if (marker) {
        const reason = marker[1]!.trim();
        if (reason === "") problems.push(`${i}: a transcript skip marker needs a reason: <!-- transcript: skip: REASON -->`);
        block.skip = reason;
      }
      if (block.commands.length === 0) problems.push(`${i + 1}: a console block without a \`$ \` command`);
      else if (block.commands[0]!.line !== i + 2) problems.push(`${i + 2}: a console block must start with a \`$ \` command`);
      blocks.push(block);
    } else {
      if (marker) problems.push(`${i}: a transcript skip marker before a block that is not \`console\``);
      body.forEach((text, k) => {
        if (PROMPT.test(text)) problems.push(`${i + 2 + k}: a \`$ \` command in a \`${info || "plain"}\` block; make the block \`console\` (a transcript) or drop the prompt`);
      });
    }
    i = end;
  }
  return { blocks, problems };
}

function stripIndent(line: string, width: number): string {
  let cut = 0;
  while (cut < width && line[cut] === " ") cut++;
  return line.slice(cut);
}

/** `firstLine` is the document line of body[0]. */
function parseCommands(body: string[], firstLine: number): Command[] {
  const commands: Command[] = [];
  let current: Command | undefined;
  for (let k = 0; k < body.length; k++) {
    const text = body[k]!;
    if (!PROMPT.test(text)) {
      current?.expected.push(text);
      continue;
    }
    const parts = [text.slice(2)];
    const line = firstLine + k;
    while (parts[parts.length - 1]!.endsWith("\\") && k + 1 < body.length) parts.push(body[++k]!);
    current = { line, text: parts.join("\n"), expected: [] };
    commands.push(current);
  }
  // Blank lines between a command's output and the next command are layout, not output.
  for (const command of commands) {
    while (command.expected.length > 0 && command.expected[command.expected.length - 1] === "") command.expected.pop();
  }
  return commands;
}

/**
 * Applied to both sides before comparing; each stands for something that differs on every run or
 * host, and nothing else.
 */
export const NORMALISATIONS: ReadonlyArray<{ pattern: RegExp; replacement: string; reason: string }> = [
  { pattern: /\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z\b/g, replacement: "<time>", reason: "timestamps are the time of the run" },
  { pattern: /\b[0-9a-f]{12}\b/g, replacement: "<id>", reason: "VM and workspace ids are random" },
  { pattern: /(?<![\d.])\d+\.\d+\.\d+-\d+-cloud-amd64\b/g, replacement: "<guest-kernel>", reason: "the guest kernel is Debian's current cloud kernel when the environment was built" },
  { pattern: /("duration_ms": )\d+/g, replacement: "$1<n>", reason: "run times vary" },
  { pattern: /\b\d+(?:\.\d+)? ?(?:ms|s)\b/g, replacement: "<duration>", reason: "run times vary" },
  { pattern: /\b\d+\.\d MiB\b/g, replacement: "<size>", reason: "an environment's size follows Debian's packages when it was built" },
  { pattern: /\b(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d \d\d:\d\d\b/g, replacement: "<mtime>", reason: "`ls -l` shows when the example's files were made" },
  { pattern: /\/tmp\/[^/\s)"']+/g, replacement: "/tmp/<tmp>", reason: "temporary directories get random names" },
];

export function normalise(line: string): string {
  let out = line;
  for (const { pattern, replacement } of NORMALISATIONS) out = out.replace(pattern, replacement);
  return out;
}

/** One line of the comparison: kept (`  `), only in the document (`- `), only in the output (`+ `), or elided by `...`. */
export type DiffLine = { kind: "same" | "expected" | "actual" | "elided"; text: string };

/**
 * Compares expected (from the document) with actual output after normalising both; `...` in expected
 * matches any number of lines. Returns undefined when they agree, else the fewest-edits alignment.
 */
export function compare(expected: string[], actual: string[]): DiffLine[] | undefined {
  const e = expected.map(normalise);
  const a = actual.map(normalise);
  const E = e.length;
  const A = a.length;
  // cost[i][j]: the cheapest alignment of e[i..] with a[j..]. An unmatched line costs EDIT; a line
  // elided by `...` costs 1, so among equally good alignments the one that matches most lines wins.
  const EDIT = 1e6;
  const cost: number[][] = Array.from({ length: E + 1 }, () => new Array<number>(A + 1).fill(0));
  for (let i = E; i >= 0; i--) {
    for (let j = A; j >= 0; j--) {
      if (i === E) cost[i]![j] = (A - j) * EDIT;
      else if (e[i] === "...") cost[i]![j] = Math.min(cost[i + 1]![j]!, j < A ? 1 + cost[i]![j + 1]! : Infinity);
      else {
        let best = EDIT + cost[i + 1]![j]!;
        if (j < A) best = Math.min(best, EDIT + cost[i]![j + 1]!, e[i] === a[j] ? cost[i + 1]![j + 1]! : Infinity);
        cost[i]![j] = best;
      }
    }
  }
  if (cost[0]![0]! < EDIT) return undefined;
  const diff: DiffLine[] = [];
  let i = 0;
  let j = 0;
  while (i < E || j < A) {
    const here = cost[i]![j]!;
    if (i < E && e[i] === "...") {
      if (j < A && 1 + cost[i]![j + 1]! === here) diff.push({ kind: "elided", text: actual[j++]! });
      else i++;
    } else if (i < E && j < A && e[i] === a[j] && cost[i + 1]![j + 1] === here) {
      diff.push({ kind: "same", text: actual[j]! });
      i++;
      j++;
    } else if (i < E && cost[i + 1]![j]! + EDIT === here) diff.push({ kind: "expected", text: expected[i++]! });
    else diff.push({ kind: "actual", text: actual[j++]! });
  }
  return diff;
}

/** A diff as text: `- ` the document, `+ ` the program, `  ` both, runs of elided lines folded. */
export function renderDiff(diff: DiffLine[]): string {
  const out: string[] = [];
  let elided = 0;
  const flush = (): void => {
    if (elided > 0) out.push(`  ... (${elided} line${elided === 1 ? "" : "s"})`);
    elided = 0;
  };
  for (const line of diff) {
    if (line.kind === "elided") {
      elided++;
      continue;
    }
    flush();
    out.push(`${line.kind === "same" ? " " : line.kind === "expected" ? "-" : "+"} ${line.text}`);
  }
  flush();
  return out.join("\n");
}

/**
 * What a developer needs to fix a mismatch: where the command is (document and line), the command,
 * its exit status, and the diff of the document against the program's output.
 */
export function describeMismatch(document: string, command: Command, exitStatus: number, diff: DiffLine[]): string {
  return `${document}:${command.line}: $ ${command.text}\n  (exit ${exitStatus}; - as the document shows it, + as the program printed it)\n${renderDiff(diff)}`;
}

/**
 * The bash script that runs `commands` in order and marks where each one's output ends. The marking
 * function hands the command's exit status on, so a document can show it with `echo $?`.
 */
export function sessionScript(commands: Command[], marker: string): string {
  const parts = ["exec 2>&1 </dev/null", `__transcript_mark() { local status=$?; printf '\\n${marker} %s\\n' "$status"; return "$status"; }`];
  for (const command of commands) parts.push(command.text, "__transcript_mark");
  return parts.join("\n") + "\n";
}

export interface CommandOutput {
  lines: string[];
  exitStatus: number;
}

/**
 * Splits a session's output at the markers; a command that never reached its marker (the session
 * was killed) is missing from the result.
 */
export function splitSession(output: string, marker: string): CommandOutput[] {
  const results: CommandOutput[] = [];
  const pattern = new RegExp(`\\n${marker} (\\d+)\\n`, "g");
  let start = 0;
  for (const match of output.matchAll(pattern)) {
    const text = output.slice(start, match.index);
    const lines = text === "" ? [] : text.split("\n");
    while (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
    results.push({ lines, exitStatus: Number(match[1]) });
    start = match.index + match[0].length;
  }
  return results;
}
