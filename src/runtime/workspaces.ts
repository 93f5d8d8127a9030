import { appendFile, readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { ExecHooks, ExecOutcome } from "../agent/client.js";
import { checkSource, DEFAULT_SOURCE_LIMITS, resolveWorkspaceDest, tarStreamOf, type CheckedSource } from "../sources/tree.js";
import { extractInto, type PushCounts } from "../backends/hostCompat/extract.js";
import type { ResolvedVmOptions } from "./types.js";
import { isErrno } from "../util/fs.js";
import type { VmRecord, WorkspaceFields } from "./store.js";
import type { StartHooks } from "./types.js";
import type { VmManager } from "./vms.js";

export const WORKSPACE_PATH = "/workspace";
/** Output kept per stream in the journal; the exec result itself keeps up to maxOutputBytes. */
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
  /** The journal keeps at most 16 KiB per stream; these say when more was produced. */
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
}

export interface WorkspaceCreateRequest extends ResolvedVmOptions {
  name: string | null;
  labels: Record<string, string>;
  /** Absolute path of a directory or tar archive, or undefined for an empty workspace. */
  seedPath: string | undefined;
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
  constructor(private readonly vms: VmManager) {}

  private journalPath(id: string): string {
    return join(this.vms.store.dir(id), "journal.jsonl");
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
    };
    const record = await this.vms.create(request, hooks, { kind: "workspace", workspace });
    try {
      await this.vms.start(record.vmId, hooks, "workspace");
      if (source) {
        hooks.onProgress?.({ phase: "seed", message: `copying ${source.entries} entries (${source.bytes} bytes) into ${WORKSPACE_PATH}` });
        await this.copyIn(record.vmId, source, WORKSPACE_PATH, hooks.signal);
      }
      return await this.vms.status(record.vmId, "workspace");
    } catch (error) {
      await this.vms.delete(record.vmId).catch(() => undefined);
      throw error;
    }
  }

  /** Copies a host directory or archive into the running workspace, at /workspace or under it. */
  async push(id: string, sourcePath: string, dest: string | undefined, signal?: AbortSignal): Promise<PushOutcome> {
    const target = resolveWorkspaceDest(dest, WORKSPACE_PATH);
    await this.vms.requireRunning(id, "workspace");
    const source = await checkSource(resolve(sourcePath), DEFAULT_SOURCE_LIMITS, "sourcePath");
    const counts = await this.copyIn(id, source, target, signal);
    const record = await this.vms.store.update(id, (current) => ({ ...current, lastActivityAt: new Date().toISOString() }));
    return { record: record ?? (await this.vms.status(id, "workspace")), source, dest: target, counts };
  }

  private async copyIn(id: string, source: CheckedSource, dest: string, signal: AbortSignal | undefined): Promise<PushCounts> {
    const record = await this.vms.requireRunning(id, "workspace");
    if (record.executionMode === "host_compat") {
      const root = this.workRoot(id);
      return extractInto(root, root + dest.slice(WORKSPACE_PATH.length), source);
    }
    return this.vms.withSession(record, signal, (session) =>
      session.putTar(dest, tarStreamOf(source), { ...limitsForAgent(), deadline: Date.now() + 10 * 60_000, signal }),
    );
  }

  /** Runs a command in /workspace and records it in the journal. Never deletes the workspace. */
  async exec(id: string, command: string, timeoutSeconds: number, hooks: ExecHooks = {}): Promise<{ record: VmRecord; outcome: ExecOutcome; sequence: number }> {
    const startedAt = new Date();
    const running = await this.vms.requireRunning(id, "workspace");
    const cwd = running.executionMode === "host_compat" ? undefined : WORKSPACE_PATH;
    const { outcome } = await this.vms.exec(id, { command, timeoutSeconds, cwd }, hooks, "workspace");
    const finishedAt = new Date();
    // Count and journal under the VM's lock, so concurrent commands get distinct sequence numbers.
    let sequence = 0;
    const record = await this.vms.store.update(id, async (current) => {
      const fields = current.workspace ?? emptyFields();
      sequence = fields.commandCount + 1;
      const entry: JournalEntry = {
        sequence,
        command,
        exitCode: outcome.exitCode,
        timedOut: outcome.timedOut,
        durationMs: outcome.durationMs,
        startedAt: startedAt.toISOString(),
        finishedAt: finishedAt.toISOString(),
        stdout: clip(outcome.stdout),
        stderr: clip(outcome.stderr),
        stdoutTruncated: outcome.stdoutTruncated || outcome.stdout.length > JOURNAL_OUTPUT_BYTES,
        stderrTruncated: outcome.stderrTruncated || outcome.stderr.length > JOURNAL_OUTPUT_BYTES,
      };
      await appendFile(this.journalPath(id), `${JSON.stringify(entry)}\n`, { mode: 0o600 });
      return {
        ...current,
        lastActivityAt: finishedAt.toISOString(),
        workspace: { ...fields, commandCount: sequence, lastCommand: { command, exitCode: outcome.exitCode } },
      };
    });
    return { record: record ?? running, outcome, sequence };
  }

  /** Every command run in the workspace, in order. */
  async logs(id: string): Promise<{ record: VmRecord; entries: JournalEntry[] }> {
    const record = await this.vms.status(id, "workspace");
    let text = "";
    try {
      text = await readFile(this.journalPath(id), "utf8");
    } catch (error) {
      if (!isErrno(error, "ENOENT")) throw error;
    }
    const entries: JournalEntry[] = [];
    for (const line of text.split("\n")) {
      if (!line.trim()) continue;
      try {
        entries.push(JSON.parse(line) as JournalEntry);
      } catch {
        // A line cut short by a crash; the rest of the journal is still good.
      }
    }
    return { record, entries: entries.sort((a, b) => a.sequence - b.sequence) };
  }

  async list(): Promise<VmRecord[]> {
    return (await this.vms.list()).filter((record) => record.kind === "workspace");
  }
}

function emptyFields(): WorkspaceFields {
  return { name: null, labels: {}, seed: { mode: "empty", seedPath: null }, commandCount: 0, lastCommand: null };
}

function limitsForAgent(): { maxBytes: number; maxEntries: number } {
  return { maxBytes: DEFAULT_SOURCE_LIMITS.maxBytes, maxEntries: DEFAULT_SOURCE_LIMITS.maxEntries };
}

function clip(data: Buffer): string {
  return (data.length > JOURNAL_OUTPUT_BYTES ? data.subarray(0, JOURNAL_OUTPUT_BYTES) : data).toString("utf8");
}
