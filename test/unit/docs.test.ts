import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { test } from "node:test";
import { CONTRACT_PATH, firstDifference, generateContract } from "../../scripts/contract.js";
import { ErrorCode } from "../../src/errors.js";
import { ROOT } from "../helpers.js";

const DOCS = join(ROOT, "docs");
const docFiles = readdirSync(DOCS)
  .filter((name) => name.endsWith(".md"))
  .sort()
  .map((name) => join(DOCS, name));

test("docs/public-contract.md is what scripts/contract.ts generates", () => {
  const expected = generateContract();
  const actual = existsSync(CONTRACT_PATH) ? readFileSync(CONTRACT_PATH, "utf8") : "";
  const difference = firstDifference(expected, actual);
  assert.equal(difference, undefined, `docs/public-contract.md is out of date; run \`npm run contract\`. First difference at ${difference ?? ""}`);
});

test("docs/troubleshooting.md has a heading for every error code", () => {
  const text = readFileSync(join(DOCS, "troubleshooting.md"), "utf8");
  const headings = new Set([...text.matchAll(/^### `([a-z_]+)`$/gm)].map((match) => match[1]));
  const missing = Object.values(ErrorCode).filter((code) => !headings.has(code));
  assert.deepEqual(missing, [], `add a "### \`code\`" section to docs/troubleshooting.md for: ${missing.join(", ")}`);
});

/** Relative link targets in a markdown file (inline links and images), without their #fragment. */
function relativeLinks(path: string): string[] {
  const text = readFileSync(path, "utf8").replace(/```[\s\S]*?```/g, "");
  const targets: string[] = [];
  for (const match of text.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) {
    const target = match[1]!;
    if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith("#")) continue;
    targets.push(target.split("#")[0]!);
  }
  return targets;
}

test("relative links from README.md and docs/ to docs/ and guest/ point at files that exist", () => {
  const broken: string[] = [];
  for (const file of [join(ROOT, "README.md"), ...docFiles]) {
    for (const target of relativeLinks(file)) {
      const resolved = resolve(dirname(file), decodeURIComponent(target));
      const inRepo = relative(ROOT, resolved);
      // Links into examples/ are owned by whoever writes the examples; only docs/ and guest/ are checked.
      if (!inRepo.startsWith("docs") && !inRepo.startsWith("guest")) continue;
      if (!existsSync(resolved)) broken.push(`${relative(ROOT, file)} → ${target}`);
    }
  }
  assert.deepEqual(broken, [], "broken links");
});

test("README.md links every document in docs/", () => {
  const links = new Set(relativeLinks(join(ROOT, "README.md")));
  const missing = docFiles.map((file) => relative(ROOT, file)).filter((path) => !links.has(path));
  assert.deepEqual(missing, [], "add these to the Documentation section of README.md");
});
