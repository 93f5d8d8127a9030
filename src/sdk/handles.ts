import { ErrorCode, PyroError } from "../errors.js";
import type { Pyro } from "./pyro.js";
import type {
  CallOptions,
  DeleteResult,
  ExecOptions,
  ExecResult,
  NetworkInfo,
  VmInfo,
  WorkspaceDeleteResult,
  WorkspaceDiff,
  WorkspaceExecResult,
  WorkspaceExportResult,
  WorkspaceFileList,
  WorkspaceFileRead,
  WorkspaceFileWrite,
  WorkspaceInfo,
  WorkspacePatchResult,
  WorkspaceSummary,
  WorkspaceLogs,
  WorkspacePushOptions,
  WorkspacePushResult,
} from "./types.js";

/** A command and its options, or the options alone. */
function execOptions(command: string | ExecOptions, options?: Omit<ExecOptions, "command">): ExecOptions {
  return typeof command === "string" ? { ...options, command } : command;
}

/** Deleting something already gone is what disposal wants: not an error there. */
function goneIsFine(error: unknown): void {
  if (error instanceof PyroError && (error.code === ErrorCode.vmNotFound || error.code === ErrorCode.workspaceNotFound)) return;
  throw error;
}

// The handles carry their info's fields as own properties (so they print and
// serialize like the info objects) and add methods; the interfaces merged
// below declare those fields.

/**
 * A VM, as `createVm` returns it: its fields as of the last call through this
 * handle, and the id-based methods bound to it. `await using vm = ...`
 * deletes the VM when the block ends.
 */
// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging
export class Vm implements AsyncDisposable {
  readonly #pyro: Pyro;

  constructor(pyro: Pyro, info: VmInfo) {
    this.#pyro = pyro;
    Object.assign(this, info);
  }

  /** Boots the VM (restoring its template when it can). Returns this handle, updated. */
  async start(options: CallOptions = {}): Promise<this> {
    return this.#update(await this.#pyro.startVm(this.vmId, options));
  }

  /** Runs one command, then deletes the VM (as `execVm` does). */
  async exec(command: string | ExecOptions, options?: Omit<ExecOptions, "command">): Promise<ExecResult> {
    return this.#pyro.execVm(this.vmId, execOptions(command, options));
  }

  /** The VM's current info; this handle's fields are updated too. */
  async status(): Promise<VmInfo> {
    return { ...this.#update(await this.#pyro.statusVm(this.vmId)) };
  }

  /** Its network policy, addresses and the latest connections the policy refused. */
  async networkInfo(): Promise<NetworkInfo> {
    return this.#pyro.networkInfoVm(this.vmId);
  }

  /** Powers the guest off; its disk is kept and `start` boots it again. */
  async stop(): Promise<this> {
    return this.#update(await this.#pyro.stopVm(this.vmId));
  }

  /** Kills the VM and removes its files; throws `vm_not_found` when it is gone already. */
  async delete(): Promise<DeleteResult> {
    return this.#pyro.deleteVm(this.vmId);
  }

  /** Deletes the VM unless it is gone already (an `exec` deletes it). */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.delete().then(() => undefined, goneIsFine);
  }

  #update(info: VmInfo): this {
    return Object.assign(this, info);
  }
}
// eslint-disable-next-line @typescript-eslint/no-empty-object-type, @typescript-eslint/no-unsafe-declaration-merging
export interface Vm extends VmInfo {}

/**
 * A workspace, as `createWorkspace` returns it: its fields as of the last call
 * through this handle, and the id-based methods bound to it. `await using
 * ws = ...` deletes the workspace when the block ends.
 */
// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging
export class Workspace implements AsyncDisposable {
  readonly #pyro: Pyro;

  constructor(pyro: Pyro, info: WorkspaceInfo) {
    this.#pyro = pyro;
    Object.assign(this, info);
  }

  /** Runs a command in `/workspace`: `ws.exec("make test")` or `ws.exec({ command, timeoutSeconds })`. */
  async exec(command: string | ExecOptions, options?: Omit<ExecOptions, "command">): Promise<WorkspaceExecResult> {
    return this.#pyro.execWorkspace(this.workspaceId, execOptions(command, options));
  }

  /** Copies a host directory or archive into `/workspace` (or `dest` under it). */
  async push(sourcePath: string, options: WorkspacePushOptions = {}): Promise<WorkspacePushResult> {
    return this.#pyro.pushWorkspaceSync(this.workspaceId, sourcePath, options);
  }

  /** The workspace's current info; this handle's fields are updated too. */
  async status(): Promise<WorkspaceInfo> {
    return { ...Object.assign(this, await this.#pyro.statusWorkspace(this.workspaceId)) };
  }

  /** Every command run here, in order, with its bounded output; with `sequence`, that one command's whole output. */
  async logs(options: { sequence?: number } = {}): Promise<WorkspaceLogs> {
    return this.#pyro.logsWorkspace(this.workspaceId, options);
  }

  /** Lists a directory under `/workspace` (default `/workspace`), or one file. */
  async listFiles(options: CallOptions & { path?: string; recursive?: boolean } = {}): Promise<WorkspaceFileList> {
    return this.#pyro.listWorkspaceFiles(this.workspaceId, options);
  }

  /** Reads a text file under `/workspace`. */
  async readFile(path: string, options: CallOptions & { maxBytes?: number } = {}): Promise<WorkspaceFileRead> {
    return this.#pyro.readWorkspaceFile(this.workspaceId, path, options);
  }

  /** Creates or replaces a file under `/workspace`. */
  async writeFile(path: string, text: string, options: CallOptions = {}): Promise<WorkspaceFileWrite> {
    return this.#pyro.writeWorkspaceFile(this.workspaceId, path, text, options);
  }

  /** Applies a unified diff; nothing changes unless all of it applies. */
  async applyPatch(patch: string, options: CallOptions = {}): Promise<WorkspacePatchResult> {
    return this.#pyro.applyWorkspacePatch(this.workspaceId, patch, options);
  }

  /** What changed since the baseline (the seed). */
  async diff(options: CallOptions & { maxBytes?: number } = {}): Promise<WorkspaceDiff> {
    return this.#pyro.diffWorkspace(this.workspaceId, options);
  }

  /** Copies `/workspace` (or `path` under it) to `outputPath` on the host. */
  async export(outputPath: string, options: CallOptions & { path?: string } = {}): Promise<WorkspaceExportResult> {
    return this.#pyro.exportWorkspace(this.workspaceId, outputPath, options);
  }

  /** Renames, relabels or gives a new time to live; this handle's fields are updated too. */
  async update(options: { name?: string | null; labels?: Record<string, string>; clearLabels?: string[]; ttlSeconds?: number }): Promise<WorkspaceInfo> {
    return { ...Object.assign(this, await this.#pyro.updateWorkspace(this.workspaceId, options)) };
  }

  /** What happened here since creation or the last reset. */
  async summary(options: CallOptions = {}): Promise<WorkspaceSummary> {
    return this.#pyro.summaryWorkspace(this.workspaceId, options);
  }

  /** Kills the workspace's VM and removes its files, journal included. */
  async delete(): Promise<WorkspaceDeleteResult> {
    return this.#pyro.deleteWorkspace(this.workspaceId);
  }

  /** Deletes the workspace unless it is gone already. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.delete().then(() => undefined, goneIsFine);
  }
}
// eslint-disable-next-line @typescript-eslint/no-empty-object-type, @typescript-eslint/no-unsafe-declaration-merging
export interface Workspace extends WorkspaceInfo {}
