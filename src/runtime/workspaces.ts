import { randomBytes } from "node:crypto";
import { appendFile, copyFile, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { EXEC_GRACE_MS, type ExecHooks, type ExecOutcome } from "../agent/client.js";
import { checkSource, DEFAULT_SOURCE_LIMITS, resolveWorkspaceDest, tarStreamOf, type CheckedSource } from "../sources/tree.js";
import { extractInto, type PushCounts } from "../backends/hostCompat/extract.js";
import type { ResolvedVmOptions } from "./types.js";
import { Defaults } from "../config.js";
import { ErrorCode, InvalidArgumentError, PyroError } from "../errors.js";
import { clipHeadTail } from "../util/clip.js";
import { isErrno, pathExists } from "../util/fs.js";
import { networkPolicyOf, touched, type VmRecord, type WorkspaceFields } from "./store.js";
import { deleteRunningDiskSnapshot, listDiskSnapshots, offlineDiskSnapshot, snapshotRunningDisk, type DiskSnapshot } from "../backends/qemu/disk-snapshots.js";
import { vmFiles } from "../backends/qemu/vm.js";
import { recordBaseline, WorkspaceFiles, type WorkspaceEvent } from "./workspace-files.js";
import type { StartHooks } from "./types.js";
import type { VmManager } from "./vms.js";
import { putSecrets } from "../agent/workloads.js";
import { readSecrets, Redactor, resolveSecretEnv, secretsPath, writeSecrets } from "./secrets.js";
import { WorkspaceShells } from "./shells.js";
import { WorkspaceServices } from "./services.js";

export const WORKSPACE_PATH = "/workspace";
/**
 * Output kept per stream in a journal entry (its head and tail); the whole
 * output (up to maxOutputBytes, like the exec result) is kept beside it and
 * read back by asking for that one entry.
 */
export const JOURNAL_OUTPUT_BYTES = 16 * 1024;

export interface JournalEntry {
  sequence: number;
  command: string;
  exitCode: number;
  timedOut: boolean;
  durationMs: number;
  startedAt: string;
  finishedAt: string;
  stdout: string;
  stderr: string;
  /**
   * Whether the output shown is not all of it: the entry keeps 16 KiB per
   * stream (head and tail, a marker between) unless asked for alone, and
   * past 1 MiB output is dropped.
   */
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
}

export interface WorkspaceCreateRequest extends ResolvedVmOptions {
  name: string | null;
  labels: Record<string, string>;
  /** Absolute path of a directory or tar archive, or undefined for an empty workspace. */
  seedPath: string | undefined;
  /** Checked secrets (resolveSecrets), kept in their own file and delivered to the guest. */
  secrets?: ReadonlyMap<string, string>;
}

export interface PushOutcome {
  record: VmRecord;
  source: CheckedSource;
  dest: string;
  counts: PushCounts;
}

/**
 * Persistent workspaces: a VM whose /workspace starts from host content,
 * takes later pushes, and keeps a journal of every command run in it. The
 * workspace lives on the VM's own copy-on-write disk, for as long as the VM.
 */
export class WorkspaceManager {
  /** Files of running workspaces, without a shell. */
  readonly files: WorkspaceFiles;
  /** Interactive shells on a PTY in the guest. */
  readonly shells: WorkspaceShells;
  /** Named background commands, their readiness and published ports. */
  readonly services: WorkspaceServices;

  constructor(private readonly vms: VmManager) {
    this.files = new WorkspaceFiles(
      vms,
      async (id, event) => {
        await this.recordActivity(id, event);
      },
      (id) => this.redactor(id),
    );
    const context = {
      guest: (id: string) => this.guest(id),
      redactor: (id: string) => this.redactor(id),
      secretEnv: (id: string, secretEnv: unknown) => this.secretEnv(id, secretEnv),
      activity: async (id: string, event: WorkspaceEvent) => {
        await this.recordActivity(id, event);
      },
    };
    this.shells = new WorkspaceShells(vms, context);
    this.services = new WorkspaceServices(vms, context);
  }

  /** A running workspace with a guest (shells, services and secrets need one). */
  private async guest(id: string): Promise<VmRecord> {
    const record = await this.vms.requireRunning(id, "workspace");
    if (record.executionMode !== "guest") {
      throw new PyroError(ErrorCode.guestUnavailable, `workspace ${id} runs in host_compat mode, which has no guest for shells, services or secrets`, {
        hint: "use execWorkspace() in host_compat workspaces, or create the workspace with a guest",
      });
    }
    return record;
  }

  /** What hides the workspace's secret values in everything handed back (a no-op without secrets). */
  async redactor(id: string): Promise<Redactor> {
    return new Redactor(await readSecrets(this.vms.store.dir(id)));
  }

  /** Checks `secret_env` against the workspace's secrets. */
  async secretEnv(id: string, secretEnv: unknown): Promise<Record<string, string> | undefined> {
    if (secretEnv === undefined) return undefined;
    return resolveSecretEnv(secretEnv, await readSecrets(this.vms.store.dir(id)));
  }

  /** Hands the workspace's secrets to its guest (a tmpfs only root can read); again after every boot. */
  private async deliverSecrets(id: string, signal?: AbortSignal): Promise<void> {
    const secrets = await readSecrets(this.vms.store.dir(id));
    if (secrets.size === 0) return;
    const record = await this.guest(id);
    await this.vms.withSession(record, signal, (session) => putSecrets(session, secrets, Date.now() + 15_000));
  }

  private eventsPath(id: string): string {
    return join(this.vms.store.dir(id), "events.jsonl");
  }

  /** Marks activity (the time to live counts from it) and journals what changed, for the summary. */
  async recordActivity(id: string, event: WorkspaceEvent): Promise<VmRecord | undefined> {
    return this.vms.store.update(id, async (current) => {
      if (event.kind !== "touch") await this.appendEvent(id, event);
      return touched(current);
    });
  }

  private journalPath(id: string): string {
    return join(this.vms.store.dir(id), "journal.jsonl");
  }

  /** Where a command's whole output is kept when its journal entry holds only part of it. */
  private outputPath(id: string, sequence: number, stream: "stdout" | "stderr"): string {
    return join(this.vms.store.dir(id), "output", `${sequence}.${stream}`);
  }

  private workRoot(id: string): string {
    return join(this.vms.store.dir(id), "work");
  }

  /**
   * Creates, boots and seeds a workspace. The seed is checked completely
   * before anything is created; if anything fails afterwards the workspace
   * is deleted again, so a failed create leaves nothing behind.
   */
  async create(request: WorkspaceCreateRequest, hooks: StartHooks = {}): Promise<VmRecord> {
    const source = request.seedPath === undefined ? undefined : await checkSource(resolve(request.seedPath), DEFAULT_SOURCE_LIMITS, "seedPath");
    const workspace: WorkspaceFields = {
      name: request.name,
      labels: request.labels,
      seed: { mode: source?.mode ?? "empty", seedPath: source?.path ?? null },
      commandCount: 0,
      lastCommand: null,
      secretNames: [...(request.secrets?.keys() ?? [])].sort(),
    };
    const record = await this.vms.create(request, hooks, { kind: "workspace", workspace });
    try {
      await writeSecrets(this.vms.store.dir(record.vmId), request.secrets ?? new Map());
      const started = await this.vms.start(record.vmId, hooks, "workspace");
      if (request.secrets?.size) {
        hooks.onProgress?.({ phase: "secrets", message: `delivering ${request.secrets.size} secret${request.secrets.size === 1 ? "" : "s"} to the guest` });
        await this.deliverSecrets(record.vmId, hooks.signal);
      }
      const baseline = this.files.baseline(record.vmId).path;
      if (source) {
        hooks.onProgress?.({ phase: "seed", message: `copying ${source.entries} entries (${source.bytes} bytes) into ${WORKSPACE_PATH}` });
        // What the guest was sent is the baseline that diffs compare against, kept where the guest cannot change it.
        await this.copyIn(record.vmId, source, WORKSPACE_PATH, hooks.signal, undefined, started.executionMode === "guest" ? baseline : undefined);
      }
      if (started.executionMode === "guest") await this.takeSnapshot(started, BASELINE, hooks.signal);
      return await this.vms.status(record.vmId, "workspace");
    } catch (error) {
      await this.vms.delete(record.vmId).catch(() => undefined);
      throw error;
    }
  }

  /** Copies a host directory or archive into the running workspace, at /workspace or under it. */
  async push(id: string, sourcePath: string, options: { dest?: string; signal?: AbortSignal; timeoutSeconds?: number } = {}): Promise<PushOutcome> {
    const target = resolveWorkspaceDest(options.dest, WORKSPACE_PATH);
    await this.vms.requireRunning(id, "workspace");
    const source = await checkSource(resolve(sourcePath), DEFAULT_SOURCE_LIMITS, "sourcePath");
    await this.holdFor(id, options.timeoutSeconds ?? Defaults.pushTimeoutSeconds);
    const counts = await this.copyIn(id, source, target, options.signal, options.timeoutSeconds);
    const record = await this.recordActivity(id, { kind: "push", source: source.path, dest: target, files: counts.files, bytes: counts.bytes });
    return { record: record ?? (await this.vms.status(id, "workspace")), source, dest: target, counts };
  }

  /**
   * Keeps the workspace from expiring while an operation of up to `seconds`
   * runs (its time to live then counts from the operation's end, when it is
   * touched). The record is written only when it would expire sooner, which
   * a time to live longer than the operation's timeout never does.
   */
  private async holdFor(id: string, seconds: number): Promise<void> {
    await this.vms.store.update(id, (current) => {
      const until = Date.now() + seconds * 1000;
      return new Date(current.expiresAt).getTime() >= until ? current : { ...current, expiresAt: new Date(until).toISOString() };
    });
  }

  private async copyIn(
    id: string,
    source: CheckedSource,
    dest: string,
    signal: AbortSignal | undefined,
    timeoutSeconds: number = Defaults.pushTimeoutSeconds,
    baselinePath?: string,
  ): Promise<PushCounts> {
    const record = await this.vms.requireRunning(id, "workspace");
    if (record.executionMode === "host_compat") {
      const root = this.workRoot(id);
      return extractInto(root, root + dest.slice(WORKSPACE_PATH.length), source);
    }
    const deadline = Date.now() + timeoutSeconds * 1000;
    const stream = baselinePath ? recordBaseline(tarStreamOf(source), baselinePath) : tarStreamOf(source);
    return this.vms.withSession(record, signal, (session) => session.putTar(dest, stream, { ...limitsForAgent(), deadline, signal }), deadline);
  }

  /** Runs a command in /workspace and records it in the journal. Never deletes the workspace. */
  async exec(
    id: string,
    command: string,
    timeoutSeconds: number,
    hooks: ExecHooks = {},
    options: { secretEnv?: unknown } = {},
  ): Promise<{ record: VmRecord; outcome: ExecOutcome; sequence: number }> {
    const startedAt = new Date();
    const secretEnv = await this.secretEnv(id, options.secretEnv);
    const running = secretEnv ? await this.guest(id) : await this.vms.requireRunning(id, "workspace");
    await this.holdFor(id, timeoutSeconds + EXEC_GRACE_MS / 1000);
    const cwd = running.executionMode === "host_compat" ? undefined : WORKSPACE_PATH;
    const redactor = await this.redactor(id);
    // Output shown while it arrives is redacted too; a value split across chunks is held back until it is whole.
    const streams = redactor.empty || !hooks.onOutput ? undefined : {
      stdout: redactor.stream((chunk) => hooks.onOutput?.("stdout", chunk)),
      stderr: redactor.stream((chunk) => hooks.onOutput?.("stderr", chunk)),
    };
    const execHooks: ExecHooks = streams ? { ...hooks, onOutput: (stream, chunk) => streams[stream].push(chunk) } : hooks;
    const { outcome: raw } = await this.vms.exec(id, { command, timeoutSeconds, cwd, sync: true, secretEnv }, execHooks, "workspace");
    streams?.stdout.flush();
    streams?.stderr.flush();
    const outcome: ExecOutcome = redactor.empty ? raw : {
      ...raw,
      stdout: redactor.bytes(raw.stdoutTruncated ? redactor.cutTail(raw.stdout) : raw.stdout),
      stderr: redactor.bytes(raw.stderrTruncated ? redactor.cutTail(raw.stderr) : raw.stderr),
    };
    command = redactor.text(command);
    const finishedAt = new Date();
    // Count and journal under the VM's lock, so concurrent commands get distinct sequence numbers.
    let sequence = 0;
    const record = await this.vms.store.update(id, async (current) => {
      const fields = current.workspace ?? emptyFields();
      sequence = fields.commandCount + 1;
      const where = `the whole output is in the workspace's journal, sequence ${sequence}`;
      const stdout = clipHeadTail(outcome.stdout, JOURNAL_OUTPUT_BYTES, where);
      const stderr = clipHeadTail(outcome.stderr, JOURNAL_OUTPUT_BYTES, where);
      for (const [stream, clipped, data] of [["stdout", stdout.clipped, outcome.stdout], ["stderr", stderr.clipped, outcome.stderr]] as const) {
        if (!clipped) continue;
        await mkdir(join(this.vms.store.dir(id), "output"), { recursive: true, mode: 0o700 });
        await writeFile(this.outputPath(id, sequence, stream), data, { mode: 0o600 });
      }
      const entry: JournalEntry = {
        sequence,
        command,
        exitCode: outcome.exitCode,
        timedOut: outcome.timedOut,
        durationMs: outcome.durationMs,
        startedAt: startedAt.toISOString(),
        finishedAt: finishedAt.toISOString(),
        stdout: stdout.text,
        stderr: stderr.text,
        stdoutTruncated: outcome.stdoutTruncated || stdout.clipped,
        stderrTruncated: outcome.stderrTruncated || stderr.clipped,
      };
      await appendFile(this.journalPath(id), `${JSON.stringify(entry)}\n`, { mode: 0o600 });
      return {
        ...touched(current, finishedAt),
        workspace: { ...fields, commandCount: sequence, lastCommand: { command, exitCode: outcome.exitCode } },
      };
    });
    return { record: record ?? running, outcome, sequence };
  }

  /**
   * Every command run in the workspace, in order; or, with `sequence`, that
   * one command with its whole output (up to 1 MiB per stream).
   */
  async logs(id: string, sequence?: number): Promise<{ record: VmRecord; entries: JournalEntry[] }> {
    const record = await this.vms.status(id, "workspace");
    // A line cut short by a crash is skipped; the rest of the journal is still good.
    const entries = await this.readJsonLines<JournalEntry>(this.journalPath(id));
    if (sequence === undefined) return { record, entries: entries.sort((a, b) => a.sequence - b.sequence) };
    const entry = entries.find((e) => e.sequence === sequence);
    if (!entry) {
      throw new InvalidArgumentError("sequence", `no command ${sequence} in this workspace's journal (it has ${entries.length})`);
    }
    for (const stream of ["stdout", "stderr"] as const) {
      const whole = await readFile(this.outputPath(id, sequence, stream)).catch(() => undefined);
      if (!whole) continue;
      entry[stream] = whole.toString("utf8");
      // Still cut when the command itself produced more than was kept.
      entry[`${stream}Truncated`] = whole.length >= Defaults.maxOutputBytes;
    }
    return { record, entries: [entry] };
  }

  // ---- snapshots, stop/start with memory, fork ----

  private guestFiles(record: VmRecord): ReturnType<typeof vmFiles> {
    if (record.executionMode !== "guest") {
      throw new PyroError(ErrorCode.guestUnavailable, `workspace ${record.vmId} runs in host_compat mode, which has no disk to snapshot, no memory to save and nothing to fork`, {
        hint: "create the workspace with a guest for these",
      });
    }
    return vmFiles(this.vms.store.dir(record.vmId));
  }

  /** The workspace's disk snapshots, `baseline` (taken after the seed was copied in) first. */
  async snapshots(id: string): Promise<{ record: VmRecord; snapshots: DiskSnapshot[] }> {
    const record = await this.vms.status(id, "workspace");
    const files = this.guestFiles(record);
    const disk = (await pathExists(files.disk)) ? files.disk : undefined;
    const snapshots = disk ? await listDiskSnapshots(disk) : [];
    return { record, snapshots: snapshots.sort((a, b) => (a.name === BASELINE ? -1 : b.name === BASELINE ? 1 : a.createdAt.localeCompare(b.createdAt))) };
  }

  /**
   * Snapshots the workspace's disk under `name` (copy-on-write, inside its
   * disk file): what the guest wrote is flushed first, so the snapshot holds
   * everything acknowledged so far.
   */
  async snapshotCreate(id: string, name: string, signal?: AbortSignal): Promise<{ record: VmRecord; snapshot: DiskSnapshot }> {
    requireSnapshotName(name, true);
    const { record, snapshots } = await this.snapshots(id);
    if (snapshots.some((s) => s.name === name)) throw new InvalidArgumentError("snapshotName", `the workspace already has a snapshot named ${name}`, "pick another name, or delete the old one first");
    await this.takeSnapshot(record, name, signal);
    const made = (await listDiskSnapshots(this.guestFiles(record).disk)).find((s) => s.name === name);
    if (!made) throw new PyroError(ErrorCode.stateError, `the snapshot ${name} was not recorded in the disk`);
    await this.recordActivity(id, { kind: "snapshot_create", snapshot: name });
    return { record, snapshot: made };
  }

  private async takeSnapshot(record: VmRecord, name: string, signal?: AbortSignal): Promise<void> {
    const files = this.guestFiles(record);
    if (record.state === "started") {
      await this.vms.withSession(record, signal, (session) => session.sync());
      await snapshotRunningDisk(files.qmp, name, Date.now() + 60_000);
    } else if (record.state === "stopped" || record.state === "failed") {
      await offlineDiskSnapshot(files.disk, "create", name);
    } else {
      throw new PyroError(ErrorCode.vmNotRunning, `workspace ${record.vmId} is ${record.state}`, { hint: "wait until it is started or stopped" });
    }
  }

  async snapshotDelete(id: string, name: string): Promise<VmRecord> {
    requireSnapshotName(name, false);
    if (name === BASELINE) throw new InvalidArgumentError("snapshotName", "the baseline snapshot cannot be deleted: resetWorkspace() and diffWorkspace() rely on it");
    const { record, snapshots } = await this.snapshots(id);
    if (!snapshots.some((s) => s.name === name)) throw snapshotMissing(id, name, snapshots);
    const files = this.guestFiles(record);
    if (record.state === "started") await deleteRunningDiskSnapshot(files.qmp, name, Date.now() + 60_000);
    else await offlineDiskSnapshot(files.disk, "delete", name);
    await this.recordActivity(id, { kind: "snapshot_delete", snapshot: name });
    return record;
  }

  /**
   * Returns the whole workspace to a snapshot: its QEMU is stopped, the disk
   * reverted, saved memory dropped, and the VM boots cold from the snapshot.
   */
  async reset(id: string, snapshot: string = BASELINE, hooks: StartHooks = {}): Promise<VmRecord> {
    requireSnapshotName(snapshot, false);
    const { record, snapshots } = await this.snapshots(id);
    if (!snapshots.some((s) => s.name === snapshot)) throw snapshotMissing(id, snapshot, snapshots);
    const files = this.guestFiles(record);
    hooks.onProgress?.({ phase: "reset", message: `returning workspace ${id} to snapshot ${snapshot}` });
    await this.vms.stop(id, "workspace");
    await rm(this.vms.memoryStatePath(id), { force: true });
    await offlineDiskSnapshot(files.disk, "apply", snapshot);
    // The guest boots cold: no shell or service survives, and the secrets go in again.
    await this.services.forget(id);
    const started = await this.vms.start(id, hooks, "workspace");
    await this.deliverSecrets(id, hooks.signal);
    await this.recordActivity(id, { kind: "reset", snapshot });
    return (await this.vms.store.read(id)) ?? started;
  }

  /** Saves the running workspace whole (memory, devices, disk) and frees its QEMU; `start` resumes it where it was. */
  async stop(id: string, hooks: StartHooks = {}): Promise<VmRecord> {
    const record = await this.vms.status(id, "workspace");
    this.guestFiles(record);
    const stopped = await this.vms.suspend(id, "workspace", hooks);
    if (record.state === "started") await this.recordActivity(id, { kind: "stop", how: "memory saved" });
    return stopped;
  }

  /** Resumes a stopped workspace with its saved memory, or boots it cold from its disk when there is none (a crash, a host reboot). */
  async start(id: string, hooks: StartHooks = {}): Promise<VmRecord> {
    const before = await this.vms.status(id, "workspace");
    const started = await this.vms.start(id, hooks, "workspace");
    if (before.state !== "started") {
      await this.deliverSecrets(id, hooks.signal);
      // Services that kept running (resumed with memory) get their host ports back.
      await this.services.restore(id);
      await this.recordActivity(id, { kind: "start", how: started.bootMode === "resume" ? "resumed with its memory" : "booted cold from its disk" });
    }
    return (await this.vms.store.read(id)) ?? started;
  }

  /**
   * Makes `count` new workspaces from a running one: each starts from its
   * memory and disk as they are now (copy-on-write), with its own identity,
   * entropy and clock. The parent pauses while it is saved and then runs on.
   */
  async fork(id: string, count: number, names: (string | null)[], hooks: StartHooks = {}): Promise<VmRecord[]> {
    const parent = await this.vms.requireRunning(id, "workspace");
    this.guestFiles(parent);
    // Named by this process, so the reaper can tell a fork in progress from one whose process died.
    const dir = join(this.vms.store.stateDir, "forks", `${id}-${process.pid}-${randomBytes(4).toString("hex")}`);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const children: VmRecord[] = [];
    try {
      const saved = await this.vms.saveCopy(id, "workspace", dir, hooks);
      const fields = parent.workspace ?? emptyFields();
      for (let i = 0; i < count; i++) {
        const child = await this.vms.create(
          {
            environment: parent.environment,
            vcpuCount: parent.vcpuCount,
            memMib: parent.memMib,
            ttlSeconds: parent.ttlSeconds,
            network: parent.network,
            networkPolicy: networkPolicyOf(parent),
            allowHosts: parent.allowHosts ?? [],
            allowHostCompat: false,
          },
          hooks,
          { kind: "workspace", workspace: { ...fields, name: names[i] ?? null, commandCount: 0, lastCommand: null } },
        );
        children.push(child);
        // The parent's baseline is the children's too (none when it was created empty).
        await copyFile(this.files.baseline(id).path, this.files.baseline(child.vmId).path).catch((error: unknown) => {
          if (!isErrno(error, "ENOENT")) throw error;
        });
        // A fork's memory holds the parent's secrets already; it needs them to redact as well.
        await copyFile(secretsPath(this.vms.store.dir(id)), secretsPath(this.vms.store.dir(child.vmId))).catch((error: unknown) => {
          if (!isErrno(error, "ENOENT")) throw error;
        });
      }
      hooks.onProgress?.({ phase: "fork", message: `starting ${count} fork${count === 1 ? "" : "s"} of workspace ${id}` });
      const started = await Promise.allSettled(children.map((child) => this.vms.start(child.vmId, hooks, "workspace", saved)));
      const failure = started.find((r): r is PromiseRejectedResult => r.status === "rejected");
      if (failure) throw failure.reason;
      for (const child of children) await this.appendEvent(child.vmId, { kind: "forked", how: `from workspace ${id}` });
      await this.recordActivity(id, { kind: "fork", children: children.map((c) => c.vmId) });
      return Promise.all(children.map((child) => this.vms.status(child.vmId, "workspace")));
    } catch (error) {
      for (const child of children) await this.vms.delete(child.vmId).catch(() => undefined);
      throw error;
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /** Workspaces, those carrying all of `labels` when given. */
  async list(labels: Record<string, string> = {}): Promise<VmRecord[]> {
    const wanted = Object.entries(labels);
    return (await this.vms.list()).filter((record) => record.kind === "workspace" && wanted.every(([key, value]) => record.workspace?.labels[key] === value));
  }

  /**
   * Changes a workspace's name, labels and time to live. A new ttl counts
   * from now, like any other activity.
   */
  async update(id: string, change: { name?: string | null; labels?: Record<string, string>; clearLabels?: string[]; ttlSeconds?: number }): Promise<VmRecord> {
    await this.vms.status(id, "workspace");
    const record = await this.vms.store.update(id, (current) => {
      const fields = current.workspace ?? emptyFields();
      const labels = { ...fields.labels };
      for (const key of change.clearLabels ?? []) delete labels[key];
      Object.assign(labels, change.labels ?? {});
      if (Object.keys(labels).length > 32) throw new InvalidArgumentError("labels", "a workspace has at most 32 labels");
      const next = { ...current, ttlSeconds: change.ttlSeconds ?? current.ttlSeconds, workspace: { ...fields, labels, name: change.name === undefined ? fields.name : change.name } };
      return touched(next);
    });
    if (!record) throw await this.vms.store.missing(id, "workspace");
    await this.appendEvent(id, { kind: "update", ...(change.name !== undefined ? { name: change.name } : {}), ...(change.ttlSeconds !== undefined ? { ttlSeconds: change.ttlSeconds } : {}) });
    return record;
  }

  private async appendEvent(id: string, event: Record<string, unknown>): Promise<void> {
    await appendFile(this.eventsPath(id), `${JSON.stringify({ at: new Date().toISOString(), ...event })}\n`, { mode: 0o600 });
  }

  private async readJsonLines<T>(path: string): Promise<T[]> {
    const text = await readFile(path, "utf8").catch((error: unknown) => {
      if (isErrno(error, "ENOENT")) return "";
      throw error;
    });
    const out: T[] = [];
    for (const line of text.split("\n")) {
      if (!line.trim()) continue;
      try {
        out.push(JSON.parse(line) as T);
      } catch {
        // A line cut short by a crash.
      }
    }
    return out;
  }

  /**
   * What happened in the workspace since it was created (or last reset):
   * the commands with their exit codes, the file changes made through pyro,
   * and which files differ from the baseline now. Compact, for a model.
   */
  async summary(id: string, signal?: AbortSignal): Promise<WorkspaceSummary> {
    const record = await this.vms.status(id, "workspace");
    const events = await this.readJsonLines<{ at: string; kind: string } & Record<string, unknown>>(this.eventsPath(id));
    const resets = events.filter((e) => e.kind === "reset");
    const since = resets.length ? (resets[resets.length - 1]?.at ?? record.createdAt) : record.createdAt;
    const journal = (await this.readJsonLines<JournalEntry>(this.journalPath(id))).filter((e) => e.startedAt >= since);
    const commands = journal.map((e) => ({ sequence: e.sequence, command: e.command.slice(0, 200), exitCode: e.exitCode, timedOut: e.timedOut }));
    const shown = commands.slice(-SUMMARY_COMMANDS);
    const later = events.filter((e) => e.at >= since && e.kind !== "touch");
    const eventLines = later.slice(-SUMMARY_EVENTS).map((e) => ({ at: e.at, kind: e.kind, detail: describeEvent(e) }));
    let changes: WorkspaceSummary["changes"] = null;
    let services: WorkspaceSummary["services"] = null;
    if (record.state === "started" && record.executionMode === "guest") {
      const diff = await this.files.diff(id, 1, signal, { namesOnly: true });
      const pick = (status: string) => diff.files.filter((f) => f.status === status).map((f) => f.path);
      changes = { added: pick("added"), modified: pick("modified"), deleted: pick("deleted") };
      services = (await this.services.status(id, undefined, signal)).map((s) => ({
        name: s.name,
        state: s.state,
        exitCode: s.exitCode,
        publishedPorts: s.publishedPorts.map((p) => ({ guestPort: p.guestPort, hostPort: p.hostPort })),
      }));
    }
    const failed = journal.filter((e) => e.exitCode !== 0).length;
    const lines = [
      `${commands.length} command${commands.length === 1 ? "" : "s"} since ${since}${failed ? ` (${failed} failed)` : ""}`,
      ...(commands.length > shown.length ? [`  … ${commands.length - shown.length} earlier commands (workspace_logs has them)`] : []),
      ...shown.map((c) => `  #${c.sequence} exit ${c.exitCode}${c.timedOut ? " (timed out)" : ""}: ${c.command}`),
      ...eventLines.map((e) => `${e.at} ${e.kind}: ${e.detail}`),
      changes
        ? `files changed from the baseline: ${changes.added.length} added, ${changes.modified.length} modified, ${changes.deleted.length} deleted` +
          [...changes.added.map((p) => `\n  A ${p}`), ...changes.modified.map((p) => `\n  M ${p}`), ...changes.deleted.map((p) => `\n  D ${p}`)].slice(0, SUMMARY_FILES).join("")
        : `files: not compared (the workspace is ${record.state})`,
      ...(services?.length
        ? [
            `services: ${services
              .map((s) => `${s.name} (${s.state === "exited" ? `exited ${s.exitCode ?? "?"}` : s.state}${s.publishedPorts.map((p) => `, 127.0.0.1:${p.hostPort} → ${p.guestPort}`).join("")})`)
              .join(", ")}`,
          ]
        : []),
    ];
    return { record, since, commandCount: commands.length, failedCommands: failed, commands: shown, events: eventLines, changes, services, text: lines.join("\n") };
  }
}

/** The snapshot every workspace gets once its seed is in: what workspace_reset returns to by default. */
export const BASELINE = "baseline";
const SNAPSHOT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

function requireSnapshotName(name: string, creating: boolean): void {
  if (typeof name !== "string" || !SNAPSHOT_NAME.test(name)) {
    throw new InvalidArgumentError("snapshotName", "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit");
  }
  if (creating && name === BASELINE) throw new InvalidArgumentError("snapshotName", "baseline is the snapshot taken at creation; pick another name");
}

function snapshotMissing(id: string, name: string, snapshots: DiskSnapshot[]): PyroError {
  return new PyroError(ErrorCode.snapshotNotFound, `workspace ${id} has no snapshot named ${name} (it has: ${snapshots.map((s) => s.name).join(", ") || "none"})`, {
    details: { snapshot: name },
  });
}

const SUMMARY_COMMANDS = 50;
const SUMMARY_EVENTS = 50;
const SUMMARY_FILES = 200;

export interface WorkspaceSummary {
  record: VmRecord;
  /** Creation, or the last reset. */
  since: string;
  commandCount: number;
  failedCommands: number;
  /** The latest 50 commands. */
  commands: { sequence: number; command: string; exitCode: number; timedOut: boolean }[];
  /** File writes, patches, pushes, exports, snapshots, resets, stops and starts (the latest 50). */
  events: { at: string; kind: string; detail: string }[];
  /** Files that differ from the baseline now; null when the workspace is not running. */
  changes: { added: string[]; modified: string[]; deleted: string[] } | null;
  /** Its services and their published ports; null when the workspace is not running. */
  services: { name: string; state: "running" | "ready" | "exited"; exitCode: number | null; publishedPorts: { guestPort: number; hostPort: number }[] }[] | null;
  /** All of it as a few lines of text. */
  text: string;
}

function describeEvent(e: Record<string, unknown>): string {
  const s = (v: unknown) => (typeof v === "string" || typeof v === "number" ? String(v) : "");
  switch (e.kind) {
    case "file_write":
      return `${s(e.path)} (${s(e.bytes)} bytes)`;
    case "patch":
      return Array.isArray(e.files) ? e.files.map(s).join(", ") : "";
    case "push":
      return `${s(e.source)} → ${s(e.dest)} (${s(e.files)} files, ${s(e.bytes)} bytes)`;
    case "export":
      return `${s(e.path)} → ${s(e.outputPath)}`;
    case "snapshot_create":
    case "snapshot_delete":
    case "reset":
      return s(e.snapshot);
    case "fork":
      return Array.isArray(e.children) ? e.children.map(s).join(", ") : "";
    case "shell_open":
    case "shell_close":
      return s(e.shellId);
    case "service_start":
      return `${s(e.service)}${Array.isArray(e.publishedPorts) && e.publishedPorts.length ? ` (published ${e.publishedPorts.map((p: { guestPort?: unknown; hostPort?: unknown }) => `127.0.0.1:${s(p.hostPort)} → ${s(p.guestPort)}`).join(", ")})` : ""}`;
    case "service_stop":
      return s(e.service);
    case "update":
      return [e.name !== undefined ? `name ${JSON.stringify(e.name)}` : "", e.ttlSeconds !== undefined ? `ttl ${s(e.ttlSeconds)} s` : ""].filter(Boolean).join(", ") || "labels";
    default:
      return s(e.how);
  }
}

function emptyFields(): WorkspaceFields {
  return { name: null, labels: {}, seed: { mode: "empty", seedPath: null }, commandCount: 0, lastCommand: null };
}

function limitsForAgent(): { maxBytes: number; maxEntries: number } {
  return { maxBytes: DEFAULT_SOURCE_LIMITS.maxBytes, maxEntries: DEFAULT_SOURCE_LIMITS.maxEntries };
}
