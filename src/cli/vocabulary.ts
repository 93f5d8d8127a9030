import type { Command } from "commander";
import { SURFACES } from "../tools/surfaces.js";
import type { Vocabulary } from "../vocabulary.js";

/** `workspace-id` → `workspaceId`: how commander names an argument's value, and the SDK the option. */
function camel(name: string): string {
  return name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** The flags and arguments of one command, by the SDK option name each carries. */
function wordsOf(command: Command): Map<string, string> {
  const words = new Map<string, string>();
  for (const option of command.options) {
    if (option.long) words.set(option.attributeName(), option.long);
  }
  for (const argument of command.registeredArguments) {
    words.set(camel(argument.name()), argument.variadic ? "the command after --" : `<${argument.name()}>`);
  }
  return words;
}

function commands(root: Command): Command[] {
  return [root, ...root.commands.flatMap(commands)];
}

/** SDK options whose flag is not simply the option's name: the flag takes one value, repeated. */
const SINGULAR: Record<string, string> = { allowHosts: "allowHost", labels: "label", clearLabels: "clearLabel", allowedRoots: "allowRoot" };

/** SDK fields inside a list that the CLI gives as flags of their own: a secret is `--secret NAME=VALUE` or `--secret-file NAME=PATH`. */
const NESTED: Record<string, string[]> = {
  secrets: ["secret", "secretFile"],
  "secrets.name": ["secret", "secretFile"],
  "secrets.value": ["secret"],
  "secrets.filePath": ["secretFile"],
};

/**
 * The CLI's words, read from the commands themselves: an option is the flag
 * of the command that ran (`--ttl-seconds`), or of any command when that one
 * has no such flag; an operation is the command that does it (`pyro vm list`).
 */
export function cliVocabulary(program: Command, active?: Command): Vocabulary {
  const own = active ? wordsOf(active) : new Map<string, string>();
  const everywhere = new Map<string, string>();
  for (const command of commands(program)) {
    for (const [name, word] of wordsOf(command)) if (!everywhere.has(name) && word.startsWith("--")) everywhere.set(name, word);
  }
  const lookup = (name: string) => own.get(name) ?? everywhere.get(name);
  return {
    surface: "cli",
    field: (name) => {
      const nested = NESTED[name]?.map(lookup);
      if (nested?.every((flag) => flag !== undefined)) return nested.length === 1 ? nested[0] : nested.map((flag) => `\`${flag}\``).join(" or ");
      return lookup(name) ?? (SINGULAR[name] ? lookup(SINGULAR[name]) : undefined);
    },
    operation: (method) => {
      const cli = SURFACES[method]?.cli;
      return cli ? `\`pyro ${cli}\`` : undefined;
    },
  };
}
