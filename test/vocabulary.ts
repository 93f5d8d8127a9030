import { TOOLS } from "../src/tools/catalog.js";
import { SURFACES } from "../src/tools/surfaces.js";
import type { Vocabulary } from "../src/vocabulary.js";

/** Every tool argument name (snake_case). */
function toolArguments(): string[] {
  const names = new Set<string>();
  for (const tool of TOOLS) for (const key of Object.keys(tool.input.shape)) names.add(key);
  return [...names];
}
const camel = (snake: string) => snake.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
const ARGUMENTS = toolArguments();
/** SDK option names that differ from their tool argument (the ones of more than one word). */
const SDK_FIELDS = ARGUMENTS.map(camel).filter((name) => /[A-Z]/.test(name));
export const TOOL_NAMES = TOOLS.map((tool) => tool.name);
const CLI_COMMANDS = Object.values(SURFACES).flatMap((s) => (s.cli ? [`pyro ${s.cli}`] : []));

/**
 * Words of another surface that a message or hint in `surface`'s words must
 * not hold: SDK option names and `method()`s outside the SDK, tool names and
 * snake_case arguments outside MCP, flags outside the CLI.
 */
export function foreignWords(text: string, surface: Vocabulary["surface"]): string[] {
  const found: string[] = [];
  // The caller's own values, quoted, are not pyro's words.
  const unquoted = text.replace(/"(?:[^"\\]|\\.)*"/g, '""');
  const words = new Set(unquoted.match(/[A-Za-z_][A-Za-z0-9_]*/g) ?? []);
  if (surface !== "sdk") {
    for (const field of SDK_FIELDS) if (words.has(field)) found.push(field);
    for (const match of text.matchAll(/\b[a-z][A-Za-z]*\(\)/g)) found.push(match[0]);
  }
  if (surface !== "mcp") {
    for (const name of TOOL_NAMES) if (words.has(name)) found.push(name);
    for (const arg of ARGUMENTS) if (arg.includes("_") && words.has(arg)) found.push(arg);
  }
  if (surface !== "cli") {
    for (const match of unquoted.matchAll(/(?<![\w'])--[a-z][a-z-]+/g)) {
      // Over MCP, an operator's setting is named as the flag the operator types.
      if (surface === "mcp" && text.includes(`${match[0]} (the operator's setting)`)) continue;
      found.push(match[0]);
    }
  }
  if (surface === "sdk") for (const command of CLI_COMMANDS) if (text.includes(`\`${command}\``)) found.push(command);
  return found;
}
