import { createColors } from "picocolors";

/**
 * Colour only when a person is looking: the stream is a terminal, NO_COLOR is unset, TERM is not
 * "dumb" (FORCE_COLOR overrides). picocolors' own default also turns colour on whenever a `CI`
 * variable is set, which would put escape codes into logs and into output other tools parse.
 */
function wanted(stream: NodeJS.WriteStream): boolean {
  const env = process.env;
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== "") return false;
  if (env.FORCE_COLOR !== undefined && env.FORCE_COLOR !== "0") return true;
  return stream.isTTY === true && env.TERM !== "dumb";
}

/** Colours for text written to stderr (messages, progress, errors). */
export const errColors = createColors(wanted(process.stderr));
/** Colours for text written to stdout (human-readable listings). */
export const outColors = createColors(wanted(process.stdout));
