import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { test } from "node:test";
import ts from "typescript";
import { buildProgram } from "../../src/cli/main.js";
import { newContext } from "../../src/cli/context.js";
import { cliVocabulary } from "../../src/cli/vocabulary.js";
import { Pyro } from "../../src/sdk/pyro.js";
import { MCP_VOCABULARY } from "../../src/tools/vocabulary.js";
import { renderText, SDK_VOCABULARY, type Vocabulary } from "../../src/vocabulary.js";
import { ROOT } from "../helpers.js";
import { foreignWords } from "../vocabulary.js";

/**
 * Every message and hint written in src/ (the text of `new PyroError(...)`,
 * `new InvalidArgumentError(...)` and every `hint:`), rendered on each
 * surface, holds no word of another surface. The errors table raises each
 * code for real; this reaches the errors no test raises.
 */

const ERROR_CLASSES = new Set(["PyroError", "InvalidArgumentError"]);

/** A string's literal text, with each `${...}` as X: what pyro wrote, not what it interpolates. */
function literalText(node: ts.Node): string | undefined {
  if (ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)) return node.text;
  if (ts.isTemplateExpression(node)) return node.head.text + node.templateSpans.map((span) => `X${span.literal.text}`).join("");
  if (ts.isConditionalExpression(node)) return [literalText(node.whenTrue), literalText(node.whenFalse)].filter(Boolean).join(" | ") || undefined;
  return undefined;
}

interface Written {
  where: string;
  text: string;
}

function writtenTexts(): Written[] {
  const found: Written[] = [];
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (path.endsWith(".ts")) files.push(path);
    }
  };
  walk(join(ROOT, "src"));
  for (const file of files) {
    // The CLI's own messages name its flags on purpose; they never reach another surface.
    if (file.includes(`${join("src", "cli")}`)) continue;
    const source = ts.createSourceFile(file, readFileSync(file, "utf8"), ts.ScriptTarget.Latest, true);
    const add = (node: ts.Node | undefined) => {
      const text = node && literalText(node);
      if (text && /[A-Za-z]/.test(text)) {
        const { line } = source.getLineAndCharacterOfPosition(node.getStart());
        found.push({ where: `${relative(ROOT, file)}:${line + 1}`, text });
      }
    };
    const visit = (node: ts.Node) => {
      if (ts.isNewExpression(node) && ts.isIdentifier(node.expression) && ERROR_CLASSES.has(node.expression.text)) {
        // PyroError(code, message, options); InvalidArgumentError(field, message, hint).
        const args = node.arguments ?? [];
        add(args[1]);
        if (node.expression.text === "InvalidArgumentError") add(args[2]);
      }
      if (ts.isPropertyAssignment(node) && ts.isIdentifier(node.name) && node.name.text === "hint") add(node.initializer);
      ts.forEachChild(node, visit);
    };
    visit(source);
  }
  return found;
}

test("every message and hint written in src/ reads in each surface's words", () => {
  const cli = cliVocabulary(buildProgram(newContext(new Pyro(), new AbortController().signal)));
  const vocabularies: Vocabulary[] = [SDK_VOCABULARY, cli, MCP_VOCABULARY];
  const texts = writtenTexts();
  assert.ok(texts.length > 150, `found only ${texts.length} messages and hints; is the scan still finding them?`);
  const wrong: string[] = [];
  for (const { where, text } of texts) {
    for (const vocabulary of vocabularies) {
      const words = foreignWords(renderText(text, vocabulary), vocabulary.surface);
      if (words.length) wrong.push(`${where} on ${vocabulary.surface}: ${words.join(", ")} in "${renderText(text, vocabulary)}"`);
    }
  }
  assert.deepEqual(wrong, [], "write options in camelCase (`ttlSeconds`) and operations as SDK methods (`listVms()`); each surface renders them");
});
