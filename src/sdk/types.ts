import type { Accel } from "../backends/qemu/accel.js";
import type { ExecutionMode, VmState } from "../runtime/store.js";
import type { JournalEntry } from "../runtime/workspaces.js";
import type { NetworkEvent } from "../network/helper.js";
import type { NetworkPolicy } from "../network/policy.js";

export type { Accel, ExecutionMode, NetworkEvent, NetworkPolicy, VmState };

import type { ProgressEvent } from "../runtime/types.js";

export type { ProgressEvent };

export interface CallOptions {
  /** Aborting cancels the operation: a running command is killed and its VM cleaned up. */
  signal?: AbortSignal;
  onProgress?: (event: ProgressEvent) => void;
}

export interface VmOptions extends CallOptions {
  /** Environment name from the catalog, e.g. `debian:12`. */
  environment: string;
  /** Virtual CPUs, 1 to the host's core count. Default 1. */
  vcpuCount?: number;
  /** Guest memory in MiB, at least 128. Default 1024. */
  memMib?: number;
  /** Seconds until the VM expires and is reaped. Default 600. */
  ttlSeconds?: number;
  /** Give the guest outbound network access: the same as `networkPolicy: "egress"`. Default false. */
  network?: boolean;
  /**
   * `off` (no NIC at all), `egress` (outbound to the public internet; never
   * this host, private, link-local or reserved addresses), or
   * `egress+published-ports` (egress, plus ports services publish on the
   * host's 127.0.0.1). Default `off`, or `egress` when `network` is true.
   */
  networkPolicy?: NetworkPolicy;
  /**
   * Only these host names may be resolved and reached (`example.org`
   * exactly, `*.example.org` for its subdomains). Default: any public host.
   */
  allowHosts?: string[];
  /**
   * When no guest can be booted on this host, run commands directly on the host
   * instead, with no isolation. Default false: fail with `guest_unavailable`.
   */
  allowHostCompat?: boolean;
}

export interface ExecOptions extends CallOptions {
  /** Shell command line, run by bash in the guest with its login environment (as `bash -lc` sets it), in `/workspace`. */
  command: string;
  /** Seconds before the command's whole process group is killed (result `timedOut`, exit code 124). Default 30. */
  timeoutSeconds?: number;
  /** Called with output as it arrives (bounded like the result). */
  onOutput?: (stream: "stdout" | "stderr", chunk: Buffer) => void;
}

export type RunOptions = VmOptions & ExecOptions;

export interface ExecResult {
  vmId: string;
  environment: string;
  /** The command's exit status; 128+N when killed by signal N; 124 when timed out. */
  exitCode: number;
  stdout: string;
  stderr: string;
  /** Time the command ran, measured by the guest agent (or the host in host_compat mode). */
  durationMs: number;
  timedOut: boolean;
  /** More output was produced than kept (1 MiB per stream). */
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
  executionMode: ExecutionMode;
  /** How the guest was accelerated; null in host_compat mode. */
  accel: Accel | null;
  /** Present when the call removed the VM afterwards (runInVm, execVm). */
  cleanup?: { vmDeleted: boolean };
}

export interface VmInfo {
  vmId: string;
  environment: string;
  state: VmState;
  executionMode: ExecutionMode;
  accel: Accel | null;
  vcpuCount: number;
  memMib: number;
  ttlSeconds: number;
  network: boolean;
  networkPolicy: NetworkPolicy;
  allowHosts: string[];
  createdAt: string;
  expiresAt: string;
  startedAt: string | null;
  lastActivityAt: string;
  /** Why the VM failed (state `failed`), e.g. its QEMU process died. */
  failure: string | null;
  /** How it last started: `restore` (from a template snapshot, fast) or `cold` (a full boot). */
  bootMode: "cold" | "restore" | "resume" | null;
}

export interface NetworkInfo {
  vmId: string;
  network: boolean;
  /** The network policy: `off` (no NIC), `egress` or `egress+published-ports`. */
  mode: NetworkPolicy;
  /** Names the guest may resolve and reach; empty: any public host. */
  allowHosts: string[];
  /** Destinations the operator opened (PYRO_NETWORK_ALLOW_DESTINATIONS), reachable even in blocked ranges. */
  allowedDestinations: string[];
  /** What the guest can never reach unless the operator opens it. */
  alwaysBlocked: string[];
  /** Ports published on the host's 127.0.0.1 (by services, in `egress+published-ports`). */
  publishedPorts: { guestPort: number; hostPort: number; host: "127.0.0.1" }[];
  interface: string | null;
  guestIp: string | null;
  prefixLength: number | null;
  gateway: string | null;
  dns: string | null;
  mtu: number | null;
  /** The latest connections and DNS questions the policy refused, newest last. */
  recentBlocked: NetworkEvent[];
}

export interface ReapResult {
  reapedVmIds: string[];
  count: number;
}

export interface DeleteResult {
  vmId: string;
  deleted: boolean;
}

export interface EnvironmentInfo {
  name: string;
  description: string;
  /** `installed`, `not_installed`, `stale` (older catalog) or `corrupt`. */
  state: "installed" | "not_installed" | "stale" | "corrupt";
  installed: boolean;
  packages: string[];
  suite: string;
  diskMib: number;
  kernelRelease: string | null;
  builtAt: string | null;
  /** Bytes on disk of the cached kernel, initramfs and root image. */
  sizeBytes: number | null;
  cachePath: string;
  digests: { kernel: string; initramfs: string; rootfs: string; agent: string } | null;
}

export interface PoolFillResult {
  /** The pool is on only when PYRO_POOL_SIZE is set. */
  enabled: boolean;
  /** Warm VMs kept per machine shape. */
  size: number;
  /** VMs this call added. */
  made: number;
  /** Warm VMs of this environment now waiting. */
  pooled: number;
}

/** One VM of the pool of warm VMs: waiting for a run to take it, or being made by a refill. */
export interface PooledVmInfo {
  vmId: string;
  /** The machine shape a run must ask for to be given this VM: environment, vCPUs, memory, network policy and allowed hosts. */
  environment: string;
  vcpuCount: number;
  /** Guest memory it holds, in MiB; counted against PYRO_POOL_MAX_MIB. */
  memMib: number;
  /** Host memory its QEMU has resident now, in MiB (pages the guest has touched); null when it is not running. */
  residentMib: number | null;
  network: boolean;
  networkPolicy: NetworkPolicy;
  allowHosts: string[];
  /** `pooled`: warm, waiting for a run; `warming`: a refill is making it; `failed`: its QEMU or the refill making it died (the next drain or reap removes it). */
  state: "pooled" | "warming" | "failed";
  /**
   * Who deletes it if no run takes it: `this_process` (a `Pyro` of this
   * process made with `keepWarm`: on its `close()`), `process` (another live pyro process: a server
   * keeping VMs warm, or the refill still making it; when that process exits
   * or dies), `gone` (that process died: the next pyro command removes it),
   * `none` (made by a detached refill or `pyro pool fill`: waits until a run
   * takes it, a drain deletes it, or it expires).
   */
  owner: "this_process" | "process" | "gone" | "none";
  /** The owning process's pid, when `owner` names one. */
  ownerPid: number | null;
  /** When it was made. */
  createdAt: string;
  /** Seconds since it was made. */
  ageSeconds: number;
  /** When it is reaped if no run takes it (PYRO_POOL_TTL_SECONDS after it was made). */
  expiresAt: string;
}

export interface PoolInfo {
  /**
   * Whether this instance keeps a pool: PYRO_POOL_SIZE set, or `keepWarm`.
   * The VMs listed are every process's of this state directory, whatever this says.
   */
  enabled: boolean;
  /** Warm VMs this instance keeps per machine shape. */
  size: number;
  /** PYRO_POOL_MAX_MIB: the cap on the summed guest memory of the pool, in MiB. */
  maxMib: number;
  /** The cap in force now, in MiB: `maxMib`, but never more than half the memory the host has available. */
  capMib: number;
  /** PYRO_POOL_TTL_SECONDS: a VM not taken within this many seconds is reaped. */
  ttlSeconds: number;
  /** The pool's VMs, oldest first. */
  vms: PooledVmInfo[];
  /** How many VMs the pool holds. */
  count: number;
  /** Guest memory they hold together, in MiB. */
  memMib: number;
}

export interface PoolDrainOptions extends CallOptions {
  /** Only the VMs of this environment, e.g. `debian:12`. Default: every environment. */
  environment?: string;
}

export interface PoolDrainResult {
  /** The VMs deleted, as they were just before. */
  deleted: PooledVmInfo[];
  count: number;
  /** Guest memory the deleted VMs held, in MiB. */
  freedMib: number;
}

export interface PruneResult {
  removed: string[];
  freedBytes: number;
  /** Root images of older builds that VMs or workspaces still use, with the VM files that hold them; removed once those are deleted. */
  kept: { image: string; usedBy: string[] }[];
}

export interface WorkspaceCreateOptions extends VmOptions {
  /**
   * Host directory, or `.tar`, `.tar.gz`, `.tgz` archive, copied into
   * `/workspace` before the call returns. Default: an empty workspace.
   */
  seedPath?: string;
  /** A name for people (not unique, not an id). At most 64 characters. */
  name?: string;
  /** Free-form labels, e.g. `{ task: "fix-123" }`. Keys: letters, digits, `._-`, at most 63 characters. */
  labels?: Record<string, string>;
  /**
   * Secrets for commands, shells and services in this workspace, each
   * `{ name, value }` or `{ name, filePath }` (a host file; one trailing
   * newline dropped). Kept on the host only in the workspace's own 0600
   * secrets file, delivered to the guest as `/run/pyro-secrets/NAME`
   * (tmpfs, root only), given to a command only through `secretEnv`, and
   * replaced by `[REDACTED:NAME]` in everything pyro returns. At most 64,
   * 64 KiB each; names like environment variables.
   */
  secrets?: ({ name: string; value: string } | { name: string; filePath: string })[];
}

export interface WorkspaceExecOptions extends ExecOptions {
  /** Environment variables set from the workspace's secrets: `{ API_TOKEN: "api_token" }` (ENV_NAME: SECRET_NAME). */
  secretEnv?: Record<string, string>;
}

export interface ShellOpenOptions extends CallOptions {
  /** Working directory, under `/workspace` (absolute or relative). Default `/workspace`. */
  cwd?: string;
  /** Terminal width in columns (1-1000). Default 120. */
  cols?: number;
  /** Terminal height in rows (1-500). Default 30. */
  rows?: number;
  /** Environment variables set from the workspace's secrets (ENV_NAME: SECRET_NAME). */
  secretEnv?: Record<string, string>;
}

export interface ShellInfo {
  workspaceId: string;
  /** `sh-` and 12 hex digits. */
  shellId: string;
  pid: number;
  cwd: string;
  cols: number;
  rows: number;
  state: "running" | "exited";
  exitCode: number | null;
  signal: string | null;
  /** Output written so far, in bytes: a cursor that reads only what comes next. */
  endCursor: number;
  startedAt: string;
}

export interface ShellReadOptions extends CallOptions {
  /** Where to read from: 0 for the start, or the `nextCursor` of the previous read. Default 0. */
  cursor?: number;
  /** At most this many bytes of terminal output (1 to 1,048,576). Default 65,536. */
  maxChars?: number;
  /** Strip escape sequences and control characters (colours, cursor moves, `\r`). Default false. */
  plain?: boolean;
  /** Wait until the shell has been quiet this long (0-60,000 ms) before reading; bounded by about 4x that plus 5 s. */
  waitForIdleMs?: number;
}

export interface ShellReadResult {
  workspaceId: string;
  shellId: string;
  output: string;
  /** Pass as `cursor` to the next read; nothing between reads is lost unless reported in `droppedChars`. */
  nextCursor: number;
  /** Output after `cursor` the shell's buffer (the newest 1 MiB) no longer held. */
  droppedChars: number;
  state: "running" | "exited";
  exitCode: number | null;
  signal: string | null;
}

export type ShellSignalName = "INT" | "TERM" | "KILL" | "HUP" | "SIGINT" | "SIGTERM" | "SIGKILL" | "SIGHUP";

export interface ServiceReadiness {
  /** file: `path` exists; tcp: `port` on the guest's 127.0.0.1 accepts; http: `url` answers 2xx/3xx; command: `command` exits 0. */
  type: "file" | "tcp" | "http" | "command";
  path?: string;
  port?: number;
  url?: string;
  command?: string;
  /** How long to wait for it, 1-600 s; 60 when left out. */
  timeoutSeconds?: number;
}

export interface ServiceStartOptions extends CallOptions {
  /** 1-63 lowercase letters, digits, `._-`. Unique among the workspace's running services. */
  name: string;
  /** Shell command, run by bash with the login environment in `/workspace` (or `cwd`); it should stay in the foreground. */
  command: string;
  cwd?: string;
  /** When the service counts as ready; the call returns then. Without it, as soon as it started. */
  readiness?: ServiceReadiness;
  /** Guest ports to publish on the host's 127.0.0.1 (needs network policy `egress+published-ports`); `hostPort` omitted picks a free one. */
  publish?: { guestPort: number; hostPort?: number }[];
  /** Environment variables set from the workspace's secrets (ENV_NAME: SECRET_NAME). */
  secretEnv?: Record<string, string>;
}

export interface PublishedPortInfo {
  guestPort: number;
  hostPort: number;
  host: "127.0.0.1";
}

export interface ServiceInfo {
  workspaceId: string;
  name: string;
  command: string;
  cwd: string;
  /** `running` (not yet ready), `ready`, or `exited` (see `exitCode`, `signal`, `detail`). */
  state: "running" | "ready" | "exited";
  pid: number | null;
  exitCode: number | null;
  signal: string | null;
  startedAt: string | null;
  readyAt: string | null;
  endedAt: string | null;
  readiness: ServiceReadiness | null;
  publishedPorts: PublishedPortInfo[];
  detail: string | null;
}

export interface ServiceLogs {
  workspaceId: string;
  name: string;
  /** The last lines of its combined stdout and stderr (redacted). */
  output: string;
  /** Older output is not included (the buffer keeps the newest 1 MiB, a read at most 256 KiB). */
  truncated: boolean;
  droppedBytes: number;
}

export interface WorkspacePushOptions extends CallOptions {
  /** Where under `/workspace` the tree lands: absolute (`/workspace/src`) or relative (`src`). Default `/workspace`. */
  dest?: string;
  /** Seconds the copy may take; past them it fails and the workspace keeps what it had. Default 600. */
  timeoutSeconds?: number;
}

export interface WorkspaceInfo {
  workspaceId: string;
  name: string | null;
  labels: Record<string, string>;
  environment: string;
  /** `created`, `started`, `stopped`, or `failed` when its VM died. */
  state: VmState;
  workspacePath: "/workspace";
  executionMode: ExecutionMode;
  accel: Accel | null;
  vcpuCount: number;
  memMib: number;
  ttlSeconds: number;
  network: boolean;
  networkPolicy: NetworkPolicy;
  allowHosts: string[];
  createdAt: string;
  expiresAt: string;
  lastActivityAt: string;
  commandCount: number;
  lastCommand: { command: string; exitCode: number } | null;
  workspaceSeed: { mode: "empty" | "directory" | "tar_archive"; seedPath: string | null };
  /** Why the workspace failed (state `failed`). */
  failure: string | null;
  /** How it last started: cold, restore (forked), or resume (with its saved memory). */
  bootMode: "cold" | "restore" | "resume" | null;
  /** Names of its secrets; values are never shown. */
  secretNames: string[];
}

export interface WorkspaceExecResult extends Omit<ExecResult, "vmId" | "cleanup"> {
  workspaceId: string;
  /** Position of this command in the workspace's journal (1 for the first). */
  sequence: number;
}

export interface WorkspacePushResult {
  workspaceId: string;
  sourcePath: string;
  /** `directory` or `tar_archive`. */
  mode: "directory" | "tar_archive";
  /** Absolute path in the guest the tree was merged into. */
  dest: string;
  files: number;
  dirs: number;
  symlinks: number;
  bytes: number;
}

/** One command of a workspace's journal; at most 16 KiB per stream of output is kept. */
export type WorkspaceLogEntry = JournalEntry;

export interface WorkspaceLogs {
  workspaceId: string;
  entries: WorkspaceLogEntry[];
}

export interface WorkspaceDeleteResult {
  workspaceId: string;
  deleted: boolean;
}

export type { ChangeStatus, DiffFile, FileEntry, PatchFileResult } from "../runtime/workspace-files.js";
import type { DiffResult, ExportResult, FileListResult, FileReadResult, FileWriteResult, PatchResult } from "../runtime/workspace-files.js";
import type { WorkspaceSummary as RuntimeSummary } from "../runtime/workspaces.js";

/** `listWorkspaceFiles`: a directory's entries (or one file), at most 1,000. */
export interface WorkspaceFileList extends FileListResult {
  workspaceId: string;
}

/** `readWorkspaceFile`: text, or `binary: true` and no text. */
export interface WorkspaceFileRead extends FileReadResult {
  workspaceId: string;
}

export interface WorkspaceFileWrite extends FileWriteResult {
  workspaceId: string;
}

export interface WorkspacePatchResult extends PatchResult {
  workspaceId: string;
}

/** `diffWorkspace`: against the baseline (the seed); `a/` is the baseline, `b/` now. */
export interface WorkspaceDiff extends DiffResult {
  workspaceId: string;
}

export interface WorkspaceExportResult extends ExportResult {
  workspaceId: string;
  /** What was exported, under /workspace. */
  path: string;
}

/** `summaryWorkspace`: what happened since creation or the last reset. */
export interface WorkspaceSummary extends Omit<RuntimeSummary, "record"> {
  workspaceId: string;
  name: string | null;
  state: VmState;
}

export interface WorkspaceSnapshotInfo {
  name: string;
  createdAt: string;
}

export interface WorkspaceSnapshotResult {
  workspaceId: string;
  snapshot: WorkspaceSnapshotInfo;
}

export interface WorkspaceSnapshotList {
  workspaceId: string;
  /** `baseline` first, then by creation. */
  snapshots: WorkspaceSnapshotInfo[];
}

export interface WorkspaceForkResult {
  /** The parent. */
  workspaceId: string;
  workspaces: WorkspaceInfo[];
}
