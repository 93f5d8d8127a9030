/**
 * pyro tools for the Vercel AI SDK (`generateText`, `streamText`): by default
 * only vm_run; pass a profile or tool names for the workspace tools.
 */
import type * as AiModule from "ai";
import type { Schema, Tool } from "ai";
import type { Pyro } from "../sdk/pyro.js";
import type { ToolSpec } from "../tools/catalog.js";
import { invokeTool, loadPeer, policyOf, selectTools, type ToolSelection } from "./common.js";

export type { ToolSelection } from "./common.js";

const ai = await loadPeer<typeof AiModule>("ai", "ai", "ai-sdk");

/**
 * The tool's schema as the AI SDK would show it to the model, with the
 * checking left to pyro: generateText rejects arguments that fail the
 * schema's validation itself and hands the model its own validation text,
 * before execute runs. Passing them through lets invokeTool check them with
 * the same zod schema and answer with pyro's error document, as every other
 * surface does.
 */
function shownAsIs(spec: ToolSpec): Schema<unknown> {
  const shown = ai.zodSchema(spec.input);
  return ai.jsonSchema(() => shown.jsonSchema, { validate: (value) => ({ success: true, value }) });
}

/** A tools object for `generateText({ tools })`, keyed by tool name. */
export function pyroAiSdkTools(pyro: Pyro, selection: ToolSelection = {}): Record<string, Tool> {
  const policy = policyOf(selection);
  return Object.fromEntries(
    selectTools(selection).map((spec) => [
      spec.name,
      ai.tool({
        description: spec.description,
        inputSchema: shownAsIs(spec),
        execute: (args: unknown, options: { abortSignal?: AbortSignal }) => invokeTool(pyro, spec, args, { signal: options.abortSignal, policy }),
      }) as Tool,
    ]),
  );
}
