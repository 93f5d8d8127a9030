/**
 * Every failure pyro itself reports is a PyroError with a stable string code, a
 * one-line message and a hint that says what to do. A guest command that exits
 * non-zero is not an error: it is a result.
 */
export const ErrorCode = {
  /** An option or argument is out of range or malformed. */
  invalidArgument: "invalid_argument",
  /** The environment name is not in the catalog. */
  unknownEnvironment: "unknown_environment",
  /** No guest can be booted on this host (QEMU, kernel or accelerator missing). */
  guestUnavailable: "guest_unavailable",
  /** Building an environment (rootfs, kernel, initramfs) failed. */
  environmentBuildFailed: "environment_build_failed",
  /** QEMU exited or the guest kernel failed before the agent answered. */
  bootFailed: "boot_failed",
  /** The guest did not reach a ready agent before the boot deadline. */
  bootTimeout: "boot_timeout",
  /** The guest agent broke the protocol, went away, or missed a deadline. */
  agentError: "agent_error",
  /** No VM with that id exists. */
  vmNotFound: "vm_not_found",
  /** The VM exists but is not in a state that allows the operation. */
  vmNotRunning: "vm_not_running",
  /** No workspace with that id exists. */
  workspaceNotFound: "workspace_not_found",
  /** A seed or pushed tree has an entry pyro will not copy (escaping path, device node, link out). */
  sourceRefused: "source_refused",
  /** A seed or pushed tree is over the size or entry-count cap. */
  sourceTooLarge: "source_too_large",
  /** A path in a workspace does not exist. */
  fileNotFound: "file_not_found",
  /** A patch does not apply to the workspace's files; nothing was changed. */
  patchFailed: "patch_failed",
  /** A named snapshot does not exist. */
  snapshotNotFound: "snapshot_not_found",
  /** No shell with that id in the workspace (closed, or lost when the workspace restarted without its memory). */
  shellNotFound: "shell_not_found",
  /** No service of that name in the workspace. */
  serviceNotFound: "service_not_found",
  /** A service did not become ready (it exited, or its readiness check failed until the deadline). */
  serviceFailed: "service_failed",
  /** A state or cache file could not be read or written. */
  stateError: "state_error",
  /** The operation was cancelled by the caller. */
  cancelled: "cancelled",
  /** A bug in pyro. */
  internal: "internal",
} as const;

export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

/**
 * What to do about each kind of failure, when the place that raised it had
 * nothing more specific to say: every error carries a hint. Written, as all
 * messages and hints are, in the SDK's words (camelCase options, operations
 * as `listVms()`); each surface renders them in its own (src/vocabulary.ts).
 * None suggests turning isolation off.
 */
export const DEFAULT_HINTS: Record<ErrorCodeValue, string> = {
  invalid_argument: "correct the named argument; the message says what is accepted",
  unknown_environment: "listEnvironments() shows the environments there are",
  guest_unavailable: "doctor() shows what this host lacks to boot guests",
  environment_build_failed: "see the message for the failing step; building needs root and Debian's archive",
  boot_failed: "retry once; if it fails again, doctor() checks the host",
  boot_timeout: "the host may be overloaded: retry, or give boots more time (PYRO_BOOT_TIMEOUT_SECONDS)",
  agent_error: "retry the call; if the VM keeps failing, delete it and create a new one",
  vm_not_found: "it may have expired or been deleted; listVms() shows the live ones",
  vm_not_running: "start it again, or delete it and create a new one",
  workspace_not_found: "it may have expired or been deleted; listWorkspaces() shows the live ones",
  source_refused: "remove or fix the named entry, or copy only what the workspace needs",
  source_too_large: "copy less at a time (subdirectories one by one), leaving build outputs out",
  file_not_found: "listWorkspaceFiles() shows what is there",
  patch_failed: "read the file again (readWorkspaceFile()) and make the patch against its current content",
  snapshot_not_found: "listSnapshots() shows the workspace's snapshots",
  shell_not_found: "use the id openShell() returned; a workspace restarted without its memory has no shells, so open a new one",
  service_not_found: "listServices() shows the workspace's services",
  service_failed: "read the log tail in the message, fix the command or its readiness check, and start it again",
  state_error: "check the state directory's permissions and free space",
  cancelled: "run it again when you want the result",
  internal: "this is a bug in pyro; rerun with PYRO_DEBUG=1 and report the output",
};

export interface PyroErrorOptions {
  /** What the user can do about it. */
  hint?: string;
  cause?: unknown;
  /** Extra machine-readable context (field names, paths, log tails). */
  details?: Record<string, unknown>;
}

export class PyroError extends Error {
  readonly code: ErrorCodeValue;
  /** What to do about it; never empty (DEFAULT_HINTS when the raiser had nothing better). */
  readonly hint: string;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCodeValue, message: string, options: PyroErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "PyroError";
    this.code = code;
    this.hint = options.hint || DEFAULT_HINTS[code];
    this.details = options.details;
  }

  toJSON(): { code: ErrorCodeValue; message: string; hint: string; details?: Record<string, unknown> } {
    return {
      code: this.code,
      message: this.message,
      hint: this.hint,
      ...(this.details === undefined ? {} : { details: this.details }),
    };
  }
}

/** A bad option value: the message names the field, as callers see it. */
export class InvalidArgumentError extends PyroError {
  readonly field: string;
  constructor(field: string, message: string, hint?: string) {
    super(ErrorCode.invalidArgument, `${field}: ${message}`, { hint: hint || `correct \`${field}\`: the message says what it accepts`, details: { field } });
    this.name = "InvalidArgumentError";
    this.field = field;
  }
}

/** Errors of the host's filesystem that mean a path is not usable, as opposed to a bug. */
const FILE_ERRORS = new Set(["EACCES", "EPERM", "EEXIST", "ENOTDIR", "EISDIR", "ENOSPC", "EDQUOT", "EROFS", "ENAMETOOLONG", "ELOOP", "EMFILE", "ENFILE"]);

/** Wraps anything thrown into a PyroError, keeping PyroErrors as they are; a host file the system refuses is a state_error. */
export function toPyroError(error: unknown): PyroError {
  if (error instanceof PyroError) return error;
  if (error instanceof Error && error.name === "AbortError") {
    return new PyroError(ErrorCode.cancelled, "the operation was cancelled", { cause: error });
  }
  const errno = error as NodeJS.ErrnoException;
  if (error instanceof Error && typeof errno.path === "string" && FILE_ERRORS.has(String(errno.code))) {
    // A file pyro itself keeps (state, cache, sockets) that the host would not let it use.
    return new PyroError(ErrorCode.stateError, `cannot use ${errno.path}: ${errno.code} (${error.message.replace(/^[A-Z]+: /, "").replace(/, \w+ '.*'$/, "")})`, {
      cause: error,
      hint: "PYRO_STATE_DIR and PYRO_CACHE_DIR must be directories pyro can write, on a disk with free space",
      details: { path: errno.path },
    });
  }
  const message = error instanceof Error ? error.message : String(error);
  return new PyroError(ErrorCode.internal, message, { cause: error });
}
