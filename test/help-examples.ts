import type { Command } from "commander";

/** One "Example:" section of a command's help: shell lines meant to run in order, in one shell. */
export interface HelpExample {
  /** The command whose help shows it, e.g. `pyro workspace shell`. */
  command: string;
  /** The parenthesised note of the heading: what the example expects to find (`./repo is a project ...`). */
  note: string;
  lines: string[];
}

/** The status an example line documents with a trailing `# exits N`; 0 for every other line. */
export function documentedStatus(line: string): number {
  const match = /#\s*exits (\d+)\b/.exec(line);
  return match ? Number(match[1]) : 0;
}

/**
 * An example as one bash script: lines run in order and stop at the first
 * that fails, except that a line documented with `# exits N` must exit N.
 */
export function exampleScript(example: HelpExample): string {
  const lines = ["set -euo pipefail"];
  for (const line of example.lines) {
    const expected = documentedStatus(line);
    if (expected === 0) lines.push(line);
    else lines.push("set +e", line, "status=$?", "set -e", `[ "$status" -eq ${expected} ] || { echo "expected exit ${expected}, got $status: ${line.replace(/["$`\\]/g, "\\$&")}" >&2; exit 1; }`);
  }
  return lines.join("\n");
}

/** The full help a command prints, the texts added after it included. */
export function helpText(command: Command): string {
  let text = "";
  command.configureOutput({ writeOut: (s) => (text += s), writeErr: (s) => (text += s) });
  command.outputHelp();
  return text;
}

/** Every command of the tree, with its path (`pyro`, `pyro workspace`, ...). */
export function commandsOf(program: Command): { path: string; command: Command }[] {
  const out: { path: string; command: Command }[] = [];
  const walk = (command: Command, path: string) => {
    out.push({ path, command });
    for (const sub of command.commands) walk(sub, `${path} ${sub.name()}`);
  };
  walk(program, program.name());
  return out;
}

/**
 * The examples of every help text: a line `Example:` or `Examples:` (with an
 * optional parenthesised note before the colon), then the lines indented by
 * two spaces up to the next blank line.
 */
export function helpExamples(program: Command): HelpExample[] {
  const examples: HelpExample[] = [];
  for (const { path, command } of commandsOf(program)) {
    const lines = helpText(command).split("\n");
    for (let i = 0; i < lines.length; i++) {
      const heading = /^Examples?(?: \((.*)\))?:$/.exec(lines[i]!);
      if (!heading) continue;
      const block: string[] = [];
      for (i++; i < lines.length && lines[i]!.startsWith("  "); i++) block.push(lines[i]!.slice(2));
      examples.push({ command: path, note: heading[1] ?? "", lines: block });
    }
  }
  return examples;
}
