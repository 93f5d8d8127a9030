import { Option, type Command } from "commander";
import { outColors as pc } from "../color.js";
import { InvalidArgumentError } from "../../errors.js";
import type { WorkspaceInfo } from "../../sdk/types.js";
import { shellJoin } from "../../util/shell.js";
import { emit, table, type CliContext } from "../context.js";
import { timeoutOption, vmOptions, vmOptionsFrom, type VmFlags } from "../options.js";
import { streamTo, writeExecResult } from "./run.js";

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
Example:
  id=$(pyro workspace create debian:12 --seed-path ./repo --id-only)
  pyro workspace exec "$id" -- make test
  pyro workspace sync push "$id" ./repo/src --dest src
  pyro workspace exec "$id" -- make test
  pyro workspace logs "$id"
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
  create
    .option("--json", "print JSON")
    .option("--id-only", "print only the workspace id")
    .action(async (environment: string, flags: VmFlags & { seedPath?: string; name?: string; label?: Record<string, string>; idOnly?: boolean }) => {
      const info = await ctx.pyro.createWorkspace({
        environment,
        seedPath: flags.seedPath,
        name: flags.name,
        labels: flags.label,
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
    .option("--json", "print JSON")
    .action(async (id: string, source: string, flags: { dest?: string; json?: boolean }) => {
      const result = await ctx.pyro.pushWorkspaceSync(id, source, { dest: flags.dest, signal: ctx.signal });
      emit(ctx, result, () => `pushed ${result.files} files, ${result.dirs} directories, ${result.symlinks} symlinks (${result.bytes} bytes) into ${result.dest}`);
    });

  ws.command("exec")
    .description("run a command in /workspace; files persist between commands")
    .argument("<workspace-id>")
    .argument("[command...]", "the command, after --")
    .addOption(timeoutOption())
    .option("--json", "print one JSON result document")
    .action(async (id: string, command: string[], flags: VmFlags) => {
      const result = await ctx.pyro.execWorkspace(id, { command: shellJoin(command), timeoutSeconds: flags.timeoutSeconds, signal: ctx.signal, onOutput: streamTo(ctx) });
      writeExecResult(ctx, result, !ctx.json);
    });

  ws.command("status")
    .description("show a workspace (a workspace whose VM died shows as failed)")
    .argument("<workspace-id>")
    .option("--json", "print JSON")
    .action(async (id: string, _flags: { json?: boolean }) => {
      const info = await ctx.pyro.statusWorkspace(id);
      emit(ctx, info, () => describeWorkspace(info));
    });

  ws.command("logs")
    .description("the journal of every command run in the workspace, in order")
    .argument("<workspace-id>")
    .option("--json", "print JSON")
    .action(async (id: string, _flags: { json?: boolean }) => {
      const logs = await ctx.pyro.logsWorkspace(id);
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
    .option("--json", "print JSON")
    .action(async (_flags: { json?: boolean }) => {
      const workspaces = await ctx.pyro.listWorkspaces();
      emit(ctx, { workspaces }, () =>
        workspaces.length
          ? table([["WORKSPACE_ID", "NAME", "ENVIRONMENT", "STATE", "COMMANDS", "EXPIRES_AT"], ...workspaces.map((w) => [w.workspaceId, w.name ?? "-", w.environment, w.state, String(w.commandCount), w.expiresAt])])
          : "no workspaces",
      );
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
