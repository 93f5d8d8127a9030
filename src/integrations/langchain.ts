/**
 * pyro tools for LangChain.js, built on @langchain/core's
 * DynamicStructuredTool: by default only vm_run (one command in a fresh
 * microVM); pass a profile or tool names for the workspace tools.
 */
import type * as MessagesModule from "@langchain/core/messages";
import type * as ToolsModule from "@langchain/core/tools";
import type { DynamicStructuredTool } from "@langchain/core/tools";
import type { Pyro } from "../sdk/pyro.js";
import type { ToolPolicy, ToolSpec } from "../tools/catalog.js";
import { checkArguments } from "../tools/vocabulary.js";
import { invokeTool, isToolError, loadPeer, policyOf, selectTools, type ToolErrorDocument, type ToolSelection } from "./common.js";

export type { ToolSelection } from "./common.js";

const core = await loadPeer<typeof ToolsModule>("@langchain/core/tools", "@langchain/core", "langchain");
const messages = await loadPeer<typeof MessagesModule>("@langchain/core/messages", "@langchain/core", "langchain");

interface CallConfig {
  signal?: AbortSignal;
  toolCall?: { id?: string };
}

/** The `{ type: "tool_call", id, args }` a chat model emits, as agent loops pass it to `invoke`. */
function asToolCall(arg: unknown): { id?: string; args: unknown } | undefined {
  return arg !== null && typeof arg === "object" && (arg as { type?: unknown }).type === "tool_call" ? (arg as { id?: string; args: unknown }) : undefined;
}

/**
 * One pyro tool. LangChain parses the arguments with the tool's schema
 * before running it and throws ToolInputParsingException when they do not
 * fit, leaving the agent loop to catch it and the model with a generic
 * message. So `call` (which `invoke` goes through) checks them first with the
 * same schema and answers a bad argument with pyro's error document as the
 * tool message, naming the argument; the schema the model is shown stays the
 * real one. (LangChain fires no callbacks for a call it cannot parse either.)
 */
class PyroTool extends core.DynamicStructuredTool {
  constructor(
    pyro: Pyro,
    private readonly spec: ToolSpec,
    policy: ToolPolicy,
  ) {
    super({
      name: spec.name,
      description: spec.description,
      schema: spec.input,
      // The content is the JSON text the model reads; the artifact keeps the same document as an object for the caller.
      responseFormat: "content_and_artifact",
      func: async (args: Record<string, unknown>, _runManager: unknown, config?: CallConfig) => {
        const result = await invokeTool(pyro, spec, args, { signal: config?.signal, policy });
        return [JSON.stringify(result), result];
      },
    });
  }

  override async call(arg: unknown, configArg?: CallConfig, tags?: string[]): Promise<unknown> {
    const toolCall = asToolCall(arg);
    const checked = checkArguments(this.spec, toolCall ? toolCall.args : arg);
    if ("error" in checked) return this.failed(checked, toolCall?.id ?? configArg?.toolCall?.id);
    const output: unknown = await super.call(arg as never, configArg as never, tags);
    // A pyro failure is marked as such for the model, as an invalid call is.
    if (output instanceof messages.ToolMessage && isToolError(output.artifact)) output.status = "error";
    return output;
  }

  /** What LangChain itself returns for a tool's output: a ToolMessage when called with a tool call, else the content. */
  private failed(document: ToolErrorDocument, toolCallId: string | undefined): unknown {
    const content = JSON.stringify(document);
    if (!toolCallId) return content;
    return new messages.ToolMessage({ status: "error", content, artifact: document, tool_call_id: toolCallId, name: this.name });
  }
}

/**
 * LangChain tools; each returns the tool's JSON result (or `{ error }`) as a
 * string for the ToolMessage. Called with a tool call, the ToolMessage also
 * carries the object as its `artifact`, with `status: "error"` for an error.
 */
export function pyroLangChainTools(pyro: Pyro, selection: ToolSelection = {}): DynamicStructuredTool[] {
  const policy = policyOf(selection);
  return selectTools(selection).map((spec) => new PyroTool(pyro, spec, policy) as unknown as DynamicStructuredTool);
}
