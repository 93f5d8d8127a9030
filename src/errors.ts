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
  /** A state or cache file could not be read or written. */
  stateError: "state_error",
  /** The operation was cancelled by the caller. */
  cancelled: "cancelled",
  /** A bug in pyro. */
  internal: "internal",
} as const;

export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

export interface PyroErrorOptions {
  /** What the user can do about it. */
  hint?: string;
  cause?: unknown;
  /** Extra machine-readable context (field names, paths, log tails). */
  details?: Record<string, unknown>;
}

export class PyroError extends Error {
  readonly code: ErrorCodeValue;
  readonly hint: string | undefined;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCodeValue, message: string, options: PyroErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "PyroError";
    this.code = code;
    this.hint = options.hint;
    this.details = options.details;
  }

  toJSON(): { code: ErrorCodeValue; message: string; hint?: string; details?: Record<string, unknown> } {
    return {
      code: this.code,
      message: this.message,
      ...(this.hint === undefined ? {} : { hint: this.hint }),
      ...(this.details === undefined ? {} : { details: this.details }),
    };
  }
}

/** A bad option value: the message names the field, as callers see it. */
export class InvalidArgumentError extends PyroError {
  readonly field: string;
  constructor(field: string, message: string, hint?: string) {
    super(ErrorCode.invalidArgument, `${field}: ${message}`, { hint, details: { field } });
    this.name = "InvalidArgumentError";
    this.field = field;
  }
}

/** Wraps anything thrown into a PyroError, keeping PyroErrors as they are. */
export function toPyroError(error: unknown): PyroError {
  if (error instanceof PyroError) return error;
  if (error instanceof Error && error.name === "AbortError") {
    return new PyroError(ErrorCode.cancelled, "the operation was cancelled", { cause: error });
  }
  const message = error instanceof Error ? error.message : String(error);
  return new PyroError(ErrorCode.internal, message, {
    cause: error,
    hint: "this is a bug in pyro; rerun with PYRO_DEBUG=1 and report the output",
  });
}
