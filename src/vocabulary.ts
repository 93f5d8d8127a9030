import type { ErrorCodeValue, PyroError } from "./errors.js";
import { SURFACES } from "./tools/surfaces.js";

/**
 * pyro's messages and hints are written once, in the SDK's words: options in
 * camelCase (`ttlSeconds`) and operations as SDK methods (`listVms()`). Each
 * surface renders them in the words its caller typed: the CLI names
 * `--ttl-seconds` and `pyro vm list`, MCP and the framework adapters name
 * `ttl_seconds` and `workspace_list`.
 */
export interface Vocabulary {
  surface: "sdk" | "cli" | "mcp";
  /** How this surface names an SDK option, or undefined when it has none by that name. */
  field(sdkName: string): string | undefined;
  /** How this surface names an SDK operation (a Pyro method, without parentheses). */
  operation(method: string): string | undefined;
}

/** The SDK's own words: what an error says is what its caller wrote. */
export const SDK_VOCABULARY: Vocabulary = {
  surface: "sdk",
  field: (name) => name,
  operation: (method) => (method in SURFACES ? `${method}()` : undefined),
};

const OPERATION = /\b([a-z][A-Za-z]*)\(\)/g;
const BACKTICKED = /`([a-z][A-Za-z0-9]*(?:\[\d+\])*(?:\.[a-z][A-Za-z0-9]*(?:\[\d+\])*)*)`/g;
const CAMEL = /\b[a-z][a-z0-9]*(?:[A-Z][a-z0-9]*)+\b/g;

/**
 * A field as a surface names it. A path into a list (`secrets[0].filePath`)
 * is first looked up whole without its indices, for a surface that has one
 * word for it (the CLI's `--secret-file`); otherwise each part is named in the
 * surface's words and the indices kept (`secrets[0].file_path`).
 */
function fieldOf(name: string, vocabulary: Vocabulary): string | undefined {
  const whole = vocabulary.field(name);
  if (whole !== undefined) return whole;
  const plain = name.replace(/\[\d+\]/g, "");
  if (plain !== name) {
    const word = vocabulary.field(plain);
    if (word !== undefined) return word;
  }
  if (plain === name && !name.includes(".")) return undefined;
  const parts = name.split(".").map((part) => {
    const [, base = part, indices = ""] = /^(.*?)((?:\[\d+\])*)$/.exec(part) ?? [];
    return `${vocabulary.field(base) ?? base}${indices}`;
  });
  return parts.join(".");
}

/** One stretch of text outside double quotes: quoted stretches are the caller's own values and stay as they are. */
function renderWords(text: string, vocabulary: Vocabulary): string {
  return text
    .replace(OPERATION, (whole, method: string) => vocabulary.operation(method) ?? whole)
    .replace(BACKTICKED, (whole, name: string) => {
      const rendered = fieldOf(name, vocabulary);
      return rendered === undefined ? whole : rendered.startsWith("`") ? rendered : `\`${rendered}\``;
    })
    .replace(CAMEL, (word) => vocabulary.field(word) ?? word);
}

/** Renders a message or hint written in the SDK's words for one surface. */
export function renderText(text: string, vocabulary: Vocabulary): string {
  if (vocabulary.surface === "sdk") return text;
  // Split on double-quoted stretches ("..." with escapes), rendering only what lies between them.
  return text
    .split(/("(?:[^"\\]|\\.)*")/)
    .map((part, index) => (index % 2 === 1 ? part : renderWords(part, vocabulary)))
    .join("");
}

export interface RenderedError {
  code: ErrorCodeValue;
  message: string;
  hint: string;
}

/**
 * An error in one surface's words. The field an InvalidArgumentError names
 * leads its message (`ttlSeconds: must be ...`) and is rendered even when the
 * surface calls it something else entirely (`--ttl-seconds: ...`).
 */
export function renderError(error: PyroError, vocabulary: Vocabulary): RenderedError {
  const field = typeof error.details?.field === "string" ? error.details.field : undefined;
  let message = error.message;
  let lead = "";
  if (field !== undefined && message.startsWith(`${field}: `)) {
    lead = `${fieldOf(field, vocabulary) ?? field}: `;
    message = message.slice(field.length + 2);
  }
  return { code: error.code, message: lead + renderText(message, vocabulary), hint: renderText(error.hint, vocabulary) };
}
