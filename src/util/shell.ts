const SAFE = /^[\w@%+=:,./-]+$/;

/** Quotes one argument for a POSIX shell, exactly as Python's shlex.quote does. */
export function shellQuote(arg: string): string {
  if (arg === "") return "''";
  if (SAFE.test(arg)) return arg;
  return `'${arg.replaceAll("'", `'"'"'`)}'`;
}

/** Joins an argv into one shell command line that keeps argument boundaries (shlex.join). */
export function shellJoin(argv: readonly string[]): string {
  return argv.map(shellQuote).join(" ");
}
