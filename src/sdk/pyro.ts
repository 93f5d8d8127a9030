import { stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { ExecOutcome } from "../agent/client.js";
import { resolvePaths, type Paths } from "../config.js";
import { CATALOG, requireEnvironment } from "../environments/catalog.js";
import type { EnvironmentManifest } from "../environments/store.js";
import { ErrorCode, InvalidArgumentError, PyroError, toPyroError } from "../errors.js";
import { networkEventsPath, recentNetworkEvents } from "../network/helper.js";
import { ALSO_BLOCKED, ALWAYS_BLOCKED, GUEST_NET } from "../network/policy.js";
import { networkPolicyOf, type ProcessRef, type VmRecord } from "../runtime/store.js";
import { VmPool, type PoolEntry } from "../runtime/pool.js";
import { Reaper } from "../runtime/reaper.js";
import { VmManager } from "../runtime/vms.js";
import { livePublished } from "../runtime/helpers.js";
import { WORKSPACE_PATH, WorkspaceManager } from "../runtime/workspaces.js";
import { workspaceRelative } from "../runtime/workspace-files.js";
import { Redactor, resolveSecrets } from "../runtime/secrets.js";
import { requireShellId, requireShellSignal } from "../runtime/shells.js";
import { requireServiceName } from "../runtime/services.js";
import { debug } from "../util/log.js";
import { sameProcess, selfProcess } from "../util/proc.js";
import { runDoctor, type DoctorReport } from "./doctor.js";
import { Vm, Workspace } from "./handles.js";
import type {
  CallOptions,
  DeleteResult,
  EnvironmentInfo,
  ExecOptions,
  ExecResult,
  NetworkInfo,
  PoolDrainOptions,
  PoolDrainResult,
  PoolFillResult,
  PoolInfo,
  PooledVmInfo,
  PruneResult,
  ReapResult,
  RunOptions,
  VmInfo,
  VmOptions,
  WorkspaceCreateOptions,
  WorkspaceDeleteResult,
  WorkspaceDiff,
  WorkspaceExecResult,
  WorkspaceExportResult,
  WorkspaceFileList,
  WorkspaceFileRead,
  WorkspaceFileWrite,
  WorkspacePatchResult,
  WorkspaceSummary,
  WorkspaceForkResult,
  WorkspaceSnapshotList,
  WorkspaceSnapshotResult,
  WorkspaceInfo,
  WorkspaceLogs,
  WorkspacePushOptions,
  WorkspacePushResult,
  WorkspaceExecOptions,
  ShellInfo,
  ShellOpenOptions,
  ShellReadOptions,
  ShellReadResult,
  ShellSignalName,
  ServiceInfo,
  ServiceLogs,
  ServiceStartOptions,
} from "./types.js";
import { requireCount, resolveWorkspaceUpdate, requireId, requireSequence, requireString, requireTimeout, resolveExecOptions, resolveVmOptions, resolveWorkspaceMeta } from "./validate.js";

export interface PyroOptions {
  /** Where VM records and sockets live. Default `$PYRO_STATE_DIR` or `~/.local/state/pyro-mcp`. */
  stateDir?: string;
  /** Cache root. Default `$PYRO_CACHE_DIR` or `~/.cache/pyro-mcp`. */
  cacheDir?: string;
  /** Built environments. Default `$PYRO_ENVIRONMENT_CACHE_DIR` or `<cacheDir>/environments`. */
  environmentsDir?: string;
  /** Environment variables to read settings from. Default `process.env`. */
  env?: NodeJS.ProcessEnv;
  /**
   * For a long-lived process: VMs to keep warm per machine shape `runInVm`
   * has used, so the next run starts from one. They are refilled in this
   * process after each run, capped by memory (PYRO_POOL_MAX_MIB, and half of
   * what the host has available), and deleted by `close()` (or by the next
   * pyro process, should this one die). `PYRO_POOL_SIZE` overrides. Default:
   * none kept here (a CLI run refills from a detached process only when
   * PYRO_POOL_SIZE is set). `pyro mcp serve` keeps 1.
   */
  keepWarm?: number;
}

const REAP_INTERVAL_MS = 30_000;

/**
 * Disposable microVM sandboxes. One instance per process is enough; every
 * operation reads and writes the shared on-disk state, so several processes
 * (CLI, SDK, MCP server) can work on the same VMs.
 */
export class Pyro implements AsyncDisposable {
  readonly paths: Paths;
  private readonly vms: VmManager;
  private readonly workspaces: WorkspaceManager;
  private readonly pool: VmPool;
  private readonly reaper: Reaper;
  private lastReap = 0;

  constructor(options: PyroOptions = {}) {
    const env = options.env ?? process.env;
    this.paths = resolvePaths(options, env);
    this.vms = new VmManager(this.paths, env);
    this.workspaces = new WorkspaceManager(this.vms);
    if (options.keepWarm !== undefined && (!Number.isSafeInteger(options.keepWarm) || options.keepWarm < 0 || options.keepWarm > 16)) {
      throw new InvalidArgumentError("keepWarm", "must be a whole number from 0 to 16");
    }
    this.pool = new VmPool(this.vms, options.keepWarm);
    this.reaper = new Reaper(this.vms);
  }

  /** Expired VMs are cleaned up by whichever pyro process runs next. */
  async #reapOpportunistically(): Promise<void> {
    if (Date.now() - this.lastReap < REAP_INTERVAL_MS) return;
    this.lastReap = Date.now();
    await this.reaper.reap().catch((error: unknown) => debug("reaper", String(error)));
  }

  /**
   * Runs one command in a fresh VM and deletes the VM afterwards, whatever
   * happens. The usual way in: one call, one command, automatic cleanup.
   */
  async runInVm(options: RunOptions): Promise<ExecResult> {
    const vm = resolveVmOptions(options);
    const exec = resolveExecOptions(options);
    await this.#reapOpportunistically();
    // With a pool (PYRO_POOL_SIZE), a warmed VM of this shape is taken and a replacement made in the background.
    const owner = await selfProcess();
    const pooled = await this.pool.claim(vm, owner);
    // Owned by this process: should it die before the cleanup below, the next pyro process deletes the VM.
    const record = pooled ?? (await this.vms.create(vm, options, { kind: "vm", workspace: null, owner }));
    let outcome: ExecOutcome | undefined;
    try {
      if (pooled) options.onProgress?.({ phase: "boot", message: `took a warm VM from the pool (${pooled.vmId})` });
      const started = pooled ?? (await this.vms.start(record.vmId, options));
      options.onProgress?.({ phase: "exec", message: "running the command" });
      const result = await this.vms.exec(started.vmId, exec, { signal: options.signal, onOutput: options.onOutput });
      outcome = result.outcome;
      return toExecResult(result.record, outcome, { vmDeleted: true });
    } finally {
      options.onProgress?.({ phase: "cleanup", message: "deleting the VM" });
      await this.vms.delete(record.vmId);
      // Only now: a filler running beside the command would take the CPU it needs.
      if (this.pool.enabled) this.pool.refillInBackground(vm);
    }
  }

  /**
   * Creates a VM record (pulling the environment on first use) without
   * booting it. The result is the VM's info and a handle on it:
   * `await vm.start()`, `await vm.exec("...")`, `await vm.delete()`.
   */
  async createVm(options: VmOptions): Promise<Vm> {
    const vm = resolveVmOptions(options);
    await this.#reapOpportunistically();
    return new Vm(this, toVmInfo(await this.vms.create(vm, options)));
  }

  /** A handle on an existing VM (made by this or any other pyro process). */
  async getVm(vmId: string): Promise<Vm> {
    return new Vm(this, await this.statusVm(vmId));
  }

  /** Boots a created (or stopped) VM. */
  async startVm(vmId: string, options: CallOptions = {}): Promise<VmInfo> {
    await this.#reapOpportunistically();
    return toVmInfo(await this.vms.start(requireId("vmId", vmId), options));
  }

  /**
   * Runs one command in a started VM, then deletes the VM (as pyro-mcp's
   * vm_exec does). For repeated commands in one place use a workspace.
   */
  async execVm(vmId: string, options: ExecOptions): Promise<ExecResult> {
    const id = requireId("vmId", vmId);
    const exec = resolveExecOptions(options);
    // A refused command (the VM is not started, or another process is starting it) leaves the VM alone.
    await this.vms.requireRunning(id, "vm");
    // From here the VM is this call's to delete: should this process die first, the next pyro process does.
    const owner = await selfProcess();
    await this.vms.store.update(id, (current) => ({ ...current, owner }));
    try {
      const { record, outcome } = await this.vms.exec(id, exec, { signal: options.signal, onOutput: options.onOutput });
      return toExecResult(record, outcome, { vmDeleted: true });
    } finally {
      await this.vms.delete(id);
    }
  }

  async statusVm(vmId: string): Promise<VmInfo> {
    return toVmInfo(await this.vms.status(requireId("vmId", vmId), "vm"));
  }

  async listVms(): Promise<VmInfo[]> {
    await this.#reapOpportunistically();
    return (await this.vms.list()).filter((record) => record.kind === "vm" && !record.pool).map(toVmInfo);
  }

  /** Powers the guest off; its disk is kept and `startVm` boots it again. */
  async stopVm(vmId: string): Promise<VmInfo> {
    return toVmInfo(await this.vms.stop(requireId("vmId", vmId)));
  }

  async deleteVm(vmId: string): Promise<DeleteResult> {
    const id = requireId("vmId", vmId);
    if (!(await this.vms.delete(id, "vm"))) throw await this.vms.store.missing(id, "vm");
    return { vmId: id, deleted: true };
  }

  /**
   * Creates a persistent workspace: a running VM whose `/workspace` starts
   * from `seedPath` (a directory or tar archive, checked completely first).
   * Use it when an agent needs repeated commands in one place; for one
   * command, `runInVm` is simpler.
   */
  async createWorkspace(options: WorkspaceCreateOptions): Promise<Workspace> {
    const vm = resolveVmOptions(options);
    const meta = resolveWorkspaceMeta(options);
    if (options.seedPath !== undefined && (typeof options.seedPath !== "string" || options.seedPath === "")) {
      throw new InvalidArgumentError("seedPath", "must be a path to a directory or tar archive");
    }
    const secrets = await resolveSecrets(options.secrets);
    await this.#reapOpportunistically();
    const redactor = new Redactor(secrets);
    try {
      return new Workspace(this, toWorkspaceInfo(await this.workspaces.create({ ...vm, ...meta, seedPath: options.seedPath, secrets }, options)));
    } catch (error) {
      throw redactor.error(error);
    }
  }

  /** A handle on an existing workspace (made by this or any other pyro process). */
  async getWorkspace(workspaceId: string): Promise<Workspace> {
    return new Workspace(this, await this.statusWorkspace(workspaceId));
  }

  /**
   * Copies a host directory or archive into the running workspace (merged
   * into `/workspace`, or `dest` under it) without recreating it. The tree
   * is checked first and staged in the guest, so a refused or failed push
   * leaves the workspace as it was.
   */
  async pushWorkspaceSync(workspaceId: string, sourcePath: string, options: WorkspacePushOptions = {}): Promise<WorkspacePushResult> {
    const id = requireId("workspaceId", workspaceId);
    const source = requireString("sourcePath", sourcePath);
    const timeoutSeconds = options.timeoutSeconds === undefined ? undefined : requireTimeout("timeoutSeconds", options.timeoutSeconds);
    const pushed = await this.workspaces.push(id, source, { dest: options.dest, signal: options.signal, timeoutSeconds });
    return { workspaceId: id, sourcePath: pushed.source.path, mode: pushed.source.mode, dest: pushed.dest, ...pushed.counts };
  }

  /** Runs a command in the workspace's `/workspace`. Files persist between commands; the workspace is never cleaned up by this. */
  async execWorkspace(workspaceId: string, options: WorkspaceExecOptions): Promise<WorkspaceExecResult> {
    const id = requireId("workspaceId", workspaceId);
    const exec = resolveExecOptions(options);
    return this.#redacted(id, async () => {
      const { record, outcome, sequence } = await this.workspaces.exec(id, exec.command, exec.timeoutSeconds, { signal: options.signal, onOutput: options.onOutput }, { secretEnv: options.secretEnv });
      const { vmId: _vmId, ...result } = toExecResult(record, outcome);
      return { ...result, workspaceId: id, sequence };
    });
  }

  /**
   * Runs `fn` for workspace `id` and hands back its result and errors with
   * the workspace's secret values replaced by `[REDACTED:NAME]`: a last
   * line behind the redaction each operation does itself.
   */
  async #redacted<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const redactor = await this.workspaces.redactor(id).catch(() => undefined);
    try {
      const result = await fn();
      return redactor ? redactor.deep(result) : result;
    } catch (error) {
      throw redactor ? redactor.error(error) : error;
    }
  }

  // ---- shells ----

  /** Opens an interactive shell (`bash -l` on a PTY) in the workspace; it lives until closed, across calls and processes. */
  async openShell(workspaceId: string, options: ShellOpenOptions = {}): Promise<ShellInfo> {
    const id = requireId("workspaceId", workspaceId);
    return this.#redacted(id, async () => ({ workspaceId: id, ...(await this.workspaces.shells.open(id, options, options.signal)) }));
  }

  /** The workspace's shells, running or exited and not yet closed. */
  async listShells(workspaceId: string, options: CallOptions = {}): Promise<ShellInfo[]> {
    const id = requireId("workspaceId", workspaceId);
    return this.#redacted(id, async () => (await this.workspaces.shells.list(id, options.signal)).map((shell) => ({ workspaceId: id, ...shell })));
  }

  /**
   * A shell's output from `cursor` (0, or the previous `nextCursor`), at
   * most `maxChars`. With `waitForIdleMs`, waits first until the shell has
   * been quiet that long, which is how to read a command's whole output.
   */
  async readShell(workspaceId: string, shellId: string, options: ShellReadOptions = {}): Promise<ShellReadResult> {
    const id = requireId("workspaceId", workspaceId);
    const shell = requireShellId(shellId);
    return this.#redacted(id, async () => ({ workspaceId: id, shellId: shell, ...(await this.workspaces.shells.read(id, shell, options, options.signal)) }));
  }

  /** Types `input` into the shell, followed by Enter unless `appendNewline` is false. At most 64 KiB. */
  async writeShell(workspaceId: string, shellId: string, input: string, options: CallOptions & { appendNewline?: boolean } = {}): Promise<{ workspaceId: string; shellId: string; bytes: number }> {
    const id = requireId("workspaceId", workspaceId);
    const shell = requireShellId(shellId);
    return this.#redacted(id, async () => ({ workspaceId: id, shellId: shell, ...(await this.workspaces.shells.write(id, shell, input, options.appendNewline ?? true, options.signal)) }));
  }

  /** Sends INT (Ctrl-C), TERM, KILL or HUP to the shell's foreground job (the shell itself when none runs). */
  async signalShell(workspaceId: string, shellId: string, signal: ShellSignalName, options: CallOptions = {}): Promise<{ workspaceId: string; shellId: string; signal: string }> {
    const id = requireId("workspaceId", workspaceId);
    const shell = requireShellId(shellId);
    const name = requireShellSignal(signal);
    return this.#redacted(id, async () => {
      await this.workspaces.shells.signal(id, shell, name, options.signal);
      return { workspaceId: id, shellId: shell, signal: name };
    });
  }

  /** Changes the terminal size (the foreground program gets SIGWINCH). */
  async resizeShell(workspaceId: string, shellId: string, size: CallOptions & { cols: number; rows: number }): Promise<{ workspaceId: string; shellId: string; cols: number; rows: number }> {
    const id = requireId("workspaceId", workspaceId);
    const shell = requireShellId(shellId);
    return this.#redacted(id, async () => {
      await this.workspaces.shells.resize(id, shell, size.cols, size.rows, size.signal);
      return { workspaceId: id, shellId: shell, cols: size.cols, rows: size.rows };
    });
  }

  /** Ends the shell and everything it started, and forgets its output. */
  async closeShell(workspaceId: string, shellId: string, options: CallOptions = {}): Promise<{ workspaceId: string; shellId: string; closed: true; exitCode: number | null; signal: string | null }> {
    const id = requireId("workspaceId", workspaceId);
    const shell = requireShellId(shellId);
    return this.#redacted(id, async () => ({ workspaceId: id, shellId: shell, closed: true as const, ...(await this.workspaces.shells.close(id, shell, options.signal)) }));
  }

  // ---- services ----

  /**
   * Starts a named background command (a dev server, a database) that
   * outlives the call; returns once its readiness check passes, with its
   * published host ports. A service that exits or never gets ready is
   * stopped and the error carries its last output.
   */
  async startService(workspaceId: string, options: ServiceStartOptions): Promise<ServiceInfo> {
    const id = requireId("workspaceId", workspaceId);
    return this.#redacted(id, async () => toServiceInfo(id, await this.workspaces.services.start(id, options, options.signal)));
  }

  /** Every service of the workspace, running or exited. */
  async listServices(workspaceId: string, options: CallOptions = {}): Promise<ServiceInfo[]> {
    const id = requireId("workspaceId", workspaceId);
    return this.#redacted(id, async () => (await this.workspaces.services.status(id, undefined, options.signal)).map((s) => toServiceInfo(id, s)));
  }

  /** One service: running, ready or exited (with exit code), and its published ports. */
  async serviceStatus(workspaceId: string, name: string, options: CallOptions = {}): Promise<ServiceInfo> {
    const id = requireId("workspaceId", workspaceId);
    const service = requireServiceName(name);
    return this.#redacted(id, async () => toServiceInfo(id, (await this.workspaces.services.status(id, service, options.signal))[0]!));
  }

  /** The last `tailLines` (default 200) lines of a service's output, stdout and stderr together. */
  async serviceLogs(workspaceId: string, name: string, options: CallOptions & { tailLines?: number } = {}): Promise<ServiceLogs> {
    const id = requireId("workspaceId", workspaceId);
    const service = requireServiceName(name);
    return this.#redacted(id, async () => ({ workspaceId: id, ...(await this.workspaces.services.logs(id, service, options.tailLines, options.signal)) }));
  }

  /** Stops a service (TERM, KILL after 3 s) and closes its published host ports. */
  async stopService(workspaceId: string, name: string, options: CallOptions = {}): Promise<ServiceInfo> {
    const id = requireId("workspaceId", workspaceId);
    const service = requireServiceName(name);
    return this.#redacted(id, async () => toServiceInfo(id, await this.workspaces.services.stop(id, service, options.signal)));
  }

  async statusWorkspace(workspaceId: string): Promise<WorkspaceInfo> {
    return toWorkspaceInfo(await this.vms.status(requireId("workspaceId", workspaceId), "workspace"));
  }

  /**
   * The journal of every command run in the workspace, in order, each stream
   * cut to 16 KiB (head and tail). With `sequence`, only that command, with
   * its whole output (up to 1 MiB per stream).
   */
  async logsWorkspace(workspaceId: string, options: { sequence?: number } = {}): Promise<WorkspaceLogs> {
    const id = requireId("workspaceId", workspaceId);
    return this.#redacted(id, async () => {
      const sequence = options.sequence === undefined ? undefined : requireSequence(options.sequence);
      const { record, entries } = await this.workspaces.logs(id, sequence);
      return { workspaceId: record.vmId, entries };
    });
  }

  /**
   * Lists a directory under `/workspace` (default `/workspace` itself), or
   * one file: type, size, mode and mtime of each entry, at most 1,000.
   * Symlinks are listed, not followed; one that leads out of `/workspace`
   * cannot be listed through.
   */
  async listWorkspaceFiles(workspaceId: string, options: CallOptions & { path?: string; recursive?: boolean } = {}): Promise<WorkspaceFileList> {
    const id = requireId("workspaceId", workspaceId);
    return this.#redacted(id, async () => {
      const path = options.path === undefined ? undefined : requireString("path", options.path);
      const listed = await this.workspaces.files.list(id, path, options.recursive === true, options.signal);
      return { workspaceId: id, ...listed };
    });
  }

  /** Reads a file under `/workspace` as text (up to `maxBytes`, default 64 KiB); a binary file is reported as such, not returned. */
  async readWorkspaceFile(workspaceId: string, path: string, options: CallOptions & { maxBytes?: number } = {}): Promise<WorkspaceFileRead> {
    const id = requireId("workspaceId", workspaceId);
    return this.#redacted(id, async () => {
      const read = await this.workspaces.files.read(id, requireString("path", path), options.maxBytes, options.signal);
      return { workspaceId: id, ...read };
    });
  }

  /** Writes `text` to a file under `/workspace`, creating parents, replacing it atomically; durable when this returns. */
  async writeWorkspaceFile(workspaceId: string, path: string, text: string, options: CallOptions = {}): Promise<WorkspaceFileWrite> {
    const id = requireId("workspaceId", workspaceId);
    return this.#redacted(id, async () => {
      if (typeof text !== "string") throw new InvalidArgumentError("text", "must be a string");
      const written = await this.workspaces.files.write(id, requireString("path", path), text, options.signal);
      return { workspaceId: id, ...written };
    });
  }

  /**
   * Applies a unified diff (as `git diff` writes it) to files under
   * `/workspace`. Every hunk is checked before anything is written: a patch
   * that does not apply changes nothing, and the error names the hunk.
   */
  async applyWorkspacePatch(workspaceId: string, patch: string, options: CallOptions = {}): Promise<WorkspacePatchResult> {
    const id = requireId("workspaceId", workspaceId);
    return this.#redacted(id, async () => {
      const applied = await this.workspaces.files.applyPatch(id, requireString("patch", patch), options.signal);
      return { workspaceId: id, ...applied };
    });
  }

  /** What changed in `/workspace` since the baseline (the seed): the changed files, and a unified diff of up to `maxBytes` (default 64 KiB). */
  async diffWorkspace(workspaceId: string, options: CallOptions & { maxBytes?: number } = {}): Promise<WorkspaceDiff> {
    const id = requireId("workspaceId", workspaceId);
    return this.#redacted(id, async () => {
      const diff = await this.workspaces.files.diff(id, options.maxBytes, options.signal);
      return { workspaceId: id, ...diff };
    });
  }

  /**
   * Copies a file or directory of the workspace (`path`, default all of
   * `/workspace`) to `outputPath` on the host, which must not exist yet: a
   * directory, or a `.tar`/`.tgz` archive by its extension. Nothing the
   * guest names can land outside `outputPath`.
   */
  async exportWorkspace(workspaceId: string, outputPath: string, options: CallOptions & { path?: string } = {}): Promise<WorkspaceExportResult> {
    const id = requireId("workspaceId", workspaceId);
    return this.#redacted(id, async () => {
      const output = resolve(requireString("outputPath", outputPath));
      const path = options.path === undefined ? undefined : requireString("path", options.path);
      const exported = await this.workspaces.files.export(id, path, output, options.signal);
      return { workspaceId: id, path: workspaceRelativeToAbsolute(path), ...exported };
    });
  }

  /**
   * Snapshots the workspace's disk (copy-on-write, quick whatever its size)
   * under `snapshotName`; `resetWorkspace` returns to it. Every workspace has
   * `baseline`, taken once its seed was copied in.
   */
  async createSnapshot(workspaceId: string, snapshotName: string, options: CallOptions = {}): Promise<WorkspaceSnapshotResult> {
    const id = requireId("workspaceId", workspaceId);
    return this.#redacted(id, async () => {
      const { snapshot } = await this.workspaces.snapshotCreate(id, requireString("snapshotName", snapshotName), options.signal);
      return { workspaceId: id, snapshot: { name: snapshot.name, createdAt: snapshot.createdAt } };
    });
  }

  async listSnapshots(workspaceId: string): Promise<WorkspaceSnapshotList> {
    const id = requireId("workspaceId", workspaceId);
    const { snapshots } = await this.workspaces.snapshots(id);
    return { workspaceId: id, snapshots: snapshots.map((s) => ({ name: s.name, createdAt: s.createdAt })) };
  }

  async deleteSnapshot(workspaceId: string, snapshotName: string): Promise<{ workspaceId: string; snapshotName: string; deleted: true }> {
    const id = requireId("workspaceId", workspaceId);
    const name = requireString("snapshotName", snapshotName);
    await this.workspaces.snapshotDelete(id, name);
    return { workspaceId: id, snapshotName: name, deleted: true };
  }

  /** Returns the whole workspace (its /workspace and the VM) to a snapshot, `baseline` by default; it boots cold from it. */
  async resetWorkspace(workspaceId: string, options: CallOptions & { snapshot?: string } = {}): Promise<WorkspaceInfo> {
    const id = requireId("workspaceId", workspaceId);
    return this.#redacted(id, async () => {
      const snapshot = options.snapshot === undefined ? undefined : requireString("snapshot", options.snapshot);
      return toWorkspaceInfo(await this.workspaces.reset(id, snapshot, options));
    });
  }

  /** Saves the running workspace whole (memory, devices, disk) and frees its QEMU; `startWorkspace` resumes it where it was. */
  async stopWorkspace(workspaceId: string, options: CallOptions = {}): Promise<WorkspaceInfo> {
    return toWorkspaceInfo(await this.workspaces.stop(requireId("workspaceId", workspaceId), options));
  }

  /** Resumes a stopped workspace with its memory (`bootMode: "resume"`), or boots it cold from its disk when no memory was saved. */
  async startWorkspace(workspaceId: string, options: CallOptions = {}): Promise<WorkspaceInfo> {
    return toWorkspaceInfo(await this.workspaces.start(requireId("workspaceId", workspaceId), options));
  }

  /**
   * New workspaces (`count`, default 1, at most 8) from a running one, each
   * with its own copy of its memory and disk as they are now, and its own
   * identity; the parent runs on untouched.
   */
  async forkWorkspace(workspaceId: string, options: CallOptions & { count?: number; names?: string[] } = {}): Promise<WorkspaceForkResult> {
    const id = requireId("workspaceId", workspaceId);
    return this.#redacted(id, async () => {
      const count = options.count === undefined ? (options.names?.length ?? 1) : requireCount(options.count);
      const names = (options.names ?? []).map((name) => resolveWorkspaceMeta({ name }).name);
      if (names.length > count) throw new InvalidArgumentError("names", `names ${names.length} workspaces but count is ${count}`);
      const forks = await this.workspaces.fork(id, count, names, options);
      return { workspaceId: id, workspaces: forks.map(toWorkspaceInfo) };
    });
  }

  /** Workspaces; with `labels`, only those that carry all of them. */
  async listWorkspaces(options: { labels?: Record<string, string> } = {}): Promise<WorkspaceInfo[]> {
    const labels = options.labels === undefined ? {} : resolveWorkspaceMeta({ labels: options.labels }).labels;
    await this.#reapOpportunistically();
    return (await this.workspaces.list(labels)).map(toWorkspaceInfo);
  }

  /**
   * Renames, relabels (`labels` are merged in, `clearLabels` removed) or
   * gives a workspace a new time to live, counted from now. `name: null`
   * clears the name.
   */
  async updateWorkspace(workspaceId: string, options: { name?: string | null; labels?: Record<string, string>; clearLabels?: string[]; ttlSeconds?: number }): Promise<WorkspaceInfo> {
    const id = requireId("workspaceId", workspaceId);
    return toWorkspaceInfo(await this.workspaces.update(id, resolveWorkspaceUpdate(options)));
  }

  /**
   * What happened in the workspace since it was created (or last reset):
   * commands with exit codes, file writes, patches, pushes, exports, and the
   * files that differ from the baseline now, compact enough for a model.
   */
  async summaryWorkspace(workspaceId: string, options: CallOptions = {}): Promise<WorkspaceSummary> {
    const id = requireId("workspaceId", workspaceId);
    return this.#redacted(id, async () => {
      const { record, ...summary } = await this.workspaces.summary(id, options.signal);
      return { workspaceId: id, name: record.workspace?.name ?? null, state: record.state, ...summary };
    });
  }

  /** Kills the workspace's VM and removes all of its files, journal included. */
  async deleteWorkspace(workspaceId: string): Promise<WorkspaceDeleteResult> {
    const id = requireId("workspaceId", workspaceId);
    if (!(await this.vms.delete(id, "workspace"))) throw await this.vms.store.missing(id, "workspace");
    return { workspaceId: id, deleted: true };
  }

  /**
   * A VM's (or workspace's) network: its policy and allowed hosts, what the
   * operator opened, what is always blocked, its addresses, and the latest
   * connections and DNS questions the policy refused.
   */
  async networkInfoVm(vmId: string): Promise<NetworkInfo> {
    const id = requireId("vmId", vmId);
    const record = await this.vms.refresh((await this.vms.store.read(id)) ?? (await this.vms.store.get(id, "vm")));
    const on = record.network && record.executionMode === "guest";
    return {
      vmId: record.vmId,
      network: record.network,
      mode: networkPolicyOf(record),
      allowHosts: record.allowHosts ?? [],
      allowedDestinations: on ? (record.openedDestinations ?? []) : [],
      alwaysBlocked: [...ALWAYS_BLOCKED, ...ALSO_BLOCKED],
      publishedPorts: (await livePublished(record)).map((p) => ({ guestPort: p.guestPort, hostPort: p.hostPort, host: "127.0.0.1" as const })),
      interface: on ? "eth0" : null,
      guestIp: on ? GUEST_NET.ip : null,
      prefixLength: on ? GUEST_NET.prefixLength : null,
      gateway: on ? GUEST_NET.gateway : null,
      dns: on ? GUEST_NET.dns : null,
      mtu: on ? GUEST_NET.mtu : null,
      recentBlocked: on ? await recentNetworkEvents(networkEventsPath({ dir: this.vms.store.dir(record.vmId) })) : [],
    };
  }

  /** Deletes every VM and workspace whose time to live has passed. */
  async reapExpired(): Promise<ReapResult> {
    const reapedVmIds = await this.reaper.reap();
    this.lastReap = Date.now();
    return { reapedVmIds, count: reapedVmIds.length };
  }

  async listEnvironments(): Promise<EnvironmentInfo[]> {
    return Promise.all(CATALOG.map((spec) => this.inspectEnvironment(spec.name)));
  }

  /**
   * Builds the environment now (normally the first run does it), verifying an
   * existing one. With `warm`, also saves the template snapshot for the default
   * machine shape, so the next run restores in well under a second.
   */
  async pullEnvironment(name: string, options: CallOptions & { force?: boolean; warm?: boolean } = {}): Promise<EnvironmentInfo> {
    requireEnvironment(requireString("environment", name));
    await this.vms.environments.pull(name, { force: options.force, onProgress: options.onProgress, signal: options.signal });
    if (options.warm) await this.vms.builder.warm(name, options);
    return this.inspectEnvironment(name);
  }

  async inspectEnvironment(name: string): Promise<EnvironmentInfo> {
    const spec = requireEnvironment(requireString("environment", name));
    const store = this.vms.environments;
    const check = await store.check(name);
    const manifest: EnvironmentManifest | undefined = check.manifest;
    const dir = store.entryDir(name);
    let sizeBytes: number | null = null;
    if (manifest && check.state === "installed") {
      sizeBytes = 0;
      for (const file of Object.values(manifest.files)) sizeBytes += (await stat(join(dir, file.path)).catch(() => ({ blocks: 0 }))).blocks * 512;
    }
    return {
      name: spec.name,
      description: spec.description,
      state: check.state,
      installed: check.state === "installed",
      packages: [...spec.packages],
      suite: spec.suite,
      diskMib: spec.diskMib,
      kernelRelease: manifest?.kernelRelease ?? null,
      builtAt: manifest?.builtAt ?? null,
      sizeBytes,
      cachePath: dir,
      digests: manifest
        ? {
            kernel: manifest.files.kernel.sha256,
            initramfs: manifest.files.initramfs.sha256,
            rootfs: manifest.files.rootfs.sha256,
            agent: manifest.agent.sha256,
          }
        : null,
    };
  }

  /** Removes cache entries that are no longer used: old environments, kernels, templates, leftovers of interrupted builds. */
  async pruneEnvironments(): Promise<PruneResult> {
    return this.vms.builder.prune();
  }

  /**
   * Fills the pool of warm VMs for this shape now (normally runs refill it in
   * the background). Does nothing unless PYRO_POOL_SIZE is set.
   */
  async fillPool(options: VmOptions): Promise<PoolFillResult> {
    const vm = resolveVmOptions(options);
    const made = await this.pool.fill(vm);
    const pooled = (await this.vms.list()).filter((record) => record.state === "pooled" && record.environment === vm.environment).length;
    return { enabled: this.pool.enabled, size: this.pool.settings.size, made, pooled };
  }

  /**
   * The pool of warm VMs of this state directory, whoever made them (this
   * process, a server keeping VMs warm, a detached refill): each VM's shape,
   * memory, age, owner and expiry, and the totals. Each holds its guest
   * memory until a run takes it, a drain deletes it, or it expires.
   */
  async listPool(): Promise<PoolInfo> {
    await this.#reapOpportunistically();
    const me = await selfProcess();
    const vms = (await this.pool.entries()).map((entry) => toPooledVmInfo(entry, me));
    const { size, maxMib, ttlSeconds } = this.pool.settings;
    return {
      enabled: this.pool.enabled,
      size,
      maxMib,
      capMib: await this.pool.capMib(),
      ttlSeconds,
      vms,
      count: vms.length,
      memMib: vms.reduce((sum, vm) => sum + vm.memMib, 0),
    };
  }

  /**
   * Deletes the pool's VMs (of one environment, when given) to free their
   * memory, whoever made them. A run taking a VM at the same moment keeps
   * it; refills that began before the drain stop, and the drain waits until
   * they have deleted what they were making. A server keeping VMs warm makes
   * new ones after its next run.
   */
  async drainPool(options: PoolDrainOptions = {}): Promise<PoolDrainResult> {
    const environment = options.environment === undefined ? undefined : requireEnvironment(requireString("environment", options.environment)).name;
    const me = await selfProcess();
    const deleted = (await this.pool.drain({ environment }, options)).map((entry) => toPooledVmInfo(entry, me));
    return { deleted, count: deleted.length, freedMib: deleted.reduce((sum, vm) => sum + vm.memMib, 0) };
  }

  /**
   * Lets go of what this instance holds open: connections kept to guests
   * after a boot. VMs and workspaces are not touched (they outlive the
   * process until deleted or expired). Calls after `close()` still work.
   */
  async close(): Promise<void> {
    await this.pool.close();
    await this.vms.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Checks this host: KVM, the accelerator that will be used, tools, cache, and (when possible) a real guest boot and exec. */
  async doctor(options: CallOptions & { bootCheck?: boolean } = {}): Promise<DoctorReport> {
    return runDoctor(this.vms, (run) => this.runInVm(run), options);
  }
}

export function toWorkspaceInfo(record: VmRecord): WorkspaceInfo {
  const fields = record.workspace;
  return {
    workspaceId: record.vmId,
    name: fields?.name ?? null,
    labels: fields?.labels ?? {},
    environment: record.environment,
    state: record.state,
    workspacePath: WORKSPACE_PATH,
    executionMode: record.executionMode,
    accel: record.executionMode === "guest" ? record.accel : null,
    vcpuCount: record.vcpuCount,
    memMib: record.memMib,
    ttlSeconds: record.ttlSeconds,
    network: record.network,
    networkPolicy: networkPolicyOf(record),
    allowHosts: record.allowHosts ?? [],
    createdAt: record.createdAt,
    expiresAt: record.expiresAt,
    lastActivityAt: record.lastActivityAt,
    commandCount: fields?.commandCount ?? 0,
    lastCommand: fields?.lastCommand ?? null,
    workspaceSeed: fields?.seed ?? { mode: "empty", seedPath: null },
    failure: record.failure,
    bootMode: record.bootMode,
    secretNames: fields?.secretNames ?? [],
  };
}

function toServiceInfo(workspaceId: string, service: Awaited<ReturnType<WorkspaceManager["services"]["status"]>>[number]): ServiceInfo {
  return { workspaceId, ...service };
}

export function toVmInfo(record: VmRecord): VmInfo {
  return {
    vmId: record.vmId,
    environment: record.environment,
    state: record.state,
    executionMode: record.executionMode,
    accel: record.executionMode === "guest" ? record.accel : null,
    vcpuCount: record.vcpuCount,
    memMib: record.memMib,
    ttlSeconds: record.ttlSeconds,
    network: record.network,
    networkPolicy: networkPolicyOf(record),
    allowHosts: record.allowHosts ?? [],
    createdAt: record.createdAt,
    expiresAt: record.expiresAt,
    startedAt: record.startedAt,
    lastActivityAt: record.lastActivityAt,
    failure: record.failure,
    bootMode: record.bootMode ?? null,
  };
}

function toPooledVmInfo(entry: PoolEntry, me: ProcessRef): PooledVmInfo {
  const { record } = entry;
  const owner = !record.owner ? "none" : sameProcess(record.owner, me) ? "this_process" : entry.ownerAlive ? "process" : "gone";
  return {
    vmId: record.vmId,
    environment: record.environment,
    vcpuCount: record.vcpuCount,
    memMib: record.memMib,
    residentMib: entry.residentMib,
    network: record.network,
    networkPolicy: networkPolicyOf(record),
    allowHosts: record.allowHosts ?? [],
    state: entry.state,
    owner,
    ownerPid: record.owner?.pid ?? null,
    createdAt: record.createdAt,
    ageSeconds: Math.max(0, Math.floor((Date.now() - new Date(record.createdAt).getTime()) / 1000)),
    expiresAt: record.expiresAt,
  };
}

/**
 * Every failure an SDK caller sees is a PyroError with a hint: a host file
 * the system refuses (a state directory that is a file, a full disk) becomes
 * state_error, anything else unforeseen internal, instead of a bare Node error.
 */
for (const name of Object.getOwnPropertyNames(Pyro.prototype) ) {
  const descriptor = Object.getOwnPropertyDescriptor(Pyro.prototype, name);
  const method = descriptor?.value as unknown;
  if (name === "constructor" || typeof method !== "function") continue;
  const isAsync = (method as { constructor: { name: string } }).constructor.name === "AsyncFunction";
  Object.defineProperty(Pyro.prototype, name, {
    ...descriptor,
    value: function (this: Pyro, ...args: unknown[]) {
      // A call whose signal is already aborted starts nothing (no boot, no build) and is cancelled at once.
      const signal = args.map((a) => (a !== null && typeof a === "object" ? (a as { signal?: unknown }).signal : undefined)).find((v) => v instanceof AbortSignal);
      if (isAsync && signal?.aborted) return Promise.reject(new PyroError(ErrorCode.cancelled, `${name} was cancelled before it started: its signal was already aborted`));
      const result = (method as (...a: unknown[]) => unknown).apply(this, args);
      return result instanceof Promise ? result.catch((error: unknown) => Promise.reject(toPyroError(error))) : result;
    },
  });
}

function toExecResult(record: VmRecord, outcome: ExecOutcome, cleanup?: { vmDeleted: boolean }): ExecResult {
  return {
    vmId: record.vmId,
    environment: record.environment,
    exitCode: outcome.exitCode,
    stdout: outcome.stdout.toString("utf8"),
    stderr: outcome.stderr.toString("utf8"),
    durationMs: outcome.durationMs,
    timedOut: outcome.timedOut,
    stdoutTruncated: outcome.stdoutTruncated,
    stderrTruncated: outcome.stderrTruncated,
    executionMode: record.executionMode,
    accel: record.executionMode === "guest" ? record.accel : null,
    ...(cleanup ? { cleanup } : {}),
  };
}

function workspaceRelativeToAbsolute(path: string | undefined): string {
  const rel = workspaceRelative(path);
  return rel === "." ? WORKSPACE_PATH : `${WORKSPACE_PATH}/${rel}`;
}
