/**
 * pyro tools for LangChain.js, built with @langchain/core's `tool()`: by
 * default only vm_run (one command in a fresh microVM); pass a profile or
 * tool names for the workspace tools.
 */
import type * as ToolsModule from "@langchain/core/tools";
import type { DynamicStructuredTool } from "@langchain/core/tools";
import type { Pyro } from "../sdk/pyro.js";
import { invokeTool, loadPeer, policyOf, selectTools, type ToolSelection } from "./common.js";

export type { ToolSelection } from "./common.js";

const core = await loadPeer<typeof ToolsModule>("@langchain/core/tools", "@langchain/core", "langchain");

/** LangChain tools; each returns the tool's JSON result (or `{ error }`) as a string for the ToolMessage. */
export function pyroLangChainTools(pyro: Pyro, selection: ToolSelection = {}): DynamicStructuredTool[] {
  const policy = policyOf(selection);
  return selectTools(selection).map(
    (spec) =>
      core.tool(async (args: Record<string, unknown>, config: { signal?: AbortSignal } | undefined) => JSON.stringify(await invokeTool(pyro, spec, args, { signal: config?.signal, policy })), {
        name: spec.name,
        description: spec.description,
        schema: spec.input,
      }) as unknown as DynamicStructuredTool,
  );
}
