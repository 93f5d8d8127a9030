import { readFile, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { InvalidArgumentError, PyroError } from "../errors.js";
import { isErrno, writeJsonAtomic } from "../util/fs.js";

/** A secret as a caller gives it: its value, or a host file holding it. */
export type SecretSpec = { name: string; value: string } | { name: string; filePath: string };

/** Secret names: what an environment variable name may be, so `secret_env` reads naturally. */
export const SECRET_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
export const MAX_SECRETS = 64;
export const MAX_SECRET_BYTES = 64 * 1024;

/** The file beside a workspace's record that holds its secrets, 0600, nothing else in it. */
export function secretsPath(dir: string): string {
  return join(dir, "secrets.json");
}

/**
 * Checks the secrets of a create request and reads those given as files.
 * Messages name the secret, never its value.
 */
export async function resolveSecrets(specs: unknown): Promise<Map<string, string>> {
  const secrets = new Map<string, string>();
  if (specs === undefined) return secrets;
  if (!Array.isArray(specs)) throw new InvalidArgumentError("secrets", "must be a list of { name, value } or { name, filePath }");
  if (specs.length > MAX_SECRETS) throw new InvalidArgumentError("secrets", `at most ${MAX_SECRETS} secrets per workspace`);
  for (const [index, spec] of specs.entries()) {
    const where = `secrets[${index}]`;
    if (typeof spec !== "object" || spec === null) throw new InvalidArgumentError(where, "must be { name, value } or { name, filePath }");
    const { name, value, filePath } = spec as { name?: unknown; value?: unknown; filePath?: unknown };
    if (typeof name !== "string" || !SECRET_NAME.test(name)) {
      throw new InvalidArgumentError(`${where}.name`, "must be a letter or _ followed by letters, digits or _ (at most 64), like an environment variable name", "name it like an environment variable, e.g. API_TOKEN");
    }
    if (secrets.has(name)) throw new InvalidArgumentError(`${where}.name`, `secret ${name} is given twice`, "give each secret once, each under its own name");
    if ((value === undefined) === (filePath === undefined)) throw new InvalidArgumentError(where, `secret ${name} needs exactly one of value or filePath`);
    let text: string;
    if (value !== undefined) {
      if (typeof value !== "string") throw new InvalidArgumentError(`${where}.value`, `the value of secret ${name} must be a string`);
      text = value;
    } else {
      const fileHint = `name a regular file on this host that pyro can read; its content is the secret (one trailing newline dropped, at most ${MAX_SECRET_BYTES / 1024} KiB)`;
      if (typeof filePath !== "string" || filePath === "") throw new InvalidArgumentError(`${where}.filePath`, `secret ${name}: the path of its file is empty`, fileHint);
      const path = resolve(filePath);
      const info = await stat(path).catch(() => undefined);
      if (!info?.isFile()) throw new InvalidArgumentError(`${where}.filePath`, `secret ${name}: ${JSON.stringify(path)} is not a readable file`, fileHint);
      if (info.size > MAX_SECRET_BYTES) throw new InvalidArgumentError(`${where}.filePath`, `secret ${name}: ${JSON.stringify(path)} is over ${MAX_SECRET_BYTES} bytes`, fileHint);
      text = await readFile(path, "utf8");
      // A file written by an editor ends with a newline that is not part of the secret.
      if (text.endsWith("\r\n")) text = text.slice(0, -2);
      else if (text.endsWith("\n")) text = text.slice(0, -1);
    }
    const valueHint = `a secret is text of 1 byte to ${MAX_SECRET_BYTES / 1024} KiB, without NUL bytes`;
    if (text === "") throw new InvalidArgumentError(where, `secret ${name} is empty`, valueHint);
    if (text.includes("\0")) throw new InvalidArgumentError(where, `secret ${name} contains a NUL byte`, valueHint);
    if (Buffer.byteLength(text) > MAX_SECRET_BYTES) throw new InvalidArgumentError(where, `secret ${name} is over ${MAX_SECRET_BYTES} bytes`, valueHint);
    secrets.set(name, text);
  }
  return secrets;
}

/** Checks `secret_env` ({ ENV_NAME: SECRET_NAME }) against the workspace's secrets. */
export function resolveSecretEnv(secretEnv: unknown, secrets: ReadonlyMap<string, string>, argument = "secretEnv"): Record<string, string> | undefined {
  if (secretEnv === undefined) return undefined;
  if (typeof secretEnv !== "object" || secretEnv === null || Array.isArray(secretEnv)) {
    throw new InvalidArgumentError(argument, "must be an object mapping environment variable names to secret names");
  }
  const env: Record<string, string> = {};
  for (const [envName, secretName] of Object.entries(secretEnv)) {
    if (!SECRET_NAME.test(envName)) throw new InvalidArgumentError(argument, `${JSON.stringify(envName)} is not an environment variable name`);
    if (typeof secretName !== "string" || !secrets.has(secretName)) {
      const known = [...secrets.keys()];
      throw new InvalidArgumentError(argument, `${envName}: this workspace has no secret ${JSON.stringify(secretName)} (${known.length ? `it has ${known.join(", ")}` : "it has none; give secrets when creating it"})`);
    }
    env[envName] = secretName;
  }
  return Object.keys(env).length ? env : undefined;
}

export async function writeSecrets(dir: string, secrets: ReadonlyMap<string, string>): Promise<void> {
  if (secrets.size === 0) return;
  await writeJsonAtomic(secretsPath(dir), Object.fromEntries(secrets), 0o600);
}

export async function readSecrets(dir: string): Promise<Map<string, string>> {
  let text: string;
  try {
    text = await readFile(secretsPath(dir), "utf8");
  } catch (error) {
    if (isErrno(error, "ENOENT")) return new Map();
    throw error;
  }
  const parsed = JSON.parse(text) as Record<string, unknown>;
  return new Map(Object.entries(parsed).filter((entry): entry is [string, string] => typeof entry[1] === "string"));
}

const marker = (name: string): string => `[REDACTED:${name}]`;

/**
 * Replaces secret values with `[REDACTED:NAME]` in what pyro hands back.
 * Matching is on the values' bytes; longer values first, so a secret that
 * contains another is redacted as itself.
 */
export class Redactor {
  private readonly secrets: { name: string; value: string; bytes: string }[];
  /** Bytes a value can span minus one: how much context a chunk boundary needs. */
  readonly overlap: number;

  constructor(secrets: ReadonlyMap<string, string>) {
    this.secrets = [...secrets]
      .map(([name, value]) => ({ name, value, bytes: Buffer.from(value, "utf8").toString("latin1") }))
      .sort((a, b) => b.bytes.length - a.bytes.length);
    this.overlap = Math.max(0, ...this.secrets.map((s) => s.bytes.length - 1));
  }

  get empty(): boolean {
    return this.secrets.length === 0;
  }

  text(text: string): string {
    let out = text;
    for (const secret of this.secrets) if (out.includes(secret.value)) out = out.split(secret.value).join(marker(secret.name));
    return out;
  }

  bytes(data: Buffer): Buffer {
    if (this.empty) return data;
    let raw = data.toString("latin1");
    let changed = false;
    for (const secret of this.secrets) {
      if (!raw.includes(secret.bytes)) continue;
      raw = raw.split(secret.bytes).join(marker(secret.name));
      changed = true;
    }
    return changed ? Buffer.from(raw, "latin1") : data;
  }

  /** Where secret values occur in `data`, in order, not overlapping (a longer value wins at one position). */
  matches(data: Buffer): { start: number; end: number; name: string }[] {
    const raw = data.toString("latin1");
    const found: { start: number; end: number; name: string }[] = [];
    for (const secret of this.secrets) {
      for (let at = raw.indexOf(secret.bytes); at >= 0; at = raw.indexOf(secret.bytes, at + 1)) {
        found.push({ start: at, end: at + secret.bytes.length, name: secret.name });
      }
    }
    found.sort((a, b) => a.start - b.start || b.end - a.end);
    const kept: typeof found = [];
    for (const match of found) if (kept.length === 0 || match.start >= kept[kept.length - 1]!.end) kept.push(match);
    return kept;
  }

  /** Every string (and Buffer) inside a result, redacted; the shape is kept. */
  deep<T>(value: T): T {
    if (this.empty) return value;
    const walk = (v: unknown): unknown => {
      if (typeof v === "string") return this.text(v);
      if (Buffer.isBuffer(v)) return this.bytes(v);
      if (Array.isArray(v)) return v.map(walk);
      if (v && typeof v === "object" && Object.getPrototypeOf(v) === Object.prototype) {
        return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
      }
      return v;
    };
    return walk(value) as T;
  }

  /** An error with its message and hint redacted (a guest's error text can quote anything). */
  error(error: unknown): unknown {
    if (this.empty) return error;
    if (error instanceof PyroError) {
      const message = this.text(error.message);
      const hint = this.text(error.hint);
      if (message === error.message && hint === error.hint) return error;
      const copy = Object.create(Object.getPrototypeOf(error) as object) as PyroError;
      Object.assign(copy, error, { message, hint, details: error.details === undefined ? undefined : this.deep(error.details), stack: `${error.name}: ${message}` });
      return copy;
    }
    if (error instanceof Error) {
      const message = this.text(error.message);
      if (message === error.message) return error;
      return new Error(message);
    }
    return error;
  }

  /**
   * Where output that is still arriving can safely end: the start of a tail
   * that could be the beginning of a secret value (held back until more
   * output shows whether it is one), or `raw.length`.
   */
  safeEnd(raw: Buffer, from = 0): number {
    const text = raw.toString("latin1");
    let end = text.length;
    for (const secret of this.secrets) {
      const max = Math.min(secret.bytes.length - 1, text.length - from);
      for (let length = max; length >= 1; length--) {
        if (text.endsWith(secret.bytes.slice(0, length))) {
          end = Math.min(end, text.length - length);
          break;
        }
      }
    }
    return end;
  }

  /** A trailing piece of a value cut short by truncation, redacted like a whole one. */
  cutTail(data: Buffer): Buffer {
    if (this.empty) return data;
    const end = this.safeEnd(data);
    if (end === data.length) return data;
    const tail = data.subarray(end).toString("latin1");
    const secret = this.secrets.find((s) => tail.length >= Math.min(3, s.bytes.length) && s.bytes.startsWith(tail));
    return secret ? Buffer.concat([data.subarray(0, end), Buffer.from(marker(secret.name))]) : data;
  }

  /**
   * Redacts a stream handed over in chunks (progress output): values split
   * across chunks are caught by holding back a possible start of a value
   * until the next chunk, or `flush`.
   */
  stream(emit: (chunk: Buffer) => void): { push(chunk: Buffer): void; flush(): void } {
    let pending: Buffer = Buffer.alloc(0);
    return {
      push: (chunk) => {
        const data = this.bytes(Buffer.concat([pending, chunk]));
        const end = this.safeEnd(data);
        pending = data.subarray(end);
        if (end > 0) emit(data.subarray(0, end));
      },
      flush: () => {
        if (pending.length) emit(this.cutTail(pending));
        pending = Buffer.alloc(0);
      },
    };
  }
}

export const NO_SECRETS = new Redactor(new Map());
