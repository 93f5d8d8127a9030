import assert from "node:assert/strict";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { PyroError } from "../../src/errors.js";
import { readSecrets, Redactor, resolveSecretEnv, resolveSecrets, secretsPath, writeSecrets } from "../../src/runtime/secrets.js";
import { plainText, redactWindow } from "../../src/runtime/shells.js";
import { resolvePublish, resolveReadiness } from "../../src/runtime/services.js";

const secrets = new Map([
  ["TOKEN", "s3cr3t-value"],
  ["SHORT", "pw"],
  ["LONG", "s3cr3t-value-and-more"],
]);

test("values are replaced by their names, the longest value first", () => {
  const r = new Redactor(secrets);
  assert.equal(r.text("a s3cr3t-value b"), "a [REDACTED:TOKEN] b");
  assert.equal(r.text("x s3cr3t-value-and-more y"), "x [REDACTED:LONG] y");
  assert.equal(r.text("pwpw"), "[REDACTED:SHORT][REDACTED:SHORT]");
  assert.equal(r.bytes(Buffer.from("é s3cr3t-value é")).toString("utf8"), "é [REDACTED:TOKEN] é");
  assert.deepEqual(r.deep({ a: ["s3cr3t-value"], b: { c: "pw", n: 3 }, d: null }), { a: ["[REDACTED:TOKEN]"], b: { c: "[REDACTED:SHORT]", n: 3 }, d: null });
});

test("errors come back redacted, still PyroErrors with their code", () => {
  const r = new Redactor(secrets);
  const error = r.error(new PyroError("agent_error", "failed near s3cr3t-value", { hint: "pw" })) as PyroError;
  assert.ok(error instanceof PyroError);
  assert.equal(error.code, "agent_error");
  assert.equal(error.message, "failed near [REDACTED:TOKEN]");
  assert.equal(error.hint, "[REDACTED:SHORT]");
});

test("a value split across chunks of a stream is still redacted", () => {
  const r = new Redactor(new Map([["TOKEN", "s3cr3t-value"]]));
  const out: Buffer[] = [];
  const stream = r.stream((chunk) => out.push(chunk));
  for (const piece of ["hello s3c", "r3t-va", "lue bye s", "3"]) stream.push(Buffer.from(piece));
  stream.flush();
  assert.equal(Buffer.concat(out).toString(), "hello [REDACTED:TOKEN] bye s3");
});

test("a truncated value at the end is redacted as if whole", () => {
  const r = new Redactor(new Map([["TOKEN", "s3cr3t-value"]]));
  assert.equal(r.cutTail(Buffer.from("out: s3cr3t-v")).toString(), "out: [REDACTED:TOKEN]");
  assert.equal(r.cutTail(Buffer.from("out: s")).toString(), "out: s");
});

test("a shell read window holds back a possible start of a value and replaces values that straddle the cursor", () => {
  const r = new Redactor(new Map([["TOKEN", "s3cr3t-value"]]));
  const raw = Buffer.from("abc s3cr3t-value def s3cr");
  const end = r.safeEnd(raw, 0);
  assert.equal(end, raw.length - 4);
  const first = redactWindow(r, raw, 0, end);
  assert.equal(first.text, "abc [REDACTED:TOKEN] def ");
  // The next read starts a little before the cursor; a value that began before it is still replaced.
  const again = Buffer.from("abc s3cr3t-value");
  assert.equal(redactWindow(r, again, 8, again.length).text, "[REDACTED:TOKEN]");
});

test("plain text drops escape sequences, control characters and rewound lines", () => {
  assert.equal(plainText("\x1b[1;32mgreen\x1b[0m text\r\n"), "green text\n");
  assert.equal(plainText("\x1b]0;title\x07prompt$ "), "prompt$ ");
  assert.equal(plainText("50%\r100%\n"), "100%\n");
  assert.equal(plainText("a\x07b\x08c"), "abc");
});

test("secrets are checked, names and all, and a file's last newline is dropped", async () => {
  const dir = await mkdtemp(join(tmpdir(), "pyro-secrets-"));
  try {
    await writeFile(join(dir, "token"), "from-file\n");
    const resolved = await resolveSecrets([{ name: "A", value: "x1" }, { name: "B", filePath: join(dir, "token") }]);
    assert.deepEqual([...resolved], [["A", "x1"], ["B", "from-file"]]);
    await assert.rejects(resolveSecrets([{ name: "bad-name", value: "x" }]), /letter or _/);
    await assert.rejects(resolveSecrets([{ name: "A", value: "" }]), /empty/);
    await assert.rejects(resolveSecrets([{ name: "A", value: "1" }, { name: "A", value: "2" }]), /twice/);
    await assert.rejects(resolveSecrets([{ name: "A", value: "1", filePath: "/x" }]), /exactly one/);
    await assert.rejects(resolveSecrets([{ name: "A", filePath: join(dir, "missing") }]), /not a readable file/);
    // The value never shows in an error.
    await assert.rejects(resolveSecrets([{ name: "A", value: "zzz\0" }]), (e: Error) => !e.message.includes("zzz"));

    await writeSecrets(dir, resolved);
    assert.equal((await stat(secretsPath(dir))).mode & 0o777, 0o600);
    assert.deepEqual(await readSecrets(dir), resolved);
    assert.deepEqual(resolveSecretEnv({ MY_TOKEN: "B" }, resolved), { MY_TOKEN: "B" });
    assert.throws(() => resolveSecretEnv({ MY_TOKEN: "C" }, resolved), /no secret "C"/);
    assert.throws(() => resolveSecretEnv({ "1X": "A" }, resolved), /not an environment variable name/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("readiness and publish specs are checked before anything starts", () => {
  assert.deepEqual(resolveReadiness({ type: "http", url: "http://127.0.0.1:8080/" }), { type: "http", url: "http://127.0.0.1:8080/", timeoutSeconds: 60 });
  assert.deepEqual(resolveReadiness({ type: "file", path: "ready.txt", timeoutSeconds: 5 }), { type: "file", path: "/workspace/ready.txt", timeoutSeconds: 5 });
  assert.throws(() => resolveReadiness({ type: "http", url: "file:///etc/passwd" }), /http:\/\//);
  assert.throws(() => resolveReadiness({ type: "tcp", port: 70000 }), /1 to 65535/);
  assert.throws(() => resolveReadiness({ type: "socket" }), /one of file, tcp, http, command/);
  assert.deepEqual(resolvePublish([{ guestPort: 80 }, { guestPort: 81, hostPort: 18081 }]), [{ guestPort: 80, hostPort: 0 }, { guestPort: 81, hostPort: 18081 }]);
  assert.throws(() => resolvePublish([{ guestPort: 80, hostPort: 22 }]), /1024 to 65535/);
  assert.throws(() => resolvePublish([{ guestPort: 80, hostPort: 18000 }, { guestPort: 81, hostPort: 18000 }]), /twice/);
});
