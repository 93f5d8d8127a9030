import { ErrorCode, PyroError } from "../errors.js";
import type { Pyro } from "../sdk/pyro.js";
import type { ToolContext, ToolSpec } from "./catalog.js";
import { checkArguments, toolErrorDocument, type ToolErrorDocument } from "./vocabulary.js";

/** What one tool call comes to: the tool's result, or the error a model reads instead. */
export type ToolOutcome = { result: Record<string, unknown> } | ToolErrorDocument;

/**
 * Runs one tool for a model, the same way on MCP and in every adapter:
 * arguments are checked against the tool's input schema, the tool runs, and
 * its result is checked against the output schema a client validates it
 * with. Never throws: a bad argument, a pyro failure, or a result that breaks
 * the schema (pyro's bug, said as `internal`) is the error document.
 */
export async function callTool(pyro: Pyro, tool: ToolSpec, args: unknown, context: ToolContext = {}): Promise<ToolOutcome> {
  const checked = checkArguments(tool, args);
  if ("error" in checked) return checked;
  let result: Record<string, unknown>;
  try {
    result = await tool.run(pyro, checked.data, context);
  } catch (error) {
    return toolErrorDocument(error);
  }
  const valid = tool.output.safeParse(result);
  if (!valid.success) {
    return toolErrorDocument(new PyroError(ErrorCode.internal, `${tool.name} made a result that does not match its output schema: ${valid.error.message}`));
  }
  return { result };
}
