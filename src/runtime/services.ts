import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import type { AgentSession } from "../agent/client.js";
import { probe, removeService, serviceLogs, serviceStatus, startService, stopService, type GuestService, type ProbeSpec } from "../agent/workloads.js";
import { ErrorCode, InvalidArgumentError, PyroError } from "../errors.js";
import { PUBLISH_HOST, startForwarder } from "../network/forwarder.js";
import { resolveWorkspaceDest } from "../sources/tree.js";
import { readJsonIfExists, writeJsonAtomic } from "../util/fs.js";
import { isSameProcessAlive, killAndWait } from "../util/proc.js";
import { livePublished } from "./helpers.js";
import type { Redactor } from "./secrets.js";
import { networkPolicyOf, type PublishedPort, type VmRecord } from "./store.js";
import type { VmManager } from "./vms.js";
import type { WorkspaceEvent } from "./workspace-files.js";

/**
 * Services: named background commands in a workspace (a dev server, a
 * database) that outlive the call that started them. The agent owns the
 * processes and their output; the host keeps what it needs beside the
 * record (services.json: the command as redacted, readiness, published
 * ports, never a secret's value) and the forwarders of published ports.
 */

export const SERVICE_NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/;
export const DEFAULT_READY_TIMEOUT_SECONDS = 60;
export const MAX_READY_TIMEOUT_SECONDS = 600;
export const MAX_PUBLISHED_PER_SERVICE = 8;
const PROBE_INTERVAL_MS = 200;
const CALL_MS = 15_000;
const LOG_TAIL_LINES = 20;
const MAX_LOG_BYTES = 256 * 1024;

export type Readiness =
  | { type: "file"; path: string; timeoutSeconds: number }
  | { type: "tcp"; port: number; timeoutSeconds: number }
  | { type: "http"; url: string; timeoutSeconds: number }
  | { type: "command"; command: string; timeoutSeconds: number };

export interface ServiceStartRequest {
  name: string;
  command: string;
  cwd?: string;
  readiness?: unknown;
  publish?: unknown;
  secretEnv?: unknown;
}

export interface PublishedPortInfo {
  guestPort: number;
  hostPort: number;
  host: typeof PUBLISH_HOST;
}

export interface ServiceInfo {
  name: string;
  command: string;
  cwd: string;
  /** `ready` once its readiness check passed (or at start, without one); `exited` when its process ended. */
  state: "running" | "ready" | "exited";
  pid: number | null;
  exitCode: number | null;
  signal: string | null;
  startedAt: string | null;
  readyAt: string | null;
  endedAt: string | null;
  readiness: Readiness | null;
  publishedPorts: PublishedPortInfo[];
  /** Why it is not running, when pyro knows more than the exit status (lost in a restart without memory). */
  detail: string | null;
}

interface ServiceRecord {
  name: string;
  command: string;
  cwd: string;
  readiness: Readiness | null;
  publish: { guestPort: number; hostPort: number }[];
  secretEnvNames: string[];
  bootId: string;
  startedAt: string;
  readyAt: string | null;
}

function intIn(field: string, value: unknown, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new InvalidArgumentError(field, `must be a whole number from ${min} to ${max}`);
  }
  return value;
}

export function requireServiceName(value: unknown): string {
  if (typeof value !== "string" || !SERVICE_NAME.test(value)) {
    throw new InvalidArgumentError("name", "a service name is 1-63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit (e.g. web, db-1)");
  }
  return value;
}

export function resolveReadiness(value: unknown): Readiness | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== "object" || Array.isArray(value)) throw new InvalidArgumentError("readiness", "must be an object like { type: 'http', url: 'http://127.0.0.1:8080/' }");
  const spec = value as Record<string, unknown>;
  const timeoutSeconds = spec.timeoutSeconds === undefined ? DEFAULT_READY_TIMEOUT_SECONDS : intIn("readiness.timeoutSeconds", spec.timeoutSeconds, 1, MAX_READY_TIMEOUT_SECONDS);
  switch (spec.type) {
    case "file": {
      if (typeof spec.path !== "string" || spec.path === "" || spec.path.includes("\0")) throw new InvalidArgumentError("readiness.path", "must be a path in the guest (relative ones are under /workspace)");
      const path = spec.path.startsWith("/") ? spec.path : resolveWorkspaceDest(spec.path, "/workspace", "readiness.path");
      if (path.split("/").includes("..")) throw new InvalidArgumentError("readiness.path", "must not contain '..'");
      return { type: "file", path, timeoutSeconds };
    }
    case "tcp":
      return { type: "tcp", port: intIn("readiness.port", spec.port, 1, 65535), timeoutSeconds };
    case "http": {
      if (typeof spec.url !== "string" || !/^http:\/\/[^\s/]+(\/\S*)?$/.test(spec.url) || spec.url.length > 2048) {
        throw new InvalidArgumentError("readiness.url", "must be an http:// URL the guest can fetch, e.g. http://127.0.0.1:8080/health");
      }
      return { type: "http", url: spec.url, timeoutSeconds };
    }
    case "command":
      if (typeof spec.command !== "string" || spec.command.trim() === "") throw new InvalidArgumentError("readiness.command", "must be a shell command that exits 0 when the service is ready");
      return { type: "command", command: spec.command, timeoutSeconds };
    default:
      throw new InvalidArgumentError("readiness.type", "must be one of file, tcp, http, command");
  }
}

export function resolvePublish(value: unknown): { guestPort: number; hostPort: number }[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw new InvalidArgumentError("publish", "must be a list like [{ guestPort: 8080 }] or [{ guestPort: 8080, hostPort: 18080 }]");
  if (value.length > MAX_PUBLISHED_PER_SERVICE) throw new InvalidArgumentError("publish", `at most ${MAX_PUBLISHED_PER_SERVICE} ports per service`);
  const seen = new Set<number>();
  return value.map((entry: unknown, index) => {
    if (typeof entry !== "object" || entry === null) throw new InvalidArgumentError(`publish[${index}]`, "must be { guestPort, hostPort? }");
    const spec = entry as Record<string, unknown>;
    const guestPort = intIn(`publish[${index}].guestPort`, spec.guestPort, 1, 65535);
    const hostPort = spec.hostPort === undefined || spec.hostPort === null ? 0 : intIn(`publish[${index}].hostPort`, spec.hostPort, 1024, 65535);
    if (hostPort !== 0 && seen.has(hostPort)) throw new InvalidArgumentError(`publish[${index}].hostPort`, `${hostPort} is given twice`);
    seen.add(hostPort);
    return { guestPort, hostPort };
  });
}

export class WorkspaceServices {
  constructor(
    private readonly vms: VmManager,
    private readonly context: {
      guest(id: string): Promise<VmRecord>;
      redactor(id: string): Promise<Redactor>;
      secretEnv(id: string, secretEnv: unknown): Promise<Record<string, string> | undefined>;
      activity(id: string, event: WorkspaceEvent): Promise<void>;
    },
  ) {}

  private recordsPath(id: string): string {
    return join(this.vms.store.dir(id), "services.json");
  }

  private async records(id: string): Promise<Record<string, ServiceRecord>> {
    return (await readJsonIfExists<Record<string, ServiceRecord>>(this.recordsPath(id)).catch(() => undefined)) ?? {};
  }

  private async saveRecord(id: string, record: ServiceRecord | { name: string; remove: true }): Promise<void> {
    await this.vms.store.update(id, async (current) => {
      const all = await this.records(id);
      if ("remove" in record) delete all[record.name];
      else all[record.name] = record;
      await writeJsonAtomic(this.recordsPath(id), all);
      return current;
    });
  }

  /**
   * Starts a service and waits for its readiness check; with `publish`,
   * then binds its host ports. A service that exits or never gets ready is
   * stopped, and the error carries its last output.
   */
  async start(id: string, request: ServiceStartRequest, signal?: AbortSignal): Promise<ServiceInfo> {
    const name = requireServiceName(request.name);
    if (typeof request.command !== "string" || request.command.trim() === "") throw new InvalidArgumentError("command", "must be the shell command that runs the service");
    const cwd = resolveWorkspaceDest(request.cwd, "/workspace", "cwd");
    const readiness = resolveReadiness(request.readiness);
    const publish = resolvePublish(request.publish);
    const secretEnv = await this.context.secretEnv(id, request.secretEnv);
    const record = await this.context.guest(id);
    if (publish.length && networkPolicyOf(record) !== "egress+published-ports") {
      throw new InvalidArgumentError("publish", `publishing ports needs the network policy egress+published-ports; workspace ${id} has ${networkPolicyOf(record)}`, "create the workspace with `networkPolicy` egress+published-ports");
    }
    const redactor = await this.context.redactor(id);
    const readyBy = Date.now() + (readiness?.timeoutSeconds ?? 0) * 1000;
    await this.vms.withSession(
      record,
      signal,
      async (session) => {
        const started = await startService(session, { name, command: request.command, cwd, secretEnv }, Date.now() + CALL_MS);
        const bootId = session.hello?.bootId ?? "";
        await this.saveRecord(id, {
          name,
          command: redactor.text(request.command),
          cwd,
          readiness: readiness ? redactor.deep(readiness) : null,
          publish: [],
          secretEnvNames: Object.values(secretEnv ?? {}),
          bootId,
          startedAt: new Date(started.startedUnixMs || Date.now()).toISOString(),
          readyAt: null,
        });
        if (readiness) await this.waitReady(session, name, readiness, secretEnv, readyBy, redactor, signal);
      },
      Math.max(readyBy, Date.now()) + CALL_MS * 2,
    );
    let ports: { guestPort: number; hostPort: number }[] = [];
    if (publish.length) {
      try {
        ports = await this.publish(id, name, publish);
      } catch (error) {
        await this.vms.withSession(record, undefined, (session) => stopService(session, name, 3000, Date.now() + CALL_MS)).catch(() => undefined);
        throw error;
      }
    }
    const stored = (await this.records(id))[name];
    if (stored) await this.saveRecord(id, { ...stored, readyAt: new Date().toISOString(), publish: ports });
    await this.context.activity(id, { kind: "service_start", service: name, ready: true, publishedPorts: ports });
    return (await this.status(id, name, signal))[0]!;
  }

  private async waitReady(
    session: AgentSession,
    name: string,
    readiness: Readiness,
    secretEnv: Record<string, string> | undefined,
    deadline: number,
    redactor: Redactor,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    let last = "";
    for (;;) {
      if (signal?.aborted) throw new PyroError(ErrorCode.cancelled, `cancelled while waiting for service ${name} to get ready`);
      const [service] = await serviceStatus(session, name, Date.now() + CALL_MS);
      if (!service || service.state === "exited") {
        const how = service?.signal ? `was killed by ${service.signal}` : `exited with code ${service?.exitCode ?? "?"}`;
        throw await this.failed(session, name, `service ${name} ${how} before it was ready`, redactor, service?.exitCode ?? undefined);
      }
      if (readiness.type === "command") {
        const result = await session.exec({ shell: readiness.command, cwd: "/workspace", timeoutMs: 10_000, maxOutputBytes: 4096, secretEnv }, { signal });
        if (result.exitCode === 0) return;
        last = `the readiness command exited with ${result.exitCode}`;
      } else {
        const spec: ProbeSpec = readiness.type === "file" ? { kind: "file", path: readiness.path } : readiness.type === "tcp" ? { kind: "tcp", port: readiness.port } : { kind: "http", url: readiness.url };
        const result = await probe(session, spec, Date.now() + CALL_MS);
        if (result.ready) return;
        last = result.detail;
      }
      if (Date.now() >= deadline) {
        await stopService(session, name, 3000, Date.now() + CALL_MS).catch(() => undefined);
        throw await this.failed(session, name, `service ${name} was not ready after ${readiness.timeoutSeconds} s (${describeReadiness(readiness)}: ${last || "not yet"}); it was stopped`, redactor);
      }
      await new Promise((r) => setTimeout(r, PROBE_INTERVAL_MS));
    }
  }

  /** `exitCode` when the service exited on its own: front ends explain some (126, 127) from how the command was given. */
  private async failed(session: AgentSession, name: string, message: string, redactor: Redactor, exitCode?: number): Promise<PyroError> {
    const logs = await serviceLogs(session, name, { tailLines: LOG_TAIL_LINES, maxBytes: 16 * 1024 }, Date.now() + CALL_MS).catch(() => undefined);
    const tail = logs ? redactor.bytes(logs.data).toString("utf8").trimEnd() : "";
    return new PyroError(ErrorCode.serviceFailed, `${message}${tail ? `; its last output:\n${tail}` : "; it wrote no output"}`, {
      details: { service: name, logTail: tail, ...(exitCode === undefined ? {} : { exitCode }) },
    });
  }

  /** Binds host ports for a ready service (a forwarder process) and records them. */
  private async publish(id: string, name: string, ports: { guestPort: number; hostPort: number }[]): Promise<{ guestPort: number; hostPort: number }[]> {
    const record = await this.context.guest(id);
    if (!record.qemu) throw new PyroError(ErrorCode.vmNotRunning, `workspace ${id} is not running`);
    const forwarder = await startForwarder(
      { dir: this.vms.store.dir(id), qemu: record.qemu, ports },
      join(this.vms.store.dir(id), "forwarders.log"),
      Date.now() + 10_000,
    );
    const entries: PublishedPort[] = forwarder.ports.map((port) => ({ service: name, ...port, forwarder: { pid: forwarder.pid, startTime: forwarder.startTime } }));
    let kept = false;
    await this.vms.store.update(id, (current) => {
      // The VM may have stopped meanwhile; its ports are then not to be kept.
      if (current.state !== "started") return current;
      kept = true;
      return { ...current, published: [...(current.published ?? []).filter((p) => p.service !== name), ...entries] };
    });
    if (!kept) {
      await killAndWait(forwarder.pid, forwarder.startTime);
      throw new PyroError(ErrorCode.vmNotRunning, `workspace ${id} stopped while its ports were being published`);
    }
    if (!(await isSameProcessAlive(forwarder.pid, forwarder.startTime))) {
      const log = await readFile(join(this.vms.store.dir(id), "forwarders.log"), "utf8").catch(() => "");
      await this.unpublish(id, name);
      throw new PyroError(ErrorCode.internal, `the forwarder of service ${name}'s ports exited right after it started${log.trim() ? `: ${log.trim().split("\n").slice(-5).join("\n")}` : ""}`);
    }
    return forwarder.ports;
  }

  private async unpublish(id: string, name: string): Promise<void> {
    let gone: PublishedPort[] = [];
    await this.vms.store.update(id, (current) => {
      gone = (current.published ?? []).filter((p) => p.service === name);
      return gone.length ? { ...current, published: (current.published ?? []).filter((p) => p.service !== name) } : current;
    });
    const forwarders = new Map(gone.map((p) => [p.forwarder.pid, p.forwarder]));
    await Promise.all([...forwarders.values()].map((f) => killAndWait(f.pid, f.startTime)));
  }

  /** Every service (or the one named), as the guest reports it, with what the host knows. */
  async status(id: string, name?: string, signal?: AbortSignal): Promise<ServiceInfo[]> {
    if (name !== undefined) requireServiceName(name);
    const record = await this.context.guest(id);
    const records = await this.records(id);
    const { guest, bootId } = await this.vms.withSession(record, signal, async (session) => {
      const all = await serviceStatus(session, undefined, Date.now() + CALL_MS);
      return { guest: all, bootId: session.hello?.bootId ?? "" };
    });
    const current = await this.vms.store.read(id);
    const published = current ? await livePublished(current) : [];
    const byName = new Map<string, GuestService>(guest.map((s) => [s.name, s]));
    const names = [...new Set([...byName.keys(), ...Object.keys(records)])].filter((n) => name === undefined || n === name).sort();
    if (name !== undefined && names.length === 0) {
      throw new PyroError(ErrorCode.serviceNotFound, `workspace ${id} has no service ${JSON.stringify(name)}`);
    }
    const redactor = await this.context.redactor(id);
    return redactor.deep(
      names.map((n): ServiceInfo => {
        const g = byName.get(n);
        const r = records[n];
        const ports = published.filter((p) => p.service === n).map((p): PublishedPortInfo => ({ guestPort: p.guestPort, hostPort: p.hostPort, host: PUBLISH_HOST }));
        if (!g) {
          return {
            name: n,
            command: r?.command ?? "",
            cwd: r?.cwd ?? "/workspace",
            state: "exited",
            pid: null,
            exitCode: null,
            signal: null,
            startedAt: r?.startedAt ?? null,
            readyAt: r?.readyAt ?? null,
            endedAt: null,
            readiness: r?.readiness ?? null,
            publishedPorts: [],
            detail: r && r.bootId !== bootId ? "lost: the workspace restarted without its memory (reset, or a cold start after a crash); start it again" : "not known to the guest",
          };
        }
        const running = g.state === "running";
        return {
          name: n,
          command: r?.command ?? g.command,
          cwd: r?.cwd ?? "/workspace",
          state: running ? (r?.readyAt || !r?.readiness ? "ready" : "running") : "exited",
          pid: g.pid || null,
          exitCode: g.exitCode,
          signal: g.signal,
          startedAt: new Date(g.startedUnixMs).toISOString(),
          readyAt: r?.readyAt ?? null,
          endedAt: g.endedUnixMs ? new Date(g.endedUnixMs).toISOString() : null,
          readiness: r?.readiness ?? null,
          publishedPorts: running ? ports : [],
          detail: null,
        };
      }),
    );
  }

  async logs(id: string, name: string, tailLines: number | undefined, signal?: AbortSignal): Promise<{ name: string; output: string; truncated: boolean; droppedBytes: number }> {
    requireServiceName(name);
    const lines = tailLines === undefined ? undefined : intIn("tailLines", tailLines, 1, 100_000);
    const record = await this.context.guest(id);
    const logs = await this.vms.withSession(record, signal, (session) => serviceLogs(session, name, { tailLines: lines ?? 200, maxBytes: MAX_LOG_BYTES }, Date.now() + CALL_MS));
    const redactor = await this.context.redactor(id);
    return { name, output: redactor.bytes(redactor.cutTail(logs.data)).toString("utf8"), truncated: logs.truncated || logs.droppedBytes > 0, droppedBytes: logs.droppedBytes };
  }

  /** Stops a service (TERM, then KILL after the grace period) and releases its host ports. */
  async stop(id: string, name: string, signal?: AbortSignal): Promise<ServiceInfo> {
    requireServiceName(name);
    const record = await this.context.guest(id);
    await this.unpublish(id, name);
    await this.vms.withSession(record, signal, (session) => stopService(session, name, 3000, Date.now() + CALL_MS));
    await this.context.activity(id, { kind: "service_stop", service: name });
    return (await this.status(id, name, signal))[0]!;
  }

  /** Forgets a stopped service's record and output (a running one is stopped first). */
  async remove(id: string, name: string, signal?: AbortSignal): Promise<void> {
    requireServiceName(name);
    const record = await this.context.guest(id);
    await this.unpublish(id, name);
    await this.vms.withSession(record, signal, async (session) => {
      await stopService(session, name, 3000, Date.now() + CALL_MS).catch(() => undefined);
      await removeService(session, name, Date.now() + CALL_MS).catch(() => undefined);
    });
    await this.saveRecord(id, { name, remove: true });
  }

  /**
   * After the workspace started again: services that kept running (it
   * resumed with its memory) get their host ports back, the same numbers
   * when still free. After a start without memory there is nothing to
   * publish; their records say they were lost.
   */
  async restore(id: string): Promise<void> {
    const records = await this.records(id);
    const wanted = Object.values(records).filter((r) => r.publish.length > 0);
    if (wanted.length === 0) return;
    const statuses = await this.status(id).catch(() => []);
    for (const service of statuses) {
      const r = records[service.name];
      if (!r || r.publish.length === 0 || service.state === "exited") continue;
      const ports = await this.publish(id, service.name, r.publish).catch(() => this.publish(id, service.name, r.publish.map((p) => ({ ...p, hostPort: 0 }))));
      await this.saveRecord(id, { ...r, publish: ports });
    }
  }

  /** Forgets every service record (a reset rebooted the guest without them). */
  async forget(id: string): Promise<void> {
    await rm(this.recordsPath(id), { force: true });
  }
}

function describeReadiness(readiness: Readiness): string {
  switch (readiness.type) {
    case "file":
      return `waiting for ${readiness.path}`;
    case "tcp":
      return `waiting for port ${readiness.port}`;
    case "http":
      return `waiting for ${readiness.url}`;
    case "command":
      return "waiting for the readiness command";
  }
}
