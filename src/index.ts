export { Pyro, type PyroOptions } from "./sdk/pyro.js";
export { Vm, Workspace } from "./sdk/handles.js";
export type {
  Accel,
  CallOptions,
  DeleteResult,
  EnvironmentInfo,
  ExecOptions,
  ExecResult,
  ExecutionMode,
  NetworkInfo,
  PoolFillResult,
  ProgressEvent,
  PruneResult,
  ReapResult,
  RunOptions,
  VmInfo,
  VmOptions,
  VmState,
  WorkspaceCreateOptions,
  WorkspaceDeleteResult,
  WorkspaceDiff,
  WorkspaceExecResult,
  WorkspaceExportResult,
  WorkspaceFileList,
  WorkspaceFileRead,
  WorkspaceFileWrite,
  WorkspaceInfo,
  WorkspaceLogEntry,
  WorkspacePatchResult,
  WorkspaceSummary,
  WorkspaceForkResult,
  WorkspaceSnapshotInfo,
  WorkspaceSnapshotList,
  WorkspaceSnapshotResult,
  ChangeStatus,
  DiffFile,
  FileEntry,
  PatchFileResult,
  WorkspaceLogs,
  WorkspacePushOptions,
  WorkspacePushResult,
} from "./sdk/types.js";
export type { DoctorReport, ToolReport } from "./sdk/doctor.js";
export { Defaults, type Paths } from "./config.js";
export type { KvmReport } from "./backends/qemu/accel.js";
export { CATALOG, type EnvironmentSpec } from "./environments/catalog.js";
export { ErrorCode, InvalidArgumentError, PyroError, type ErrorCodeValue, type PyroErrorOptions } from "./errors.js";
