/**
 * pyro tools for the Vercel AI SDK (`generateText`, `streamText`): by default
 * only vm_run; pass a profile or tool names for the workspace tools.
 */
import type * as AiModule from "ai";
import type { Tool } from "ai";
import type { Pyro } from "../sdk/pyro.js";
import { invokeTool, loadPeer, policyOf, selectTools, type ToolSelection } from "./common.js";

export type { ToolSelection } from "./common.js";

const ai = await loadPeer<typeof AiModule>("ai", "ai", "ai-sdk");

/** A tools object for `generateText({ tools })`, keyed by tool name. */
export function pyroAiSdkTools(pyro: Pyro, selection: ToolSelection = {}): Record<string, Tool> {
  const policy = policyOf(selection);
  return Object.fromEntries(
    selectTools(selection).map((spec) => [
      spec.name,
      ai.tool({
        description: spec.description,
        inputSchema: spec.input,
        execute: (args: unknown, options: { abortSignal?: AbortSignal }) => invokeTool(pyro, spec, args, { signal: options.abortSignal, policy }),
      }) as Tool,
    ]),
  );
}
