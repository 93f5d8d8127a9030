import { Option, type Command } from "commander";
import { outColors as pc } from "../color.js";
import { Defaults } from "../../config.js";
import { InvalidArgumentError } from "../../errors.js";
import type { WorkspaceInfo } from "../../sdk/types.js";
import { shellJoin } from "../../util/shell.js";
import { emit, table, type CliContext } from "../context.js";
import { intParser, timeoutOption, vmOptions, vmOptionsFrom, type VmFlags } from "../options.js";
import { streamTo, writeExecResult } from "./run.js";
import { registerWorkspaceFiles } from "./workspace-files.js";
import { registerWorkspaceWork, secretEnvOption, secretOptions, secretsFrom } from "./workspace-work.js";

function describeWorkspace(ws: WorkspaceInfo): string {
  const labels = Object.entries(ws.labels).map(([k, v]) => `${k}=${v}`);
  return [
    `workspace_id:     ${ws.workspaceId}`,
    `name:             ${ws.name ?? "-"}`,
    `labels:           ${labels.length ? labels.join(", ") : "-"}`,
    `environment:      ${ws.environment}`,
    `state:            ${ws.state}${ws.failure ? ` (${ws.failure})` : ""}`,
    `workspace_path:   ${ws.workspacePath}`,
    `execution_mode:   ${ws.executionMode}${ws.accel ? ` (${ws.accel})` : ""}`,
    `vcpu_count:       ${ws.vcpuCount}`,
    `mem_mib:          ${ws.memMib}`,
    `network:          ${ws.network ? "on" : "off"}`,
    `seed:             ${ws.workspaceSeed.mode}${ws.workspaceSeed.seedPath ? ` (${ws.workspaceSeed.seedPath})` : ""}`,
    `boot_mode:        ${ws.bootMode ?? "-"}`,
    `secrets:          ${ws.secretNames.length ? ws.secretNames.join(", ") : "-"}`,
    `commands run:     ${ws.commandCount}${ws.lastCommand ? ` (last: ${ws.lastCommand.command} → exit ${ws.lastCommand.exitCode})` : ""}`,
    `created_at:       ${ws.createdAt}`,
    `expires_at:       ${ws.expiresAt}`,
    `last_activity_at: ${ws.lastActivityAt}`,
  ].join("\n");
}

function parseLabel(value: string, previous: Record<string, string> = {}): Record<string, string> {
  const eq = value.indexOf("=");
  if (eq <= 0) throw new InvalidArgumentError("labels", `--label takes KEY=VALUE, got "${value}"`, "e.g. --label task=fix-123");
  return { ...previous, [value.slice(0, eq)]: value.slice(eq + 1) };
}

/** Persistent workspaces: create (optionally seeded), push files, exec, inspect, delete. */
export function registerWorkspace(program: Command, ctx: CliContext): void {
  const ws = program
    .command("workspace")
    .description("persistent workspaces: a VM with a /workspace seeded from host files, for many commands in one place")
    .addHelpText(
      "after",
      `
Example (./repo is a project whose Makefile has a test target; debian:12-build has make):
  id=$(pyro workspace create debian:12-build --seed-path ./repo --id-only)
  pyro workspace exec "$id" -- make test          # runs in /workspace; files persist
  pyro workspace sync push "$id" ./repo/src --dest src
  pyro workspace exec "$id" -- make test
  pyro workspace exec "$id" -- test -f missing    # exits 1: the command's own status
  pyro workspace logs "$id"                       # every command, in order, with output
  pyro workspace delete "$id"`,
    );

  const create = ws
    .command("create")
    .description("create and boot a workspace, copying --seed-path into /workspace")
    .argument("<environment>", "e.g. debian:12")
    .option("--seed-path <path>", "directory or .tar/.tar.gz/.tgz archive to copy into /workspace (default: empty)")
    .option("--name <name>", "a name for people")
    .addOption(new Option("--label <key=value>", "a label (repeatable)").argParser(parseLabel));
  for (const option of vmOptions()) create.addOption(option);
  for (const option of secretOptions()) create.addOption(option);
  create
    .option("--json", "print JSON")
    .option("--id-only", "print only the workspace id")
    .action(async (environment: string, flags: VmFlags & { seedPath?: string; name?: string; label?: Record<string, string>; idOnly?: boolean } & Parameters<typeof secretsFrom>[0]) => {
      const info = await ctx.pyro.createWorkspace({
        environment,
        seedPath: flags.seedPath,
        name: flags.name,
        labels: flags.label,
        secrets: secretsFrom(flags),
        ...vmOptionsFrom(flags),
        onProgress: ctx.progress.onProgress,
        signal: ctx.signal,
      });
      if (flags.idOnly && !ctx.json) process.stdout.write(`${info.workspaceId}\n`);
      else emit(ctx, info, () => describeWorkspace(info));
    });

  const sync = ws.command("sync").description("copy host files into a running workspace");
  sync
    .command("push")
    .description("copy a directory or archive into /workspace (or --dest under it) without recreating the workspace")
    .argument("<workspace-id>")
    .argument("<source-path>", "directory or .tar/.tar.gz/.tgz archive")
    .option("--dest <path>", "where under /workspace, e.g. src or /workspace/src (default /workspace)")
    .addOption(
      new Option("--timeout-seconds <n>", `seconds the copy may take; past them it fails and the workspace keeps what it had (default ${Defaults.pushTimeoutSeconds})`).argParser(
        intParser("--timeout-seconds", "timeoutSeconds"),
      ),
    )
    .option("--json", "print JSON")
    .action(async (id: string, source: string, flags: { dest?: string; timeoutSeconds?: number; json?: boolean }) => {
      const result = await ctx.pyro.pushWorkspaceSync(id, source, { dest: flags.dest, timeoutSeconds: flags.timeoutSeconds, signal: ctx.signal });
      emit(ctx, result, () => `pushed ${result.files} files, ${result.dirs} directories, ${result.symlinks} symlinks (${result.bytes} bytes) into ${result.dest}`);
    });

  ws.command("exec")
    .description("run a command in /workspace; files persist between commands")
    .argument("<workspace-id>")
    .argument("[command...]", "the command, after --")
    .addOption(timeoutOption())
    .addOption(secretEnvOption())
    .option("--json", "print one JSON result document")
    .action(async (id: string, command: string[], flags: VmFlags & { secretEnv?: Record<string, string> }) => {
      const result = await ctx.pyro.execWorkspace(id, { command: shellJoin(command), timeoutSeconds: flags.timeoutSeconds, secretEnv: flags.secretEnv, signal: ctx.signal, onOutput: streamTo(ctx) });
      writeExecResult(ctx, result, !ctx.json, command);
    });

  registerWorkspaceFiles(ws, ctx);
  registerWorkspaceWork(ws, ctx);

  ws.command("status")
    .description("show a workspace (a workspace whose VM died shows as failed)")
    .argument("<workspace-id>")
    .option("--json", "print JSON")
    .action(async (id: string, _flags: { json?: boolean }) => {
      const info = await ctx.pyro.statusWorkspace(id);
      emit(ctx, info, () => describeWorkspace(info));
    });

  ws.command("logs")
    .description("the journal of every command run in the workspace, in order (16 KiB of output per stream, head and tail)")
    .argument("<workspace-id>")
    .addOption(new Option("--sequence <n>", "only command number N, with its whole output (up to 1 MiB per stream)").argParser(intParser("--sequence", "sequence")))
    .option("--json", "print JSON")
    .action(async (id: string, flags: { json?: boolean; sequence?: number }) => {
      const logs = await ctx.pyro.logsWorkspace(id, { sequence: flags.sequence });
      emit(ctx, logs, () =>
        logs.entries.length
          ? logs.entries
              .map((e) => {
                const head = pc.bold(`#${e.sequence} $ ${e.command}`) + pc.dim(`  → exit ${e.exitCode}${e.timedOut ? " (timed out)" : ""}, ${e.durationMs} ms, ${e.finishedAt}`);
                const body = [e.stdout, e.stderr && pc.red(e.stderr)].filter(Boolean).join("").trimEnd();
                return body ? `${head}\n${body}` : head;
              })
              .join("\n")
          : "no commands yet",
      );
    });

  ws.command("list")
    .description("list workspaces")
    .addOption(new Option("--label <key=value>", "only workspaces with this label (repeatable)").argParser(parseLabel))
    .option("--json", "print JSON")
    .action(async (flags: { json?: boolean; label?: Record<string, string> }) => {
      const workspaces = await ctx.pyro.listWorkspaces({ labels: flags.label });
      emit(ctx, { workspaces }, () =>
        workspaces.length
          ? table([["WORKSPACE_ID", "NAME", "ENVIRONMENT", "STATE", "COMMANDS", "EXPIRES_AT"], ...workspaces.map((w) => [w.workspaceId, w.name ?? "-", w.environment, w.state, String(w.commandCount), w.expiresAt])])
          : "no workspaces",
      );
    });

  ws.command("update")
    .description("rename or relabel a workspace, or give it a new time to live (counted from now, then from each activity)")
    .argument("<workspace-id>")
    .option("--name <name>", "new name")
    .option("--clear-name", "remove the name")
    .addOption(new Option("--label <key=value>", "add or change a label (repeatable)").argParser(parseLabel))
    .addOption(new Option("--clear-label <key>", "remove a label (repeatable)").argParser((value: string, previous: string[] = []) => [...previous, value]))
    .addOption(new Option("--ttl-seconds <n>", "new time to live in seconds").argParser(intParser("--ttl-seconds", "ttlSeconds")))
    .option("--json", "print JSON")
    .action(async (id: string, flags: { name?: string; clearName?: boolean; label?: Record<string, string>; clearLabel?: string[]; ttlSeconds?: number; json?: boolean }) => {
      if (flags.name !== undefined && flags.clearName) throw new InvalidArgumentError("name", "give --name or --clear-name, not both");
      const info = await ctx.pyro.updateWorkspace(id, {
        name: flags.clearName ? null : flags.name,
        labels: flags.label,
        clearLabels: flags.clearLabel,
        ttlSeconds: flags.ttlSeconds,
      });
      emit(ctx, info, () => describeWorkspace(info));
    });

  ws.command("summary")
    .description("what happened in a workspace since it was created or last reset: commands, file changes, and what differs from the seed")
    .argument("<workspace-id>")
    .option("--json", "print JSON")
    .action(async (id: string, _flags: { json?: boolean }) => {
      const summary = await ctx.pyro.summaryWorkspace(id, { signal: ctx.signal });
      emit(ctx, summary, () => summary.text);
    });

  const snapshot = ws.command("snapshot").description("named snapshots of a workspace's disk, to return to with reset");
  snapshot
    .command("create")
    .description("snapshot the workspace's disk under a name (copy-on-write: quick)")
    .argument("<workspace-id>")
    .argument("<snapshot-name>")
    .option("--json", "print JSON")
    .action(async (id: string, name: string, _flags: { json?: boolean }) => {
      const made = await ctx.pyro.createSnapshot(id, name, { signal: ctx.signal });
      emit(ctx, made, () => `snapshot ${made.snapshot.name} of ${id} at ${made.snapshot.createdAt}`);
    });
  snapshot
    .command("list")
    .description("list the workspace's snapshots (baseline first)")
    .argument("<workspace-id>")
    .option("--json", "print JSON")
    .action(async (id: string, _flags: { json?: boolean }) => {
      const list = await ctx.pyro.listSnapshots(id);
      emit(ctx, list, () => table([["NAME", "CREATED_AT"], ...list.snapshots.map((s) => [s.name, s.createdAt])]));
    });
  snapshot
    .command("delete")
    .description("delete a snapshot (not baseline)")
    .argument("<workspace-id>")
    .argument("<snapshot-name>")
    .option("--json", "print JSON")
    .action(async (id: string, name: string, _flags: { json?: boolean }) => {
      const result = await ctx.pyro.deleteSnapshot(id, name);
      emit(ctx, result, () => `deleted snapshot ${name} of ${id}`);
    });

  ws.command("reset")
    .description("return the workspace (files and VM) to a snapshot, baseline by default; it boots again from that disk")
    .argument("<workspace-id>")
    .option("--snapshot <name>", "snapshot to return to (default baseline)")
    .option("--json", "print JSON")
    .action(async (id: string, flags: { snapshot?: string; json?: boolean }) => {
      const info = await ctx.pyro.resetWorkspace(id, { snapshot: flags.snapshot, signal: ctx.signal, onProgress: ctx.progress.onProgress });
      emit(ctx, info, () => describeWorkspace(info));
    });

  ws.command("stop")
    .description("pause a workspace: save its memory, processes and disk, and free its VM (start resumes it)")
    .argument("<workspace-id>")
    .option("--json", "print JSON")
    .action(async (id: string, _flags: { json?: boolean }) => {
      const info = await ctx.pyro.stopWorkspace(id, { signal: ctx.signal, onProgress: ctx.progress.onProgress });
      emit(ctx, info, () => describeWorkspace(info));
    });

  ws.command("start")
    .description("resume a stopped workspace where it was (or boot it cold from its disk if its memory was not saved)")
    .argument("<workspace-id>")
    .option("--json", "print JSON")
    .action(async (id: string, _flags: { json?: boolean }) => {
      const info = await ctx.pyro.startWorkspace(id, { signal: ctx.signal, onProgress: ctx.progress.onProgress });
      emit(ctx, info, () => describeWorkspace(info));
    });

  ws.command("fork")
    .description("copy a running workspace (memory, processes, files) into new ones, each its own machine")
    .argument("<workspace-id>")
    .addOption(new Option("--count <n>", "how many forks, 1 to 8 (default 1, or one per --name)").argParser(intParser("--count", "count")))
    .addOption(new Option("--name <name>", "a name for the next fork (repeatable)").argParser((value: string, previous: string[] = []) => [...previous, value]))
    .option("--json", "print JSON")
    .action(async (id: string, flags: { count?: number; name?: string[]; json?: boolean }) => {
      const result = await ctx.pyro.forkWorkspace(id, { count: flags.count, names: flags.name, signal: ctx.signal, onProgress: ctx.progress.onProgress });
      emit(ctx, result, () => result.workspaces.map((w) => `${w.workspaceId}${w.name ? ` (${w.name})` : ""}`).join("\n"));
    });

  ws.command("delete")
    .description("kill the workspace's VM and remove everything of it")
    .argument("<workspace-id>")
    .option("--json", "print JSON")
    .action(async (id: string, _flags: { json?: boolean }) => {
      const result = await ctx.pyro.deleteWorkspace(id);
      emit(ctx, result, () => `deleted ${result.workspaceId}`);
    });
}
