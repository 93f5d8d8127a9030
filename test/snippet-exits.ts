/**
 * Loaded with `--import` into every snippet program the snippets test runs: it records the exit
 * status of each guest command the program runs through the SDK (directly or through an adapter,
 * which calls the same methods), one JSON line per command in $PYRO_SNIPPET_EXITS. A snippet that
 * runs a command which fails (`make` where there is none, a path never seeded) prints its output
 * and ends normally; this is how the test sees it. It observes the real results and changes none.
 */
import { appendFileSync } from "node:fs";
import { Pyro } from "../src/sdk/pyro.js";

export interface RecordedExit {
  method: string;
  command: unknown;
  exitCode: number;
}

const log = process.env.PYRO_SNIPPET_EXITS;
if (log) {
  for (const method of ["runInVm", "execVm", "execWorkspace"] as const) {
    const original = Object.getOwnPropertyDescriptor(Pyro.prototype, method)?.value as (this: Pyro, ...args: unknown[]) => Promise<{ exitCode: number }>;
    Object.defineProperty(Pyro.prototype, method, {
      configurable: true,
      writable: true,
      value: async function (this: Pyro, ...args: unknown[]) {
        const result = await original.apply(this, args);
        const options = args[args.length - 1] as { command?: unknown } | undefined;
        const entry: RecordedExit = { method, command: options?.command, exitCode: result.exitCode };
        appendFileSync(log, `${JSON.stringify(entry)}\n`);
        return result;
      },
    });
  }
}
