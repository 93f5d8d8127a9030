import { ErrorCode, InvalidArgumentError, PyroError } from "../errors.js";
import type { AgentSession } from "./client.js";

/**
 * Long-running work the agent owns (guest/PROTOCOL.md, agent 1.2): shells on
 * a PTY, named services, readiness probes, and the secrets file set. Replies
 * are checked here, as everything from a guest is.
 */

export type ShellSignal = "SIGINT" | "SIGTERM" | "SIGKILL" | "SIGHUP";

export interface GuestShellRead {
  /** Offset of the first byte returned (later than the cursor asked for when output was dropped). */
  start: number;
  nextCursor: number;
  droppedBytes: number;
  /** Bytes the shell has written in all. */
  end: number;
  idleMs: number;
  state: "running" | "exited";
  exitCode: number | null;
  signal: string | null;
  data: Buffer;
}

export interface GuestShell {
  shellId: string;
  pid: number;
  cols: number;
  rows: number;
  cwd: string;
  state: "running" | "exited";
  exitCode: number | null;
  signal: string | null;
  end: number;
  startedUnixMs: number;
}

export interface GuestService {
  name: string;
  command: string;
  pid: number;
  state: "running" | "exited";
  exitCode: number | null;
  signal: string | null;
  startedUnixMs: number;
  endedUnixMs: number | null;
  outputBytes: number;
}

export interface GuestLogs {
  data: Buffer;
  droppedBytes: number;
  totalBytes: number;
  truncated: boolean;
}

const SHELL_ID = /^sh-[0-9a-f]{12}$/;

function count(value: unknown): number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0 ? value : 0;
}

function nullableInt(value: unknown): number | null {
  return typeof value === "number" && Number.isSafeInteger(value) ? value : null;
}

function signalName(value: unknown): string | null {
  return typeof value === "string" && /^SIG[A-Z0-9]{1,10}$/.test(value) ? value : null;
}

function state(value: unknown): "running" | "exited" {
  return value === "running" ? "running" : "exited";
}

function badReply(what: string): PyroError {
  return new PyroError(ErrorCode.agentError, `the guest agent sent a malformed ${what}`);
}

function shellError(shellId: string | undefined): (code: string, message: string) => PyroError {
  return (code, message) => {
    switch (code) {
      case "not_found":
        return new PyroError(ErrorCode.shellNotFound, `the workspace has no shell ${shellId ?? ""}`.trim(), { details: { shellId } });
      case "shell_exited":
        return new PyroError(ErrorCode.vmNotRunning, `shell ${shellId ?? ""} has exited; read its last output, then close it and open a new one`, { hint: "open a new shell (openShell())" });
      default:
        return common(code, message, "the shell");
    }
  };
}

function serviceError(name: string | undefined): (code: string, message: string) => PyroError {
  return (code, message) => {
    switch (code) {
      case "not_found":
        return new PyroError(ErrorCode.serviceNotFound, `the workspace has no service ${JSON.stringify(name)}`, { details: { name } });
      case "already_exists":
        return new InvalidArgumentError("name", `a service named ${JSON.stringify(name)} is already running in this workspace`, "stop it first (stopService()), or pick another name");
      default:
        return common(code, message, `service ${JSON.stringify(name)}`);
    }
  };
}

function common(code: string, message: string, what: string): PyroError {
  switch (code) {
    case "secret_not_found":
      return new InvalidArgumentError("secretEnv", message);
    case "too_many":
      return new PyroError(ErrorCode.invalidArgument, message, { hint: "close shells or stop services you no longer need" });
    case "bad_request":
      return new InvalidArgumentError("request", message);
    case "exec_failed":
      return new InvalidArgumentError("cwd", `${what} could not start: ${message}`);
    default:
      return new PyroError(ErrorCode.agentError, `${what}: the guest agent failed (${code}): ${message}`, { details: { agentCode: code } });
  }
}

export async function putSecrets(session: AgentSession, secrets: ReadonlyMap<string, string>, deadline: number): Promise<void> {
  await session.request("secrets_put", {}, {
    payload: Buffer.from(JSON.stringify(Object.fromEntries(secrets))),
    deadline,
    // The message may quote what the guest saw; never a value, since the agent only names secrets.
    onError: (code, message) => common(code, message, "delivering secrets"),
  });
}

export async function openShell(
  session: AgentSession,
  options: { cwd?: string; cols: number; rows: number; env?: Record<string, string>; secretEnv?: Record<string, string> },
  deadline: number,
): Promise<{ shellId: string; pid: number }> {
  const fields: Record<string, unknown> = { cols: options.cols, rows: options.rows };
  if (options.cwd !== undefined) fields.cwd = options.cwd;
  if (options.env !== undefined) fields.env = options.env;
  if (options.secretEnv !== undefined) fields.secret_env = options.secretEnv;
  const { header } = await session.request("shell_open", fields, { deadline, onError: shellError(undefined) });
  if (typeof header.shell_id !== "string" || !SHELL_ID.test(header.shell_id)) throw badReply("shell_open reply");
  return { shellId: header.shell_id, pid: count(header.pid) };
}

export async function readShell(
  session: AgentSession,
  shellId: string,
  options: { cursor: number; maxBytes: number; waitForIdleMs?: number; waitMs?: number },
  deadline: number,
  signal?: AbortSignal,
): Promise<GuestShellRead> {
  const fields: Record<string, unknown> = { shell_id: shellId, cursor: options.cursor, max_bytes: options.maxBytes };
  if (options.waitForIdleMs !== undefined) fields.wait_for_idle_ms = options.waitForIdleMs;
  if (options.waitMs !== undefined) fields.wait_ms = options.waitMs;
  const { header, payload } = await session.request("shell_read", fields, { deadline, signal, onError: shellError(shellId) });
  const start = count(header.start);
  const nextCursor = count(header.next_cursor);
  // Offsets must describe the payload exactly; a guest that says otherwise is not believed.
  if (nextCursor - start !== payload.length || payload.length > options.maxBytes || count(header.end) < nextCursor) throw badReply("shell_read reply");
  return {
    start,
    nextCursor,
    droppedBytes: count(header.dropped_bytes),
    end: count(header.end),
    idleMs: count(header.idle_ms),
    state: state(header.state),
    exitCode: nullableInt(header.exit_code),
    signal: signalName(header.signal),
    data: payload,
  };
}

export async function writeShell(session: AgentSession, shellId: string, input: Buffer, deadline: number): Promise<void> {
  await session.request("shell_write", { shell_id: shellId }, { payload: input, deadline, onError: shellError(shellId) });
}

export async function resizeShell(session: AgentSession, shellId: string, cols: number, rows: number, deadline: number): Promise<void> {
  await session.request("shell_resize", { shell_id: shellId, cols, rows }, { deadline, onError: shellError(shellId) });
}

export async function signalShell(session: AgentSession, shellId: string, signal: ShellSignal, deadline: number): Promise<void> {
  await session.request("shell_signal", { shell_id: shellId, signal }, { deadline, onError: shellError(shellId) });
}

export async function closeShell(session: AgentSession, shellId: string, deadline: number): Promise<{ exitCode: number | null; signal: string | null }> {
  const { header } = await session.request("shell_close", { shell_id: shellId }, { deadline, onError: shellError(shellId) });
  return { exitCode: nullableInt(header.exit_code), signal: signalName(header.signal) };
}

export async function listShells(session: AgentSession, deadline: number): Promise<GuestShell[]> {
  const { header } = await session.request("shell_list", {}, { deadline, onError: shellError(undefined) });
  if (!Array.isArray(header.shells)) throw badReply("shell_list reply");
  return (header.shells as Record<string, unknown>[]).slice(0, 64).flatMap((s) =>
    typeof s === "object" && s !== null && typeof s.shell_id === "string" && SHELL_ID.test(s.shell_id)
      ? [{
          shellId: s.shell_id,
          pid: count(s.pid),
          cols: count(s.cols),
          rows: count(s.rows),
          cwd: typeof s.cwd === "string" ? s.cwd.slice(0, 4096) : "",
          state: state(s.state),
          exitCode: nullableInt(s.exit_code),
          signal: signalName(s.signal),
          end: count(s.end),
          startedUnixMs: count(s.started_unix_ms),
        }]
      : [],
  );
}

export async function startService(
  session: AgentSession,
  options: { name: string; command: string; cwd?: string; env?: Record<string, string>; secretEnv?: Record<string, string> },
  deadline: number,
): Promise<{ pid: number; startedUnixMs: number }> {
  const fields: Record<string, unknown> = { name: options.name, shell: options.command };
  if (options.cwd !== undefined) fields.cwd = options.cwd;
  if (options.env !== undefined) fields.env = options.env;
  if (options.secretEnv !== undefined) fields.secret_env = options.secretEnv;
  const { header } = await session.request("service_start", fields, { deadline, onError: serviceError(options.name) });
  return { pid: count(header.pid), startedUnixMs: count(header.started_unix_ms) };
}

export async function serviceStatus(session: AgentSession, name: string | undefined, deadline: number): Promise<GuestService[]> {
  const { header } = await session.request("service_status", name === undefined ? {} : { name }, { deadline, onError: serviceError(name) });
  if (!Array.isArray(header.services)) throw badReply("service_status reply");
  return (header.services as Record<string, unknown>[]).slice(0, 64).flatMap((s) =>
    typeof s === "object" && s !== null && typeof s.name === "string" && /^[a-z0-9][a-z0-9_.-]{0,62}$/.test(s.name)
      ? [{
          name: s.name,
          command: typeof s.command === "string" ? s.command.slice(0, 64 * 1024) : "",
          pid: count(s.pid),
          state: state(s.state),
          exitCode: nullableInt(s.exit_code),
          signal: signalName(s.signal),
          startedUnixMs: count(s.started_unix_ms),
          endedUnixMs: s.ended_unix_ms === undefined || s.ended_unix_ms === null ? null : count(s.ended_unix_ms),
          outputBytes: count(s.output_bytes),
        }]
      : [],
  );
}

export async function serviceLogs(session: AgentSession, name: string, options: { tailLines?: number; maxBytes: number }, deadline: number): Promise<GuestLogs> {
  const fields: Record<string, unknown> = { name, max_bytes: options.maxBytes };
  if (options.tailLines !== undefined) fields.tail_lines = options.tailLines;
  const { header, payload } = await session.request("service_logs", fields, { deadline, onError: serviceError(name) });
  if (payload.length > options.maxBytes) throw badReply("service_logs reply");
  return { data: payload, droppedBytes: count(header.dropped_bytes), totalBytes: count(header.total_bytes), truncated: header.truncated === true };
}

export async function stopService(session: AgentSession, name: string, graceMs: number, deadline: number): Promise<{ exitCode: number | null; signal: string | null }> {
  const { header } = await session.request("service_stop", { name, grace_ms: graceMs }, { deadline, onError: serviceError(name) });
  return { exitCode: nullableInt(header.exit_code), signal: signalName(header.signal) };
}

export async function removeService(session: AgentSession, name: string, deadline: number): Promise<void> {
  await session.request("service_remove", { name }, { deadline, onError: serviceError(name) });
}

export type ProbeSpec = { kind: "file"; path: string } | { kind: "tcp"; port: number } | { kind: "http"; url: string };

export async function probe(session: AgentSession, spec: ProbeSpec, deadline: number): Promise<{ ready: boolean; detail: string }> {
  const { header } = await session.request("probe", { ...spec }, { deadline, onError: (code, message) => common(code, message, "the readiness check") });
  return { ready: header.ready === true, detail: typeof header.detail === "string" ? header.detail.slice(0, 500) : "" };
}
