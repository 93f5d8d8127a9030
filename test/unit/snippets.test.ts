import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { test } from "node:test";
import { ROOT } from "../helpers.js";
import { documentLine, mcpServers, parseSnippets } from "../snippets.js";

const DOCUMENTS = [
  join(ROOT, "README.md"),
  ...["docs", "examples"].flatMap((dir) =>
    readdirSync(join(ROOT, dir))
      .filter((n) => n.endsWith(".md") && n !== "public-contract.md")
      .map((n) => join(ROOT, dir, n)),
  ),
];

test("README.md, docs/ and examples/ use the snippet format correctly", () => {
  const problems = DOCUMENTS.flatMap((path) => parseSnippets(readFileSync(path, "utf8")).problems.map((p) => `${relative(ROOT, path)}:${p}`));
  assert.deepEqual(problems, []);
});

test("a snippet with imports starts a program; one without continues the one before it", () => {
  const doc = [
    "```ts", // 1
    'import { Pyro } from "pyro-mcp";', // 2
    "const pyro = new Pyro();", // 3
    "```",
    "text",
    "```typescript", // 6
    "await pyro.listVms();", // 7
    "```",
    "```js", // 9
    'import x from "y";', // 10
    "```",
    "```json", // 12
    "{}",
    "```",
  ].join("\n");
  const { programs, json, problems } = parseSnippets(doc);
  assert.deepEqual(problems, []);
  assert.equal(programs.length, 2);
  assert.deepEqual(programs[0]!.snippets.map((s) => s.line), [1, 6]);
  assert.equal(programs[0]!.text, 'import { Pyro } from "pyro-mcp";\nconst pyro = new Pyro();\nawait pyro.listVms();\n');
  assert.equal(documentLine(programs[0]!, 2), 7, "module line 3 is document line 7");
  assert.equal(programs[1]!.language, "js");
  assert.deepEqual(json.map((s) => s.line), [12]);
});

test("typecheck-only markers need a reason and a code block right after them", () => {
  const marked = parseSnippets('<!-- snippet: typecheck-only: needs a key -->\n```ts\nimport "x";\n```\n');
  assert.deepEqual(marked.problems, []);
  assert.deepEqual(marked.programs[0]!.typecheckOnly, ["needs a key"]);
  assert.match(parseSnippets('<!-- snippet: typecheck-only: -->\n```ts\nimport "x";\n```\n').problems.join(), /needs a reason/);
  assert.match(parseSnippets('<!-- snippet: skip: why -->\n```ts\nimport "x";\n```\n').problems.join(), /unknown snippet marker/);
  assert.match(parseSnippets('<!-- snippet: typecheck-only: why -->\n\n```ts\nimport "x";\n```\n').problems.join(), /line right before/);
  assert.match(parseSnippets("<!-- snippet: typecheck-only: why -->\n```json\n{}\n```\n").problems.join(), /not TypeScript/);
  assert.match(parseSnippets("```ts\nconst a = 1;\n```\n").problems.join(), /add its imports/);
});

test("a marked continuation keeps its whole program from running", () => {
  const { programs } = parseSnippets('```ts\nimport "x";\n```\n<!-- snippet: typecheck-only: a key -->\n```ts\nf();\n```\n');
  assert.deepEqual(programs[0]!.typecheckOnly, ["a key"]);
});

test("an MCP client config's servers, or what is wrong with them", () => {
  assert.equal(mcpServers({ other: 1 }), undefined);
  assert.deepEqual(mcpServers({ mcpServers: { pyro: { command: "pyro", args: ["mcp", "serve"] } } }), {
    servers: [{ name: "pyro", command: "pyro", args: ["mcp", "serve"], env: {} }],
    problems: [],
  });
  assert.deepEqual(mcpServers({ mcpServers: { pyro: { command: "pyro", args: "mcp serve" } } })?.problems, ["mcpServers.pyro.args is not a list of strings"]);
  assert.deepEqual(mcpServers({ mcpServers: { pyro: { args: [] } } })?.problems, ["mcpServers.pyro.command is not a string"]);
});
