import { errColors as pc } from "./color.js";
import { ErrorCode, type ErrorCodeValue, type PyroError } from "../errors.js";
import { toSnake } from "../util/case.js";
import { renderError, type Vocabulary } from "../vocabulary.js";

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(toSnake(value), null, 2)}\n`);
}

/** Exit codes of pyro's own failures; a guest command's exit code passes through unchanged. */
export const EXIT_CODES: Record<ErrorCodeValue, number> = {
  [ErrorCode.invalidArgument]: 64,
  [ErrorCode.unknownEnvironment]: 65,
  [ErrorCode.vmNotFound]: 66,
  [ErrorCode.vmNotRunning]: 67,
  [ErrorCode.guestUnavailable]: 69,
  [ErrorCode.internal]: 70,
  [ErrorCode.environmentBuildFailed]: 71,
  [ErrorCode.bootFailed]: 72,
  [ErrorCode.bootTimeout]: 73,
  [ErrorCode.agentError]: 74,
  [ErrorCode.stateError]: 75,
  [ErrorCode.workspaceNotFound]: 76,
  [ErrorCode.sourceRefused]: 77,
  [ErrorCode.sourceTooLarge]: 78,
  [ErrorCode.fileNotFound]: 79,
  [ErrorCode.patchFailed]: 80,
  [ErrorCode.snapshotNotFound]: 81,
  [ErrorCode.shellNotFound]: 82,
  [ErrorCode.serviceNotFound]: 83,
  [ErrorCode.serviceFailed]: 84,
  [ErrorCode.cancelled]: 130,
};

/**
 * One line of reason and one of hint on stderr, in the CLI's words (flags,
 * commands); in --json mode the same as a JSON error document on stdout too.
 */
export function printError(error: PyroError, json: boolean, vocabulary: Vocabulary): void {
  const { message, hint } = renderError(error, vocabulary);
  if (json) process.stdout.write(`${JSON.stringify({ error: { code: error.code, message, hint } }, null, 2)}\n`);
  process.stderr.write(`${pc.red("error")}: ${message} ${pc.dim(`[${error.code}]`)}\n`);
  process.stderr.write(`${pc.dim("hint")}: ${hint}\n`);
  const consoleTail = error.details?.consoleTail;
  if (typeof consoleTail === "string" && consoleTail.trim()) {
    process.stderr.write(`${pc.dim("guest console (tail):")}\n${consoleTail.trimEnd()}\n`);
  }
  const toolTail = error.details?.stderrTail;
  if (typeof toolTail === "string" && toolTail.trim()) process.stderr.write(`${pc.dim("tool output (tail):")}\n${toolTail.trimEnd()}\n`);
  const qemuTail = error.details?.qemuLogTail;
  if (typeof qemuTail === "string" && qemuTail.trim()) process.stderr.write(`${pc.dim("qemu log (tail):")}\n${qemuTail.trimEnd()}\n`);
}
