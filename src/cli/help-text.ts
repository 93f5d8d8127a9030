import { ErrorCode } from "../errors.js";
import { SETTINGS } from "../settings.js";
import { EXIT_CODES } from "./output.js";

/** Terminal width the help texts wrap at. */
const WIDTH = 80;

/** The commands whose exit status is the guest command's own. */
export const PASS_THROUGH_COMMANDS = ["pyro run", "pyro vm exec", "pyro workspace exec", "pyro demo"] as const;

/** Markdown code spans read as plain words in a terminal. */
function plain(text: string): string {
  return text.replace(/`([^`]*)`/g, "$1");
}

/** The first sentence (one that ends before a capital letter): help shows the gist, the documents the whole row. */
function firstSentence(text: string): string {
  const match = /^.*?\.(?=\s+[A-Z]|$)/.exec(text);
  return match ? match[0] : text;
}

/** Words of `text` wrapped into lines of at most `width`, the first after `head`, the rest indented to `indent`. */
function wrap(head: string, text: string, indent: number, width = WIDTH): string[] {
  const lines: string[] = [];
  let line = head.length >= indent ? `${head}\n${" ".repeat(indent)}` : head.padEnd(indent);
  let lineStart = line.lastIndexOf("\n") + 1;
  let empty = true;
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (!empty && line.length - lineStart + 1 + word.length > width) {
      lines.push(line);
      line = " ".repeat(indent);
      lineStart = 0;
      empty = true;
    }
    line += empty ? word : ` ${word}`;
    empty = false;
  }
  lines.push(line);
  return lines.join("\n").split("\n");
}

/** The "Environment variables" section of `pyro --help`, from SETTINGS. */
export function environmentHelp(): string {
  const rows = Object.entries(SETTINGS).map(([name, setting]) => {
    const label = `  ${name}${"values" in setting ? `=${setting.values}` : ""}`;
    const text = `${firstSentence(plain(setting.effect))} Default: ${plain(String(setting.default))}.`;
    return wrap(label, text, 33).join("\n");
  });
  return ["Environment variables:", ...rows].join("\n");
}

/** Exit statuses as ranges: `64-67, 69-84, 130`. */
export function exitStatusRanges(): string {
  const statuses = [...new Set(Object.values(EXIT_CODES))].sort((a, b) => a - b);
  const ranges: string[] = [];
  for (let i = 0; i < statuses.length; ) {
    let j = i;
    while (j + 1 < statuses.length && statuses[j + 1] === statuses[j]! + 1) j++;
    ranges.push(i === j ? String(statuses[i]) : `${statuses[i]}-${statuses[j]}`);
    i = j + 1;
  }
  return ranges.join(", ");
}

/** The "Exit status" section of `pyro --help`, from EXIT_CODES. */
export function exitStatusHelp(): string {
  const commands = PASS_THROUGH_COMMANDS.map((c) => c.replace(/^pyro /, ""));
  return [
    "Exit status:",
    ...wrap(
      "",
      `${commands.slice(0, -1).join(", ")} and ${commands.at(-1)!} exit with the guest command's own status (124 when it timed out, 128+N when signal N ended it). doctor exits 1 when it found problems. A command line pyro cannot parse exits ${EXIT_CODES[ErrorCode.invalidArgument]}.`,
      2,
    ),
    "  pyro's own failures:",
    ...Object.entries(EXIT_CODES)
      .sort(([, a], [, b]) => a - b)
      .map(([code, exit]) => `    ${String(exit).padEnd(4)} ${code}`),
  ].join("\n");
}
