import { availableParallelism, totalmem } from "node:os";
import { Defaults, Limits } from "../config.js";
import { requireEnvironment } from "../environments/catalog.js";
import { ErrorCode, InvalidArgumentError, PyroError } from "../errors.js";
import { resolveNetwork, type NetworkPolicy } from "../network/policy.js";
import type { ResolvedVmOptions } from "../runtime/types.js";
import { isId } from "../util/ids.js";
import type { ExecOptions, VmOptions } from "./types.js";

export type { ResolvedVmOptions };

export interface ResolvedExecOptions {
  command: string;
  timeoutSeconds: number;
}

/** What a whole-number option takes, when the caller had nothing better to say: its range, in the option's own name. */
function rangeHint(field: string, min: number, max: number): string {
  return `\`${field}\` takes a whole number from ${min} to ${max}`;
}

function integer(field: string, value: unknown, min: number, max: number, hint?: string | ((value: number) => string)): number {
  const hintFor = (n: number) => (typeof hint === "function" ? hint(n) : (hint ?? rangeHint(field, min, max)));
  if (typeof value !== "number" || !Number.isInteger(value)) throw new InvalidArgumentError(field, `must be a whole number, got ${JSON.stringify(value)}`, hintFor(min));
  if (value < min || value > max) throw new InvalidArgumentError(field, `must be between ${min} and ${max}, got ${value}`, hintFor(value));
  return value;
}

function boolean(field: string, value: unknown): boolean {
  if (typeof value !== "boolean") throw new InvalidArgumentError(field, `must be true or false, got ${JSON.stringify(value)}`, `give \`${field}\` as true or false`);
  return value;
}

/** Applies the contract's defaults and refuses bad values before anything starts. */
export function resolveVmOptions(options: VmOptions): ResolvedVmOptions {
  if (typeof options !== "object" || options === null) throw new InvalidArgumentError("options", "must be an object");
  if (typeof options.environment !== "string" || options.environment === "") {
    throw new InvalidArgumentError("environment", "is required", "e.g. debian:12; listEnvironments() shows them all");
  }
  requireEnvironment(options.environment);
  const cores = availableParallelism();
  const hostMib = Math.floor(totalmem() / (1024 * 1024));
  return {
    environment: options.environment,
    vcpuCount: integer("vcpuCount", options.vcpuCount ?? Defaults.vcpuCount, 1, cores, `this host has ${cores} cores: give 1 to ${cores} (default ${Defaults.vcpuCount})`),
    memMib: integer("memMib", options.memMib ?? Defaults.memMib, Limits.minMemMib, Math.min(Limits.maxMemMib, hostMib), (n) =>
      n < Limits.minMemMib
        ? `guests need at least ${Limits.minMemMib} MiB (default ${Defaults.memMib})`
        : `at most ${Math.min(Limits.maxMemMib, hostMib)} MiB${hostMib < Limits.maxMemMib ? `, the memory this host has` : ""} (default ${Defaults.memMib})`,
    ),
    ttlSeconds: integer("ttlSeconds", options.ttlSeconds ?? Defaults.ttlSeconds, 1, Limits.maxTtlSeconds, ttlHint),
    ...networkOf(options),
    allowHostCompat: boolean("allowHostCompat", options.allowHostCompat ?? Defaults.allowHostCompat),
  };
}

function networkOf(options: VmOptions): { network: boolean; networkPolicy: NetworkPolicy; allowHosts: string[] } {
  const settings = resolveNetwork(options, { network: "network", networkPolicy: "networkPolicy", allowHosts: "allowHosts" });
  return { network: settings.policy !== "off", networkPolicy: settings.policy, allowHosts: settings.allowHosts };
}

export function resolveExecOptions(options: ExecOptions): ResolvedExecOptions {
  if (typeof options !== "object" || options === null) throw new InvalidArgumentError("options", "must be an object");
  if (typeof options.command !== "string" || options.command.trim() === "") {
    throw new InvalidArgumentError("command", "must be a non-empty command line", 'e.g. "git --version"');
  }
  if (Buffer.byteLength(options.command) > Limits.maxCommandBytes) {
    throw new InvalidArgumentError("command", `is longer than ${Limits.maxCommandBytes} bytes`, "put long scripts in a file in the workspace instead");
  }
  if (options.command.includes("\0")) throw new InvalidArgumentError("command", "must not contain NUL bytes");
  return {
    command: options.command,
    timeoutSeconds: integer("timeoutSeconds", options.timeoutSeconds ?? Defaults.timeoutSeconds, 1, Limits.maxTimeoutSeconds, timeoutHint("timeoutSeconds")),
  };
}

function timeoutHint(field: string): string {
  return `\`${field}\` takes whole seconds from 1 to ${Limits.maxTimeoutSeconds} (a day); the default is ${Defaults.timeoutSeconds}`;
}

const ttlHint = `\`ttlSeconds\` takes whole seconds from 1 to ${Limits.maxTtlSeconds} (${Limits.maxTtlSeconds / 86400} days); the default is ${Defaults.ttlSeconds}`;

/** A timeout in whole seconds, from 1 to a day. */
export function requireTimeout(field: string, value: unknown): number {
  return integer(field, value, 1, Limits.maxTimeoutSeconds, timeoutHint(field));
}

/** A journal sequence number: a whole number from 1. */
export function requireSequence(value: unknown): number {
  return integer("sequence", value, 1, Number.MAX_SAFE_INTEGER);
}

/** A non-empty string argument (an environment name, a host path). */
export function requireString(field: string, value: unknown): string {
  if (typeof value !== "string" || value === "") throw new InvalidArgumentError(field, "is required");
  return value;
}

/**
 * A VM or workspace id as `newId` makes them: 12 lowercase hex digits. Ids
 * become directory names, so anything else is refused before a file is touched.
 */
export function requireId(field: string, value: unknown): string {
  if (!isId(value)) {
    throw new InvalidArgumentError(field, `must be an id of 12 lowercase hex digits, got ${JSON.stringify(value)}`, idHint(field));
  }
  return value;
}

function idHint(field: string): string {
  return field === "workspaceId" ? "use an id that createWorkspace() returned (listWorkspaces() shows the live ones)" : "use an id that createVm() returned (listVms() shows the live ones)";
}

const LABEL_KEY = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** No control characters (C0, DEL, C1) and no bidirectional overrides, which could make a listing lie. */
function printable(text: string): boolean {
  return [...text].every((c) => {
    const code = c.codePointAt(0)!;
    return code >= 0x20 && !(code >= 0x7f && code <= 0x9f) && !(code >= 0x202a && code <= 0x202e) && !(code >= 0x2066 && code <= 0x2069) && code !== 0x200e && code !== 0x200f;
  });
}

const NAME_HINT = "a `name` is a short label for people, at most 64 printable characters, e.g. \"api-tests\"; put longer notes in `labels`";
const LABELS_HINT = 'give `labels` as {"key": "value"}: at most 32, keys of letters, digits, ".", "_" or "-" (up to 63), values up to 256 printable characters';

/** Workspace name and labels: short, printable, so listings stay readable. */
export function resolveWorkspaceMeta(options: { name?: unknown; labels?: unknown }): { name: string | null; labels: Record<string, string> } {
  let name: string | null = null;
  if (options.name !== undefined) {
    if (typeof options.name !== "string" || options.name.trim() === "") throw new InvalidArgumentError("name", "must be a non-empty string", NAME_HINT);
    if (options.name.length > 64 || !printable(options.name)) {
      throw new InvalidArgumentError("name", `must be at most 64 printable characters, got ${options.name.length}${printable(options.name) ? "" : " with control characters"}`, NAME_HINT);
    }
    name = options.name;
  }
  const labels: Record<string, string> = {};
  if (options.labels !== undefined) {
    if (typeof options.labels !== "object" || options.labels === null || Array.isArray(options.labels)) throw new InvalidArgumentError("labels", "must be an object of strings", LABELS_HINT);
    const entries = Object.entries(options.labels as Record<string, unknown>);
    if (entries.length > 32) throw new InvalidArgumentError("labels", `at most 32 labels, got ${entries.length}`, LABELS_HINT);
    for (const [key, value] of entries) {
      if (!LABEL_KEY.test(key)) throw new InvalidArgumentError("labels", `key "${key}" must be letters, digits, ".", "_" or "-", at most 63 characters`, LABELS_HINT);
      if (typeof value !== "string" || value.length > 256 || !printable(value)) {
        throw new InvalidArgumentError("labels", `value of "${key}" must be a printable string of at most 256 characters`, LABELS_HINT);
      }
      labels[key] = value;
    }
  }
  return { name, labels };
}

/** A workspace_update's changes, checked; names and labels follow resolveWorkspaceMeta's rules. */
export function resolveWorkspaceUpdate(options: { name?: unknown; labels?: unknown; clearLabels?: unknown; ttlSeconds?: unknown }): {
  name?: string | null;
  labels?: Record<string, string>;
  clearLabels?: string[];
  ttlSeconds?: number;
} {
  const out: { name?: string | null; labels?: Record<string, string>; clearLabels?: string[]; ttlSeconds?: number } = {};
  if (options.name === null) out.name = null;
  else if (options.name !== undefined) out.name = resolveWorkspaceMeta({ name: options.name }).name;
  if (options.labels !== undefined) out.labels = resolveWorkspaceMeta({ labels: options.labels }).labels;
  if (options.clearLabels !== undefined) {
    if (!Array.isArray(options.clearLabels) || options.clearLabels.some((k) => typeof k !== "string")) throw new InvalidArgumentError("clearLabels", "must be a list of label keys", 'e.g. ["owner"]: the keys of labels to remove');
    out.clearLabels = options.clearLabels as string[];
  }
  if (options.ttlSeconds !== undefined) out.ttlSeconds = integer("ttlSeconds", options.ttlSeconds, 1, Limits.maxTtlSeconds, ttlHint);
  if (Object.keys(out).length === 0) throw new PyroError(ErrorCode.invalidArgument, "nothing to change", { hint: "give `name`, `labels`, `clearLabels` or `ttlSeconds`" });
  return out;
}

/** How many forks one call makes: 1 to 8. */
export function requireCount(value: unknown): number {
  return integer("count", value, 1, 8, "fork at most 8 at once; each is a whole VM");
}
