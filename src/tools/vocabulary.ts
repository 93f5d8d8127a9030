import { z } from "zod";
import { ErrorCode, PyroError, toPyroError } from "../errors.js";
import { snakeKey } from "../util/case.js";
import { renderError, type RenderedError, type Vocabulary } from "../vocabulary.js";
import { SURFACES } from "./surfaces.js";
import { TOOLS, type ToolSpec } from "./catalog.js";

/** Every argument name a tool takes, nested ones included (`secrets` → `file_path`). */
function argumentNames(): Set<string> {
  const names = new Set<string>();
  const walk = (schema: unknown) => {
    if (schema === null || typeof schema !== "object") return;
    const node = schema as { properties?: Record<string, unknown>; items?: unknown; anyOf?: unknown[]; additionalProperties?: unknown };
    for (const [key, value] of Object.entries(node.properties ?? {})) {
      names.add(key);
      walk(value);
    }
    walk(node.items);
    walk(node.additionalProperties);
    node.anyOf?.forEach(walk);
  };
  for (const tool of TOOLS) walk(z.toJSONSchema(tool.input, { io: "input" }));
  return names;
}

let argumentsKnown: Set<string> | undefined;

/**
 * Options a model never sets: they are the operator's, made when the server
 * starts. An error that names one says whose decision it is.
 */
const OPERATOR_OPTIONS: Record<string, string> = {
  allowHostCompat: "--allow-host-compat (the operator's setting)",
  keepWarm: "--keep-warm (the operator's setting)",
  allowedRoots: "--allow-root (the operator's setting)",
};

/** Tool arguments are snake_case; an operation is its tool, or, for host administration, the pyro command an operator runs. */
export const MCP_VOCABULARY: Vocabulary = {
  surface: "mcp",
  field: (name) => {
    argumentsKnown ??= argumentNames();
    const snake = snakeKey(name);
    if (argumentsKnown.has(snake)) return snake;
    return OPERATOR_OPTIONS[name];
  },
  operation: (method) => {
    const surface = SURFACES[method];
    if (!surface) return undefined;
    if (surface.mcp) return surface.mcp;
    return surface.cli ? `\`pyro ${surface.cli}\` (run by the operator on the host)` : undefined;
  },
};

/** What a model reads instead of a result when a call fails; the same on every adapter and in MCP. */
export interface ToolErrorDocument {
  error: RenderedError;
}

/** What a model reads when a call fails: `{error: {code, message, hint}}` in the tools' words. */
export function toolErrorDocument(error: unknown): ToolErrorDocument {
  return { error: renderError(toPyroError(error), MCP_VOCABULARY) };
}

interface Issue {
  code: string;
  path: PropertyKey[];
  message: string;
  expected?: string;
  minimum?: number | bigint;
  maximum?: number | bigint;
  inclusive?: boolean;
  origin?: string;
  keys?: string[];
  values?: unknown[];
  input?: unknown;
}

/** How a schema's expected type reads in a message. */
const EXPECTED: Record<string, string> = { array: "a list", object: "an object", int: "a whole number", integer: "a whole number", number: "a number", string: "a string", boolean: "true or false" };

function described(value: unknown): string {
  if (value === undefined) return "nothing";
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "an object";
  const text = JSON.stringify(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** One schema issue as pyro says it: what is accepted, and what came. */
function issueText(issue: Issue, args: unknown): string {
  const given = issue.path.reduce<unknown>((value, key) => (value !== null && typeof value === "object" ? (value as Record<PropertyKey, unknown>)[key] : undefined), args);
  switch (issue.code) {
    case "invalid_type":
      return given === undefined ? "is required" : `must be ${EXPECTED[issue.expected ?? ""] ?? `a ${issue.expected}`}, got ${described(given)}`;
    case "invalid_value":
      return `must be one of ${(issue.values ?? []).map((v) => JSON.stringify(v)).join(", ")}, got ${described(given)}`;
    case "too_small":
      if (issue.origin === "string") return issue.minimum === 1 ? "must not be empty" : `must be at least ${issue.minimum} characters`;
      if (issue.origin === "array") return `must have at least ${issue.minimum} entries`;
      return `must be ${issue.inclusive === false ? "more than" : "at least"} ${issue.minimum}, got ${described(given)}`;
    case "too_big":
      if (issue.origin === "string") return `must be at most ${issue.maximum} characters`;
      if (issue.origin === "array") return `must have at most ${issue.maximum} entries`;
      return `must be ${issue.inclusive === false ? "less than" : "at most"} ${issue.maximum}, got ${described(given)}`;
    case "unrecognized_keys":
      return `unknown argument${issue.keys && issue.keys.length > 1 ? "s" : ""} ${(issue.keys ?? []).join(", ")}`;
    default:
      return `${issue.message.replace(/^Invalid input: /, "")}${given === undefined ? "" : `, got ${described(given)}`}`;
  }
}

interface ArgumentSchema {
  type?: string;
  description?: string;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  enum?: unknown[];
  pattern?: string;
}

/** What an argument takes, in a few words, from its JSON schema: the range or form the model is told in tools/list. */
function accepts(schema: ArgumentSchema): string | undefined {
  if (schema.enum) return `one of ${schema.enum.map((v) => JSON.stringify(v)).join(", ")}`;
  if (schema.type === "integer" || schema.type === "number") {
    const kind = schema.type === "integer" ? "a whole number" : "a number";
    if (schema.minimum !== undefined && schema.maximum !== undefined) return `${kind} from ${schema.minimum} to ${schema.maximum}`;
    if (schema.minimum !== undefined) return `${kind} of at least ${schema.minimum}`;
    if (schema.maximum !== undefined) return `${kind} of at most ${schema.maximum}`;
    return kind;
  }
  if (schema.type === "string") {
    if (schema.pattern) return `text matching ${schema.pattern}`;
    if (schema.maxLength !== undefined) return `text of ${schema.minLength ? `${schema.minLength} to ` : "at most "}${schema.maxLength} characters`;
    return "text";
  }
  if (schema.type === "boolean") return "true or false";
  if (schema.type === "array") return "a list";
  if (schema.type === "object") return "an object";
  return undefined;
}

/** The hint for a bad argument: what it takes (range, form) and what it is for, as the tool's schema says. */
function argumentHint(tool: ToolSpec, name: string | undefined): string | undefined {
  if (name === undefined) return undefined;
  const schema = z.toJSONSchema(tool.input, { io: "input" }) as { properties?: Record<string, ArgumentSchema> };
  const argument = schema.properties?.[name];
  if (!argument) return undefined;
  const form = accepts(argument);
  return [form && `\`${name}\` takes ${form}`, argument.description].filter(Boolean).join("; ") || undefined;
}

/**
 * Arguments that do not match a tool's input schema, as pyro's own
 * invalid_argument: the message names the argument as the schema does
 * (`timeout_seconds: must be at least 1, got 0`), the hint says what it takes.
 */
export function schemaFailure(tool: ToolSpec, issues: readonly Issue[], args: unknown): PyroError {
  const first = issues[0];
  const field = first && first.path.length ? first.path.map(String).join(".") : "arguments";
  const message = issues
    .slice(0, 3)
    .map((issue) => `${issue.path.length ? issue.path.map(String).join(".") : "arguments"}: ${issueText(issue, args)}`)
    .join("; ");
  const unknown = first?.code === "unrecognized_keys";
  const hint =
    (unknown ? undefined : argumentHint(tool, first?.path[0] === undefined ? undefined : String(first.path[0]))) ??
    `${tool.name} takes ${Object.keys((tool.input).shape).join(", ")}; its input schema (tools/list) says what each accepts`;
  return new PyroError(ErrorCode.invalidArgument, message, { hint, details: { field, tool: tool.name } });
}

/**
 * Checks a model's arguments against the tool's full schema. A failure is
 * pyro's invalid_argument naming each bad argument by its path in the call
 * (snake_case, as the schema shows it), with what it takes as the hint, so
 * the model can correct exactly that argument.
 */
export function checkArguments(tool: ToolSpec, args: unknown): { data: Record<string, unknown> } | ToolErrorDocument {
  const parsed = tool.input.safeParse(args ?? {});
  if (parsed.success) return { data: parsed.data };
  return toolErrorDocument(schemaFailure(tool, parsed.error.issues, args ?? {}));
}
