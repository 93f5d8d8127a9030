/**
 * pyro tools for the OpenAI Responses API: function tool definitions with
 * strict JSON Schema (generated from the same schemas as the MCP tools) and a
 * dispatcher that turns a response's `function_call` items into
 * `function_call_output` items by running them in microVMs.
 *
 * Needs no package of its own: the items are plain objects, so it works with
 * the `openai` client (or any HTTP client) you already use.
 */
import { z } from "zod";
import type { Pyro } from "../sdk/pyro.js";
import type { ToolSpec } from "../tools/catalog.js";
import { invokeTool, policyOf, selectTools, type ToolSelection } from "./common.js";

export type { ToolSelection } from "./common.js";

export interface OpenAIFunctionTool {
  type: "function";
  name: string;
  description: string;
  parameters: Record<string, unknown>;
  strict: true;
}

export interface FunctionCallItem {
  type: "function_call";
  call_id: string;
  name: string;
  arguments: string;
}

export interface FunctionCallOutputItem {
  type: "function_call_output";
  call_id: string;
  output: string;
}

/** Keywords strict mode does not accept; the dispatcher still enforces them with the full schema. */
const UNSUPPORTED = new Set(["minLength", "maxLength", "$schema", "propertyNames"]);

function prune(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(prune);
  if (node && typeof node === "object") {
    return Object.fromEntries(
      Object.entries(node)
        .filter(([key]) => !UNSUPPORTED.has(key))
        .map(([key, value]) => [key, prune(value)]),
    );
  }
  return node;
}

/**
 * Strict mode wants every property required and no open-ended objects: an
 * optional argument becomes "this type or null", and free-form maps (labels)
 * are left out.
 */
function strictParameters(tool: ToolSpec): Record<string, unknown> {
  const shape: Record<string, z.ZodType> = {};
  const fields: Record<string, z.ZodType> = tool.input.shape;
  for (const [key, field] of Object.entries(fields)) {
    const inner: z.ZodType = field instanceof z.ZodOptional ? (field.unwrap() as z.ZodType) : field;
    if (inner instanceof z.ZodRecord) continue;
    shape[key] = field instanceof z.ZodOptional ? inner.nullable() : inner;
  }
  return prune(z.toJSONSchema(z.strictObject(shape), { target: "draft-7" })) as Record<string, unknown>;
}

/** Function tool definitions for `responses.create({ tools })`. Default: only vm_run. */
export function openaiTools(selection: ToolSelection = {}): OpenAIFunctionTool[] {
  return selectTools(selection).map((tool) => ({ type: "function", name: tool.name, description: tool.description, parameters: strictParameters(tool), strict: true }));
}

function withoutNulls(value: unknown): unknown {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== null));
  }
  return value;
}

/**
 * Runs every `function_call` item among a response's output items (others
 * are ignored) and returns one `function_call_output` per call, in order.
 * Unknown tools, unparsable arguments and pyro's failures become outputs
 * carrying `{ error }`, so the model can read them and try again.
 */
export async function runFunctionCalls(
  pyro: Pyro,
  output: readonly { type: string }[],
  options: ToolSelection & { signal?: AbortSignal } = {},
): Promise<FunctionCallOutputItem[]> {
  const allowed = new Map(selectTools(options).map((tool) => [tool.name, tool]));
  const policy = policyOf(options);
  const results: FunctionCallOutputItem[] = [];
  for (const item of output) {
    if (item.type !== "function_call") continue;
    const call = item as FunctionCallItem;
    const tool = allowed.get(call.name);
    let result: unknown;
    if (!tool) {
      result = { error: { code: "invalid_argument", message: `unknown tool "${call.name}"`, hint: `available: ${[...allowed.keys()].join(", ")}` } };
    } else {
      let args: unknown;
      try {
        args = JSON.parse(call.arguments || "{}");
      } catch {
        args = undefined;
      }
      result =
        args === undefined
          ? { error: { code: "invalid_argument", message: "arguments are not valid JSON", hint: "send the arguments as a JSON object" } }
          : await invokeTool(pyro, tool, withoutNulls(args), { signal: options.signal, policy });
    }
    results.push({ type: "function_call_output", call_id: call.call_id, output: JSON.stringify(result) });
  }
  return results;
}
