import { readFile } from "node:fs/promises";
import { Option, type Command } from "commander";
import { InvalidArgumentError } from "../../errors.js";
import { DIFF_DEFAULT_BYTES, FILE_READ_DEFAULT_BYTES } from "../../runtime/workspace-files.js";
import { emit, table, type CliContext } from "../context.js";
import { intParser } from "../options.js";

async function readStdin(what: string): Promise<string> {
  if (process.stdin.isTTY) throw new InvalidArgumentError(what, "give it on standard input (a pipe or a file), or with the option shown in --help");
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

/** `pyro workspace file|patch|diff|export`: a workspace's files without a shell. */
export function registerWorkspaceFiles(ws: Command, ctx: CliContext): void {
  const file = ws.command("file").description("list, read and write files under /workspace without a shell");

  file
    .command("list")
    .description("list a directory under /workspace (default /workspace), or one file")
    .argument("<workspace-id>")
    .argument("[path]", "directory or file, e.g. src or /workspace/src")
    .option("--recursive", "everything below, not only the directory's own entries")
    .option("--json", "print JSON")
    .action(async (id: string, path: string | undefined, flags: { recursive?: boolean; json?: boolean }) => {
      const listed = await ctx.pyro.listWorkspaceFiles(id, { path, recursive: flags.recursive, signal: ctx.signal });
      emit(ctx, listed, () => {
        const rows = listed.entries.map((e) => [e.mode, e.type, String(e.size), e.mtime, e.target === undefined ? e.path : `${e.path} -> ${e.target}`]);
        const body = rows.length ? table([["MODE", "TYPE", "SIZE", "MTIME", "PATH"], ...rows]) : `${listed.path} is empty`;
        return listed.truncated ? `${body}\n(more entries not shown: list a subdirectory)` : body;
      });
    });

  file
    .command("read")
    .description("print a text file under /workspace (binary files are reported, not printed)")
    .argument("<workspace-id>")
    .argument("<path>", "file, e.g. src/main.py or /workspace/src/main.py")
    .addOption(new Option("--max-bytes <n>", `bytes to read at most (default ${FILE_READ_DEFAULT_BYTES})`).argParser(intParser("--max-bytes", "maxBytes")))
    .option("--json", "print JSON")
    .action(async (id: string, path: string, flags: { maxBytes?: number; json?: boolean }) => {
      const read = await ctx.pyro.readWorkspaceFile(id, path, { maxBytes: flags.maxBytes, signal: ctx.signal });
      if (ctx.json) return emit(ctx, read, () => "");
      if (read.binary) {
        process.stderr.write(`${read.path} is a binary file (${read.size} bytes); copy it out with pyro workspace export\n`);
        return;
      }
      process.stdout.write(read.text ?? "");
      if (read.truncated) process.stderr.write(`\n(${read.path}: showed ${read.bytesRead} of ${read.size} bytes; --max-bytes reads more)\n`);
    });

  file
    .command("write")
    .description("create or replace a file under /workspace with --text, --from-file, or standard input")
    .argument("<workspace-id>")
    .argument("<path>", "file to create or replace")
    .option("--text <text>", "the new content")
    .option("--from-file <host-path>", "read the new content from this host file")
    .option("--json", "print JSON")
    .action(async (id: string, path: string, flags: { text?: string; fromFile?: string; json?: boolean }) => {
      if (flags.text !== undefined && flags.fromFile !== undefined) throw new InvalidArgumentError("text", "give --text or --from-file, not both");
      const text = flags.text ?? (flags.fromFile !== undefined ? await readFile(flags.fromFile, "utf8") : await readStdin("text"));
      const written = await ctx.pyro.writeWorkspaceFile(id, path, text, { signal: ctx.signal });
      emit(ctx, written, () => `${written.created ? "created" : "replaced"} ${written.path} (${written.bytes} bytes)`);
    });

  ws.command("patch")
    .description("change files with a unified diff")
    .command("apply")
    .description("apply a unified diff (git diff style) to /workspace; if any hunk does not apply, nothing changes")
    .argument("<workspace-id>")
    .option("--patch-file <host-path>", "the diff (default: standard input)")
    .option("--json", "print JSON")
    .action(async (id: string, flags: { patchFile?: string; json?: boolean }) => {
      const patch = flags.patchFile !== undefined ? await readFile(flags.patchFile, "utf8") : await readStdin("patch");
      const applied = await ctx.pyro.applyWorkspacePatch(id, patch, { signal: ctx.signal });
      emit(ctx, applied, () => applied.files.map((f) => `${f.status.padEnd(8)} ${f.path} (${f.hunks} hunk${f.hunks === 1 ? "" : "s"})`).join("\n"));
    });

  ws.command("diff")
    .description("what changed in /workspace since the seed (the baseline), as a unified diff")
    .argument("<workspace-id>")
    .addOption(new Option("--max-bytes <n>", `bytes of diff to show at most (default ${DIFF_DEFAULT_BYTES})`).argParser(intParser("--max-bytes", "maxBytes")))
    .option("--name-status", "only the changed files, with A/M/D")
    .option("--json", "print JSON")
    .action(async (id: string, flags: { maxBytes?: number; nameStatus?: boolean; json?: boolean }) => {
      const diff = await ctx.pyro.diffWorkspace(id, { maxBytes: flags.maxBytes, signal: ctx.signal });
      emit(ctx, diff, () => {
        if (!diff.files.length) return "no changes since the baseline";
        if (flags.nameStatus) return diff.files.map((f) => `${f.status[0]?.toUpperCase()}\t${f.path}`).join("\n");
        return diff.diff.trimEnd();
      });
    });

  ws.command("export")
    .description("copy a file or directory of /workspace to the host: a directory, or a .tar/.tgz archive by the output's extension")
    .argument("<workspace-id>")
    .argument("<output-path>", "host path to create (must not exist), e.g. ./out or ./out.tgz")
    .option("--path <path>", "what to export, under /workspace (default all of /workspace)")
    .option("--json", "print JSON")
    .action(async (id: string, output: string, flags: { path?: string; json?: boolean }) => {
      const exported = await ctx.pyro.exportWorkspace(id, output, { path: flags.path, signal: ctx.signal });
      emit(
        ctx,
        exported,
        () =>
          `exported ${exported.path} to ${exported.outputPath} (${exported.format}): ${exported.files} files, ${exported.dirs} directories, ${exported.symlinks} symlinks, ${exported.bytes} bytes` +
          (exported.skipped ? `; ${exported.skipped} devices/FIFOs/sockets skipped` : ""),
      );
    });
}
