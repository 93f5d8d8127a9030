import type { Command } from "commander";
import type { Pyro } from "../sdk/pyro.js";
import { printJson } from "./output.js";
import { Progress } from "./progress.js";

/** What every command gets: the SDK, output mode, progress, cancellation. */
export interface CliContext {
  pyro: Pyro;
  json: boolean;
  progress: Progress;
  signal: AbortSignal;
  /** Set by commands whose exit status is not 0 on success (pyro run passes the guest's). */
  exitCode: number;
  /** The command being run, once parsing has found it: errors name its flags. */
  command?: Command;
}

export function newContext(pyro: Pyro, signal: AbortSignal): CliContext {
  return { pyro, json: false, progress: new Progress(), signal, exitCode: 0 };
}

/** Prints a command's data: one JSON document with --json, else the human rendering. */
export function emit(ctx: CliContext, data: unknown, human: () => string): void {
  if (ctx.json) printJson(data);
  else {
    const text = human();
    if (text) process.stdout.write(text.endsWith("\n") ? text : `${text}\n`);
  }
}

export function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, col) => Math.max(...rows.map((row) => (row[col] ?? "").length))) ?? [];
  return rows.map((row) => row.map((cell, col) => (col === row.length - 1 ? cell : cell.padEnd(widths[col] ?? 0))).join("  ")).join("\n");
}

export function formatBytes(bytes: number | null): string {
  if (bytes === null) return "-";
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KiB`;
  if (bytes < 1024 * 1024 * 1024) return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
  return `${(bytes / (1024 * 1024 * 1024)).toFixed(2)} GiB`;
}
