/**
 * Generates docs/public-contract.md from the code: the CLI (walked from the
 * commander program), the SDK (the Pyro class and the exported types, read
 * with the TypeScript compiler), the MCP tools (their zod schemas as JSON
 * Schema), defaults, limits, environment variables, error codes and exit
 * codes. Nothing in the output is typed by hand except the short prose.
 * With --write it also fills the generated tables of README.md and docs/
 * (scripts/doc-tables.ts), and --check checks them.
 *
 *   node --import tsx scripts/contract.ts            print the markdown
 *   node --import tsx scripts/contract.ts --write    write docs/public-contract.md
 *   node --import tsx scripts/contract.ts --check    exit 1 when the file is out of date
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { Command, Option } from "commander";
import ts from "typescript";
import { z } from "zod";
import { newContext } from "../src/cli/context.js";
import { buildProgram } from "../src/cli/main.js";
import { EXIT_CODES } from "../src/cli/output.js";
import { Defaults, Limits } from "../src/config.js";
import { CATALOG } from "../src/environments/catalog.js";
import { ErrorCode } from "../src/errors.js";
import { Pyro } from "../src/sdk/pyro.js";
import { DEFAULT_PROFILE, PROFILES, TOOLS, toolsFor, type ToolSpec } from "../src/tools/catalog.js";
import { SURFACES } from "../src/tools/surfaces.js";
import { snakeKey } from "../src/util/case.js";
import { SETTINGS } from "../src/settings.js";
import { defaultCell, regionFiles, scanEnvReads, settingLabel, settingsDrift, table } from "./doc-tables.js";

export const ROOT = resolve(import.meta.dirname, "..");
export const CONTRACT_PATH = join(ROOT, "docs", "public-contract.md");

// ---- markdown helpers ----

function code(text: string): string {
  const fence = text.includes("`") ? "``" : "`";
  return `${fence}${text.includes("`") ? ` ${text} ` : text}${fence}`;
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, " ").trim();
}

/** The unit a field name carries, by its suffix (`ttl_seconds`, `mem_mib`, `duration_ms`, `size_bytes`, `created_at`). */
function unitOf(name: string): string {
  const snake = snakeKey(name);
  if (/_seconds$/.test(snake)) return "seconds";
  if (/_mib$/.test(snake)) return "MiB";
  if (/_ms$/.test(snake)) return "milliseconds";
  if (/(^|_)bytes$/.test(snake)) return "bytes";
  if (/_at$/.test(snake)) return "ISO 8601 time";
  if (/_khz$/.test(snake)) return "kHz";
  return "";
}

function show(value: unknown): string {
  return typeof value === "string" ? value : JSON.stringify(value);
}

// ---- the SDK, read with the TypeScript compiler ----

interface Field {
  name: string;
  type: string;
  optional: boolean;
  doc: string;
}

interface TypeDoc {
  name: string;
  file: string;
  /** Set for aliases of non-object types (unions of literals and the like). */
  alias?: string;
  fields: Field[];
}

interface MethodDoc {
  name: string;
  signature: string;
  doc: string;
  returns: ts.Type;
}

/** A class whose instances the SDK hands out (`Vm`, `Workspace`). */
interface HandleDoc {
  name: string;
  doc: string;
  methods: MethodDoc[];
  disposable: boolean;
}

interface SdkDoc {
  constructorSignature: string;
  properties: Field[];
  methods: MethodDoc[];
  handles: HandleDoc[];
  types: TypeDoc[];
  errorDocs: Map<string, string>;
  checker: ts.TypeChecker;
}

const FORMAT = ts.TypeFormatFlags.NoTruncation | ts.TypeFormatFlags.UseAliasDefinedOutsideCurrentScope;

function docOf(symbol: ts.Symbol, checker: ts.TypeChecker): string {
  return oneLine(ts.displayPartsToString(symbol.getDocumentationComment(checker)));
}

function fieldsOf(type: ts.Type, checker: ts.TypeChecker): Field[] {
  return checker.getPropertiesOfType(type).map((property) => {
    const declaration = property.valueDeclaration ?? property.declarations?.[0];
    const typeNode = declaration && (ts.isPropertySignature(declaration) || ts.isPropertyDeclaration(declaration)) ? declaration.type : undefined;
    const text = typeNode ? typeNode.getText() : checker.typeToString(checker.getTypeOfSymbol(property), undefined, FORMAT);
    return {
      name: property.name,
      type: oneLine(text),
      optional: (property.flags & ts.SymbolFlags.Optional) !== 0,
      doc: docOf(property, checker),
    };
  });
}

function isInSrc(node: ts.Node): boolean {
  return !relative(join(ROOT, "src"), node.getSourceFile().fileName).startsWith("..");
}

function readSdk(): SdkDoc {
  const indexPath = join(ROOT, "src", "index.ts");
  const program = ts.createProgram([indexPath], {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    strict: true,
    skipLibCheck: true,
    types: ["node"],
    noEmit: true,
  });
  const checker = program.getTypeChecker();
  const source = program.getSourceFile(indexPath);
  const moduleSymbol = source && checker.getSymbolAtLocation(source);
  if (!moduleSymbol) throw new Error("cannot read src/index.ts");

  const types: TypeDoc[] = [];
  const documented = new Set<string>();
  const queue: ts.Symbol[] = [];
  let pyroClass: ts.ClassDeclaration | undefined;
  const handleClasses: ts.ClassDeclaration[] = [];
  let errorCodeSymbol: ts.Symbol | undefined;
  for (const exported of checker.getExportsOfModule(moduleSymbol)) {
    const symbol = exported.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exported) : exported;
    const declaration = symbol.declarations?.[0];
    if (!declaration) continue;
    if (ts.isClassDeclaration(declaration) && symbol.name === "Pyro") pyroClass = declaration;
    else if (ts.isClassDeclaration(declaration) && isInSrc(declaration) && !(symbol.name.endsWith("Error"))) handleClasses.push(declaration);
    if (symbol.name === "ErrorCode") errorCodeSymbol = symbol;
    if (ts.isInterfaceDeclaration(declaration) || ts.isTypeAliasDeclaration(declaration)) queue.push(symbol);
  }
  if (!pyroClass || !errorCodeSymbol) throw new Error("src/index.ts no longer exports Pyro and ErrorCode");

  // Interfaces of src/ that documented fields refer to (Paths, KvmReport, ...) are documented too.
  const referencedFrom = (typeNode: ts.Node | undefined) => {
    const visit = (node: ts.Node) => {
      if (ts.isTypeReferenceNode(node)) {
        let symbol = checker.getSymbolAtLocation(node.typeName);
        if (symbol && symbol.flags & ts.SymbolFlags.Alias) symbol = checker.getAliasedSymbol(symbol);
        const declaration = symbol?.declarations?.[0];
        if (symbol && declaration && isInSrc(declaration) && (ts.isInterfaceDeclaration(declaration) || ts.isTypeAliasDeclaration(declaration))) queue.push(symbol);
      }
      ts.forEachChild(node, visit);
    };
    if (typeNode) visit(typeNode);
  };

  const methods: MethodDoc[] = [];
  const properties: Field[] = [];
  let constructorSignature = "new Pyro()";
  const handles: HandleDoc[] = [];
  const asyncDisposable = (declaration: ts.ClassDeclaration) => declaration.members.some((m) => m.name && ts.isComputedPropertyName(m.name) && m.name.expression.getText() === "Symbol.asyncDispose");
  for (const declaration of handleClasses) {
    const symbol = declaration.name && checker.getSymbolAtLocation(declaration.name);
    if (!symbol) continue;
    const handle: HandleDoc = { name: symbol.name, doc: docOf(symbol, checker), methods: [], disposable: asyncDisposable(declaration) };
    for (const member of declaration.members) {
      if (!ts.isMethodDeclaration(member) || ts.isPrivateIdentifier(member.name) || ts.isComputedPropertyName(member.name)) continue;
      const method = checker.getSymbolAtLocation(member.name);
      const signature = checker.getSignatureFromDeclaration(member);
      if (!method || !signature) continue;
      handle.methods.push({ name: method.name, signature: `${method.name}${checker.signatureToString(signature, undefined, FORMAT)}`, doc: docOf(method, checker), returns: checker.getReturnTypeOfSignature(signature) });
    }
    handles.push(handle);
  }
  for (const member of pyroClass.members) {
    // [Symbol.asyncDispose] is told apart in the text (the class is AsyncDisposable), not listed as a method.
    if (member.name && ts.isComputedPropertyName(member.name)) continue;
    if (!member.name && !ts.isConstructorDeclaration(member)) continue;
    if (member.name && ts.isPrivateIdentifier(member.name)) continue;
    if (ts.getCombinedModifierFlags(member) & (ts.ModifierFlags.Private | ts.ModifierFlags.Protected)) continue;
    if (ts.isConstructorDeclaration(member)) {
      const parameters = member.parameters.map((p) => `${p.name.getText()}${p.questionToken || p.initializer ? "?" : ""}: ${p.type?.getText() ?? "unknown"}`);
      constructorSignature = `new Pyro(${parameters.join(", ")})`;
      member.parameters.forEach((p) => referencedFrom(p.type));
    } else if (ts.isMethodDeclaration(member)) {
      const symbol = checker.getSymbolAtLocation(member.name);
      const signature = checker.getSignatureFromDeclaration(member);
      if (!symbol || !signature) continue;
      methods.push({
        name: symbol.name,
        signature: `${symbol.name}${checker.signatureToString(signature, undefined, FORMAT)}`,
        doc: docOf(symbol, checker),
        returns: checker.getReturnTypeOfSignature(signature),
      });
      member.parameters.forEach((p) => referencedFrom(p.type));
      referencedFrom(member.type);
    } else if (ts.isPropertyDeclaration(member)) {
      const symbol = checker.getSymbolAtLocation(member.name);
      if (!symbol) continue;
      properties.push({ name: symbol.name, type: member.type?.getText() ?? "unknown", optional: false, doc: docOf(symbol, checker) });
      referencedFrom(member.type);
    }
  }

  while (queue.length) {
    const symbol = queue.shift()!;
    if (documented.has(symbol.name)) continue;
    documented.add(symbol.name);
    const declaration = symbol.declarations![0]!;
    const type = checker.getDeclaredTypeOfSymbol(symbol);
    const file = relative(ROOT, declaration.getSourceFile().fileName);
    const isObject = ts.isInterfaceDeclaration(declaration) || (type.flags & ts.TypeFlags.Object) !== 0 || type.isIntersection();
    if (isObject) {
      const fields = fieldsOf(type, checker);
      types.push({ name: symbol.name, file, fields });
      for (const property of checker.getPropertiesOfType(type)) {
        const d = property.valueDeclaration ?? property.declarations?.[0];
        if (d && (ts.isPropertySignature(d) || ts.isPropertyDeclaration(d))) referencedFrom(d.type);
      }
    } else {
      const text = ts.isTypeAliasDeclaration(declaration) ? oneLine(declaration.type.getText()) : checker.typeToString(type, undefined, FORMAT);
      const expanded = checker.typeToString(type, undefined, FORMAT | ts.TypeFormatFlags.InTypeAlias);
      types.push({ name: symbol.name, file, alias: text.includes("typeof") ? expanded : text, fields: [] });
    }
  }

  const errorDocs = new Map<string, string>();
  for (const property of checker.getPropertiesOfType(checker.getTypeOfSymbol(errorCodeSymbol))) errorDocs.set(property.name, docOf(property, checker));
  return { constructorSignature, properties, methods, handles, types, errorDocs, checker };
}

/**
 * The default of an optional field: from `Defaults` in src/config.ts when it has
 * one there (and then its doc comment must agree), else what its doc comment says.
 */
/** Fields whose default lives under another name in `Defaults` (the same field name means another thing there). */
const DEFAULT_NAMES: Record<string, string> = {
  "WorkspacePushOptions.timeoutSeconds": "pushTimeoutSeconds",
  "workspace_sync_push.timeoutSeconds": "pushTimeoutSeconds",
  "workspace sync push.timeoutSeconds": "pushTimeoutSeconds",
};

function defaultOf(typeName: string, field: Field): string {
  if (!field.optional) return "";
  const name = DEFAULT_NAMES[`${typeName}.${field.name}`] ?? field.name;
  const known = (Defaults as Record<string, unknown>)[name];
  const stated = /\bDefault:? (.+?)(?:\.(?:\s|$)|;|:\s|$)/.exec(field.doc)?.[1]?.trim();
  if (known !== undefined) {
    if (stated !== undefined && stated.split(/\s/)[0] !== show(known)) {
      throw new Error(`${typeName}.${field.name}: its doc comment says "Default ${stated}" but Defaults.${name} is ${show(known)}`);
    }
    return code(show(known));
  }
  return stated ?? "";
}

/** `T` of a `Promise<T>`, else the type itself. */
function awaited(type: ts.Type, checker: ts.TypeChecker): ts.Type {
  const isReference = (type.flags & ts.TypeFlags.Object) !== 0 && ((type as ts.ObjectType).objectFlags & ts.ObjectFlags.Reference) !== 0;
  if (isReference && type.getSymbol()?.getName() === "Promise") return checker.getTypeArguments(type as ts.TypeReference)[0] ?? type;
  return type;
}

/** The element type behind promises, arrays and null: what an output field's docs are looked up in. */
function unwrap(type: ts.Type, checker: ts.TypeChecker): ts.Type {
  let current = checker.getNonNullableType(awaited(checker.getNonNullableType(type), checker));
  if (checker.isArrayType(current)) current = checker.getNonNullableType(checker.getTypeArguments(current as ts.TypeReference)[0]!);
  return current;
}

/** Doc comment of the SDK field behind a snake_case output path like `entries[].exit_code`. */
function sdkDocFor(root: ts.Type, path: string[], checker: ts.TypeChecker): string {
  let type = unwrap(root, checker);
  let doc = "";
  for (const [index, segment] of path.entries()) {
    const property = checker.getPropertiesOfType(type).find((p) => snakeKey(p.name) === segment);
    if (!property) {
      // List tools wrap the SDK's array in one field: { environments: [...] }.
      if (index === 0 && checker.isArrayType(checker.getNonNullableType(awaited(root, checker)))) continue;
      return "";
    }
    doc = docOf(property, checker);
    type = unwrap(checker.getTypeOfSymbol(property), checker);
  }
  return doc;
}

// ---- JSON Schema of the MCP tools ----

interface JsonSchema {
  type?: string | string[];
  const?: unknown;
  enum?: unknown[];
  anyOf?: JsonSchema[];
  items?: JsonSchema;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  additionalProperties?: boolean | JsonSchema;
  description?: string;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
}

function schemaType(schema: JsonSchema): string {
  if (schema.const !== undefined) return JSON.stringify(schema.const);
  if (schema.enum) return schema.enum.map((value) => JSON.stringify(value)).join(" | ");
  if (schema.anyOf) return schema.anyOf.map(schemaType).join(" | ");
  if (schema.type === "array") {
    const item = schema.items ? schemaType(schema.items) : "unknown";
    return item.includes(" ") ? `(${item})[]` : `${item}[]`;
  }
  if (schema.type === "object" && !schema.properties && typeof schema.additionalProperties === "object") {
    return `object of ${schemaType(schema.additionalProperties)}`;
  }
  return Array.isArray(schema.type) ? schema.type.join(" | ") : (schema.type ?? "unknown");
}

function constraints(schema: JsonSchema): string {
  const parts: string[] = [];
  const safe = (n: number | undefined) => n !== undefined && Math.abs(n) < Number.MAX_SAFE_INTEGER;
  if (safe(schema.minimum) && safe(schema.maximum)) parts.push(`${schema.minimum} to ${schema.maximum}`);
  else if (safe(schema.minimum)) parts.push(`≥ ${schema.minimum}`);
  else if (safe(schema.maximum)) parts.push(`≤ ${schema.maximum}`);
  if (schema.minLength !== undefined && schema.maxLength !== undefined) parts.push(`length ${schema.minLength} to ${schema.maxLength}`);
  else if (schema.minLength !== undefined) parts.push(`length ≥ ${schema.minLength}`);
  else if (schema.maxLength !== undefined) parts.push(`length ≤ ${schema.maxLength}`);
  if (schema.pattern) parts.push(`matches ${code(schema.pattern)}`);
  return parts.join(", ");
}

/** An object schema's fields, nested objects and arrays of objects flattened to `a.b` and `a[].b`. */
function flatten(schema: JsonSchema, prefix = ""): { path: string; schema: JsonSchema; required: boolean }[] {
  const rows: { path: string; schema: JsonSchema; required: boolean }[] = [];
  for (const [name, field] of Object.entries(schema.properties ?? {})) {
    const path = `${prefix}${name}`;
    rows.push({ path, schema: field, required: schema.required?.includes(name) ?? false });
    const inner = field.anyOf?.find((member) => member.type !== "null") ?? field;
    if (inner.type === "object" && inner.properties) rows.push(...flatten(inner, `${path}.`));
    if (inner.type === "array" && inner.items?.type === "object" && inner.items.properties) rows.push(...flatten(inner.items, `${path}[].`));
  }
  return rows;
}

function jsonSchemaOf(schema: z.ZodType): JsonSchema {
  return z.toJSONSchema(schema) as JsonSchema;
}

// ---- the CLI, walked from the commander program ----

/** Every command, depth first; groups (`env`, `workspace sync`) come before their subcommands. */
function allCommands(command: Command, prefix = ""): { path: string; command: Command }[] {
  const out: { path: string; command: Command }[] = [];
  for (const sub of command.commands) {
    const path = prefix ? `${prefix} ${sub.name()}` : sub.name();
    out.push({ path, command: sub }, ...allCommands(sub, path));
  }
  return out;
}

function optionDefault(option: Option, commandPath: string): string {
  const name = DEFAULT_NAMES[`${commandPath}.${option.attributeName()}`] ?? option.attributeName();
  const fromDefaults = (Defaults as Record<string, unknown>)[name];
  const takesValue = option.required || option.optional;
  const value = fromDefaults ?? (option.defaultValue as unknown);
  if (value === undefined) return takesValue ? "" : "off";
  if (typeof value === "boolean" && !takesValue) return value ? "on" : "off";
  return show(value);
}

// ---- the document ----

export function generateContract(): string {
  const sdk = readSdk();
  const program = buildProgram(newContext(new Pyro(), new AbortController().signal));
  const commands = allCommands(program);
  const leaves = new Map(commands.filter((c) => c.command.commands.length === 0).map((c) => [c.path, c.command]));
  const tools = new Map(TOOLS.map((tool) => [tool.name, tool]));

  // Keep the hand-maintained tables honest.
  const methodNames = sdk.methods.map((m) => m.name);
  for (const name of methodNames) if (!SURFACES[name]) throw new Error(`Pyro.${name} is missing from SURFACES in src/tools/surfaces.ts`);
  for (const [name, op] of Object.entries(SURFACES)) {
    if (!methodNames.includes(name)) throw new Error(`SURFACES names Pyro.${name}, which does not exist`);
    if (op.cli && !leaves.has(op.cli)) throw new Error(`SURFACES: no CLI command "pyro ${op.cli}"`);
    if (!op.cli && !op.noCliBecause) throw new Error(`SURFACES: Pyro.${name} has no CLI command and no reason`);
    if (op.mcp && !tools.has(op.mcp)) throw new Error(`SURFACES: no MCP tool ${op.mcp}`);
  }
  const envVars = scanEnvReads();
  const drift = settingsDrift(envVars);
  if (drift.unlisted.length) throw new Error(`read in src/ but missing from SETTINGS in src/settings.ts: ${drift.unlisted.join("; ")}`);
  if (drift.unread.length) throw new Error(`SETTINGS in src/settings.ts lists variables src/ no longer reads: ${drift.unread.join(", ")}`);

  const out: string[] = [];
  const push = (...lines: string[]) => out.push(...lines);

  push(
    "# Public contract",
    "",
    "<!-- Generated by scripts/contract.ts from the code. Do not edit: run `npm run contract`. -->",
    "",
    "Everything pyro promises to callers, generated from the code: the CLI from the",
    "command definitions, the SDK from `src/index.ts` and its types, the MCP tools",
    "from their schemas, defaults from `src/config.ts`, error and exit codes from",
    "`src/errors.ts` and `src/cli/output.ts`. The unit tests fail when this file and",
    "the code disagree. For explanations see the other [documents](../README.md#documentation).",
    "",
    "- [Operations](#operations)",
    "- [Defaults and limits](#defaults-and-limits)",
    "- [Environment variables](#environment-variables)",
    "- [Environments](#environments)",
    "- [CLI](#cli)",
    "- [SDK](#sdk)",
    "- [MCP tools](#mcp-tools)",
    "- [Errors and exit codes](#errors-and-exit-codes)",
    "",
  );

  // Operations
  push(
    "## Operations",
    "",
    "Every SDK method with the CLI command and MCP tool that expose it. CLI `--json` output and MCP results",
    "carry the SDK's result with snake_case field names (`vmId` → `vm_id`). `pyro run`, `pyro vm exec` and",
    "`pyro workspace exec` add one optional field, `hint` (string): present only when the command after `--` was",
    "a single argument holding a shell line and exited 126 or 127, it says to write `-- sh -c '<line>'` instead.",
    "",
    table(
      ["SDK method", "CLI", "MCP tool"],
      methodNames.map((name) => {
        const op = SURFACES[name]!;
        return [code(name), op.cli ? code(`pyro ${op.cli}`) : "—", op.mcp ? code(op.mcp) : "—"];
      }),
    ),
    "",
    "CLI only: " +
      [...leaves.keys()]
        .filter((path) => !Object.values(SURFACES).some((op) => op.cli === path))
        .map((path) => code(`pyro ${path}`))
        .join(", ") +
      ".",
    "",
  );

  // Defaults and limits
  push(
    "## Defaults and limits",
    "",
    "From `Defaults` and `Limits` in `src/config.ts`.",
    "",
    table(
      ["name", "value", "unit"],
      [
        ...Object.entries(Defaults).map(([name, value]) => [code(`Defaults.${name}`), code(show(value)), unitOf(name)]),
        ...Object.entries(Limits).map(([name, value]) => [code(`Limits.${name}`), code(show(value)), unitOf(name)]),
      ],
    ),
    "",
  );

  // Environment variables
  push(
    "## Environment variables",
    "",
    "Every variable the code reads (`SETTINGS` in `src/settings.ts`; a unit test scans `src/` for reads), with where it is read.",
    "",
    table(
      ["variable", "default", "effect", "read in"],
      Object.entries(SETTINGS).map(([name, setting]) => [
        code(settingLabel(name, setting)),
        defaultCell(setting),
        setting.effect,
        (envVars.get(name) ?? []).map(code).join(", "),
      ]),
    ),
    "",
  );

  // Environments
  push(
    "## Environments",
    "",
    "The catalog (`CATALOG` in `src/environments/catalog.ts`).",
    "",
    table(
      ["name", "suite", "packages added to minbase", "root disk (MiB)", "description"],
      CATALOG.map((spec) => [code(spec.name), spec.suite, spec.packages.length ? spec.packages.map(code).join(", ") : "—", String(spec.diskMib), spec.description]),
    ),
    "",
  );

  // CLI
  push(
    "## CLI",
    "",
    `${code(`pyro ${program.usage()}`)}: ${program.description()}`,
    "",
    "Global options: " + program.options.map((o) => `${code(o.flags)} (${o.description})`).join(", ") + "; every command also takes `-h, --help`.",
    "",
    table(
      ["command", "description"],
      commands.map((c) => [code(`pyro ${c.path}`), c.command.description()]),
    ),
    "",
  );
  for (const { path, command } of commands) {
    if (command.commands.length) continue;
    push(`### \`pyro ${path}\``, "", command.description(), "", "```", `pyro ${path} ${command.usage()}`, "```", "");
    if (command.registeredArguments.length) {
      push(
        table(
          ["argument", "required", "description"],
          command.registeredArguments.map((a) => [
            code(`${a.variadic ? `${a.name()}...` : a.name()}`),
            a.required ? "yes" : "no",
            [a.description, a.defaultValue !== undefined ? `Default ${show(a.defaultValue)}.` : ""].filter(Boolean).join(" ") || "—",
          ]),
        ),
        "",
      );
    }
    const options = command.options.filter((o) => !o.hidden);
    if (options.length) {
      push(
        table(
          ["option", "default", "description"],
          options.map((o) => [
            code(o.flags),
            optionDefault(o, path) ? code(optionDefault(o, path)) : "—",
            `${o.description}${o.argChoices ? ` Choices: ${o.argChoices.map(code).join(", ")}.` : ""}`,
          ]),
        ),
        "",
      );
    }
  }

  // SDK
  push(
    "## SDK",
    "",
    "`import { Pyro } from \"pyro-mcp\"`. Read from `src/index.ts` with the TypeScript compiler: methods in",
    "declaration order, then every exported type and the types they refer to. A command that exits",
    "non-zero is a result; pyro's own failures throw `PyroError` (see [Errors and exit codes](#errors-and-exit-codes)).",
    "",
    "### Constructor and properties",
    "",
    "```ts",
    sdk.constructorSignature,
    "```",
    "",
  );
  if (sdk.properties.length) {
    push(table(["property", "type", "description"], sdk.properties.map((p) => [code(p.name), code(p.type), p.doc || "—"])), "");
  }
  push("### Methods", "");
  for (const method of sdk.methods) {
    const op = SURFACES[method.name]!;
    push(
      `#### \`${method.name}\``,
      "",
      "```ts",
      method.signature,
      "```",
      "",
      ...(method.doc ? [method.doc, ""] : []),
      `CLI: ${op.cli ? code(`pyro ${op.cli}`) : `none (${op.noCliBecause ?? ""})`} · MCP: ${op.mcp ? code(op.mcp) : "none"}`,
      "",
    );
  }
  push(
    "### Handles",
    "",
    "`createVm` and `createWorkspace` (and `getVm`, `getWorkspace`) return objects that carry the info's fields and",
    "these methods, bound to their id. `Pyro` itself is `AsyncDisposable`: `await using pyro = new Pyro()` calls `close()`.",
    "",
  );
  for (const handle of sdk.handles) {
    push(`#### \`${handle.name}\``, "", ...(handle.doc ? [handle.doc, ""] : []));
    if (handle.disposable) push(`\`${handle.name}\` is \`AsyncDisposable\`: leaving an \`await using\` block deletes it.`, "");
    push("```ts", ...handle.methods.map((m) => m.signature), "```", "");
    push(table(["method", "description"], handle.methods.map((m) => [code(m.name), oneLine(m.doc) || "—"])), "");
  }
  push("### Types", "", "Field names here are the SDK's; JSON output uses their snake_case form (shown as JSON).", "");
  for (const type of sdk.types) {
    push(`#### \`${type.name}\``, "", `Declared in \`${type.file}\`.`, "");
    if (type.alias !== undefined) {
      push("```ts", `type ${type.name} = ${type.alias};`, "```", "");
      continue;
    }
    push(
      table(
        ["field", "JSON", "type", "required", "default", "unit", "description"],
        type.fields.map((f) => [
          code(f.name),
          code(snakeKey(f.name)),
          code(f.type),
          f.optional ? "no" : "yes",
          defaultOf(type.name, f),
          unitOf(f.name),
          f.doc,
        ]),
      ),
      "",
    );
  }

  // MCP
  const returnsOf = new Map<string, ts.Type>();
  for (const method of sdk.methods) {
    const tool = SURFACES[method.name]?.mcp;
    if (tool) returnsOf.set(tool, method.returns);
  }
  push(
    "## MCP tools",
    "",
    "`pyro mcp serve --profile NAME` offers one profile's tools (`src/tools/catalog.ts`); the same tools back the",
    "framework integrations. Arguments and results are snake_case. A tool's result is its output object as",
    "`structuredContent` and as JSON text; pyro's own failures are results with `isError: true` and",
    '`{"error": {"code", "message", "hint"}}`, arguments that fail the input schema (and an unknown tool) among',
    "them, as `invalid_argument` naming the argument.",
    "",
    table(
      ["profile", "tools"],
      PROFILES.map((profile) => [`${code(profile)}${profile === DEFAULT_PROFILE ? " (default)" : ""}`, toolsFor(profile).map((t) => code(t.name)).join(", ")]),
    ),
    "",
  );
  for (const tool of TOOLS) push(...toolSection(tool, returnsOf.get(tool.name), sdk.checker));

  // Errors
  const keyOf = new Map(Object.entries(ErrorCode).map(([key, value]) => [value as string, key]));
  push(
    "## Errors and exit codes",
    "",
    "Every failure pyro itself reports carries one of these codes (`ErrorCode` in `src/errors.ts`) with a",
    "one-line message and a hint that is never empty. Message and hint name options and operations in the words",
    "of the surface called (`src/vocabulary.ts`): CLI flags and commands (`--ttl-seconds`, `pyro vm list`),",
    "snake_case tool arguments and tool names over MCP and in the adapters (`ttl_seconds`, `workspace_list`),",
    "camelCase options and methods in the SDK (`ttlSeconds`, `listVms()`).",
    "The CLI exits with the code's status (`EXIT_CODES` in `src/cli/output.ts`).",
    "What each one means in practice and how to fix it: [troubleshooting](troubleshooting.md).",
    "",
    table(
      ["code", "exit", "`ErrorCode` key", "meaning"],
      Object.entries(EXIT_CODES)
        .sort(([, a], [, b]) => a - b)
        .map(([value, exit]) => [code(value), String(exit), code(keyOf.get(value) ?? "?"), sdk.errorDocs.get(keyOf.get(value) ?? "") ?? ""]),
    ),
    "",
    "Other exit statuses: `pyro run`, `pyro vm exec`, `pyro workspace exec` and `pyro demo` exit with the guest",
    "command's own status (124 when it timed out, 128+N when a signal N ended it); `pyro doctor` exits 1 when it",
    `found problems; a command line pyro cannot parse (unknown option, missing argument) exits ${EXIT_CODES[ErrorCode.invalidArgument]}.`,
    "",
  );

  return `${out.join("\n").replace(/\n{3,}/g, "\n\n").trimEnd()}\n`;
}

function toolSection(tool: ToolSpec, returns: ts.Type | undefined, checker: ts.TypeChecker): string[] {
  const input = jsonSchemaOf(tool.input);
  const output = jsonSchemaOf(tool.output);
  const a = tool.annotations;
  const hints = [a.readOnlyHint && "read-only", a.destructiveHint && "destructive", a.idempotentHint && "idempotent", a.openWorldHint && "open-world"].filter(Boolean);
  const lines = [
    `### \`${tool.name}\``,
    "",
    tool.description,
    "",
    `Title: ${a.title}. Hints: ${hints.length ? hints.join(", ") : "none"}. Profiles: ${tool.profiles.map(code).join(", ")}.`,
    "",
  ];
  const inputs = flatten(input);
  if (inputs.length) {
    lines.push(
      "Input:",
      "",
      table(
        ["argument", "type", "required", "default", "constraints", "description"],
        inputs.map((row) => {
          const description = row.schema.description ?? "";
          const field: Field = { name: row.path.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase()), type: "", optional: !row.required, doc: description };
          return [code(row.path), code(schemaType(row.schema)), row.required ? "yes" : "no", defaultOf(tool.name, field), constraints(row.schema), description];
        }),
      ),
      "",
    );
  } else {
    lines.push("Input: none (an empty object).", "");
  }
  lines.push(
    "Output:",
    "",
    table(
      ["field", "type", "always present", "unit", "description"],
      flatten(output).map((row) => {
        const path = row.path.split(/\.|\[\]\./);
        const doc = row.schema.description ?? (returns ? sdkDocFor(returns, path, checker) : "");
        return [code(row.path), code(schemaType(row.schema)), row.required ? "yes" : "no", unitOf(path[path.length - 1] ?? ""), doc];
      }),
    ),
    "",
  );
  return lines;
}

/** First differing line of two texts, for a useful --check message. */
export function firstDifference(expected: string, actual: string): string | undefined {
  const a = expected.split("\n");
  const b = actual.split("\n");
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (a[i] !== b[i]) return `line ${i + 1}:\n  generated: ${a[i] ?? "(end of file)"}\n  on disk:   ${b[i] ?? "(end of file)"}`;
  }
  return undefined;
}

function main(argv: string[]): number {
  const text = generateContract();
  if (argv.includes("--write")) {
    writeFileSync(CONTRACT_PATH, text);
    console.error(`contract: wrote ${relative(process.cwd(), CONTRACT_PATH)}`);
    for (const file of regionFiles()) {
      if (file.expected === file.actual) continue;
      writeFileSync(file.path, file.expected);
      console.error(`contract: updated the generated tables of ${file.file}`);
    }
    return 0;
  }
  if (argv.includes("--check")) {
    let current = "";
    try {
      current = readFileSync(CONTRACT_PATH, "utf8");
    } catch {
      console.error(`contract: ${relative(process.cwd(), CONTRACT_PATH)} does not exist; run \`npm run contract\``);
      return 1;
    }
    const difference = firstDifference(text, current);
    if (difference) {
      console.error(`contract: docs/public-contract.md is out of date; run \`npm run contract\`. First difference at ${difference}`);
      return 1;
    }
    for (const file of regionFiles()) {
      const stale = firstDifference(file.expected, file.actual);
      if (stale) {
        console.error(`contract: a generated table of ${file.file} is out of date; run \`npm run contract\`. First difference at ${stale}`);
        return 1;
      }
    }
    console.error("contract: docs/public-contract.md and the generated tables are up to date");
    return 0;
  }
  process.stdout.write(text);
  return 0;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = main(process.argv.slice(2));
}
