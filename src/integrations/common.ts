import type { Pyro } from "../sdk/pyro.js";
import { callTool } from "../tools/call.js";
import type { ToolErrorDocument } from "../tools/vocabulary.js";
import { defaultToolPolicy, findTool, toolsFor, type ProfileName, type ToolContext, type ToolPolicy, type ToolSpec } from "../tools/catalog.js";

export interface ToolSelection {
  /** A profile of tools (default `vm-run`: only vm_run, the one-shot tool most agents need). */
  profile?: ProfileName;
  /** Or exactly these tools by name, e.g. ["vm_run", "workspace_create", "workspace_exec"]. */
  tools?: readonly string[];
  /**
   * Your decisions as the operator, which no model argument can change:
   * `allowedRoots`, the host directories whose files a model may name as
   * seed_path or source_path (default: the current directory, never `/`);
   * `allowHosts`, the host names every guest's network is limited to (a
   * model may narrow them; default any public host); `allowHostCompat`, run
   * on the host without isolation when no guest can boot (default false).
   */
  policy?: { allowedRoots?: readonly string[]; allowHosts?: readonly string[]; allowHostCompat?: boolean };
}

/** The policy an adapter applies to every call, resolved once when its tools are made. */
export function policyOf(selection: ToolSelection): ToolPolicy {
  return defaultToolPolicy(selection.policy);
}

export function selectTools(selection: ToolSelection = {}): ToolSpec[] {
  if (selection.tools) {
    return selection.tools.map((name) => {
      const tool = findTool(name);
      if (!tool) throw new Error(`pyro has no tool named "${name}"`);
      return tool;
    });
  }
  return toolsFor(selection.profile ?? "vm-run");
}

export type { ToolErrorDocument };

/**
 * Checks the arguments with the tool's schema, runs it and checks its result
 * (callTool, as the MCP server does). Never throws for pyro's own failures or
 * bad arguments: a model acts better on an error it can read, so those come
 * back as `{ error: { code, message, hint } }`.
 */
export async function invokeTool(pyro: Pyro, tool: ToolSpec, args: unknown, context: ToolContext = {}): Promise<Record<string, unknown>> {
  const outcome = await callTool(pyro, tool, args, context);
  return "error" in outcome ? { ...outcome } : outcome.result;
}

/** Whether a tool's answer is the error document rather than a result. */
export function isToolError(value: unknown): value is ToolErrorDocument {
  return value !== null && typeof value === "object" && "error" in value && Object.keys(value).length === 1;
}

/** Imports an optional peer dependency, or fails with the package to install. */
export async function loadPeer<T>(specifier: string, packageName: string, subpath: string): Promise<T> {
  try {
    return (await import(specifier)) as T;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ERR_MODULE_NOT_FOUND" || (error as NodeJS.ErrnoException).code === "MODULE_NOT_FOUND") {
      throw new Error(`pyro-mcp/${subpath} needs the optional package ${packageName}; install it with: npm install ${packageName}`, { cause: error });
    }
    throw error;
  }
}
