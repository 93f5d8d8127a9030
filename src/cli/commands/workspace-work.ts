import { Option, type Command } from "commander";
import { ErrorCode, InvalidArgumentError, PyroError } from "../../errors.js";
import type { ServiceInfo, ServiceReadiness, ShellSignalName } from "../../sdk/types.js";
import { oneWordShellLineHint, shellJoin } from "../../util/shell.js";
import { emit, table, type CliContext } from "../context.js";
import { intParser } from "../options.js";

/** The key that leaves `shell attach` without closing the shell: Ctrl-] (as telnet's). */
const DETACH_KEY = 0x1d;
const ATTACH_POLL_MS = 60;

function describeService(s: ServiceInfo): string {
  const ports = s.publishedPorts.map((p) => `${p.host}:${p.hostPort} → guest ${p.guestPort}`);
  return [
    `name:            ${s.name}`,
    `state:           ${s.state}${s.state === "exited" ? ` (${s.signal ?? `exit ${s.exitCode ?? "?"}`})` : ""}`,
    `command:         ${s.command}`,
    `cwd:             ${s.cwd}`,
    `pid:             ${s.pid ?? "-"}`,
    `started_at:      ${s.startedAt ?? "-"}`,
    `ready_at:        ${s.readyAt ?? "-"}`,
    `published_ports: ${ports.length ? ports.join(", ") : "-"}`,
    ...(s.detail ? [`detail:          ${s.detail}`] : []),
  ].join("\n");
}

/** `--secret-env ENV=SECRET` (repeatable) into { ENV: SECRET }. */
export function secretEnvOption(): Option {
  return new Option("--secret-env <env=secret>", "set environment variable ENV from the workspace's secret SECRET (repeatable)").argParser((value: string, previous: Record<string, string> = {}) => {
    const eq = value.indexOf("=");
    if (eq <= 0 || eq === value.length - 1) throw new InvalidArgumentError("secretEnv", `--secret-env takes ENV=SECRET_NAME, got "${value}"`, "e.g. --secret-env API_TOKEN=api_token");
    return { ...previous, [value.slice(0, eq)]: value.slice(eq + 1) };
  });
}

function readinessFrom(flags: { readyFile?: string; readyTcp?: number; readyHttp?: string; readyCommand?: string; readyTimeoutSeconds?: number }): ServiceReadiness | undefined {
  const given = [flags.readyFile !== undefined, flags.readyTcp !== undefined, flags.readyHttp !== undefined, flags.readyCommand !== undefined].filter(Boolean).length;
  if (given > 1) throw new InvalidArgumentError("readiness", "give one of --ready-file, --ready-tcp, --ready-http, --ready-command");
  const timeoutSeconds = flags.readyTimeoutSeconds;
  if (flags.readyFile !== undefined) return { type: "file", path: flags.readyFile, timeoutSeconds };
  if (flags.readyTcp !== undefined) return { type: "tcp", port: flags.readyTcp, timeoutSeconds };
  if (flags.readyHttp !== undefined) return { type: "http", url: flags.readyHttp, timeoutSeconds };
  if (flags.readyCommand !== undefined) return { type: "command", command: flags.readyCommand, timeoutSeconds };
  if (timeoutSeconds !== undefined) throw new InvalidArgumentError("readiness", "--ready-timeout-seconds needs one of --ready-file, --ready-tcp, --ready-http, --ready-command");
  return undefined;
}

function parsePublish(value: string, previous: { guestPort: number; hostPort?: number }[] = []): { guestPort: number; hostPort?: number }[] {
  const match = /^(?:(\d{1,5}):)?(\d{1,5})$/.exec(value);
  if (!match) throw new InvalidArgumentError("publish", `--publish takes GUEST_PORT or HOST_PORT:GUEST_PORT, got "${value}"`, "e.g. --publish 8080 or --publish 18080:8080");
  return [...previous, { guestPort: Number(match[2]), ...(match[1] === undefined ? {} : { hostPort: Number(match[1]) }) }];
}

/** `pyro workspace shell …` and `pyro workspace service …`: long-running work in a workspace. */
export function registerWorkspaceWork(ws: Command, ctx: CliContext): void {
  const shell = ws
    .command("shell")
    .description("interactive shells in a workspace (bash on a terminal; state kept between calls)")
    .addHelpText(
      "after",
      `
Example:
  id=$(pyro workspace create debian:12 --id-only)
  sh=$(pyro workspace shell open "$id" --id-only)
  pyro workspace shell write "$id" "$sh" 'cd /tmp && export GREETING=hello'
  pyro workspace shell write "$id" "$sh" 'echo "$GREETING from $PWD"'    # the shell keeps its state
  pyro workspace shell write "$id" "$sh" 'sleep 600'
  pyro workspace shell signal "$id" "$sh" INT                              # Ctrl-C
  pyro workspace shell read "$id" "$sh" --wait-for-idle-ms 500 --plain
  pyro workspace shell close "$id" "$sh"
  pyro workspace delete "$id"

On a terminal, pyro workspace shell attach ID SHELL_ID is the shell for you (Ctrl-] detaches).`,
    );

  shell
    .command("open")
    .description("open a shell; it runs until closed")
    .argument("<workspace-id>")
    .option("--cwd <path>", "working directory under /workspace (default /workspace)")
    .addOption(new Option("--cols <n>", "terminal columns (default 120)").argParser(intParser("--cols", "cols")))
    .addOption(new Option("--rows <n>", "terminal rows (default 30)").argParser(intParser("--rows", "rows")))
    .addOption(secretEnvOption())
    .option("--id-only", "print only the shell id")
    .option("--json", "print JSON")
    .action(async (id: string, flags: { cwd?: string; cols?: number; rows?: number; secretEnv?: Record<string, string>; idOnly?: boolean }) => {
      const opened = await ctx.pyro.openShell(id, { cwd: flags.cwd, cols: flags.cols, rows: flags.rows, secretEnv: flags.secretEnv, signal: ctx.signal });
      if (flags.idOnly && !ctx.json) process.stdout.write(`${opened.shellId}\n`);
      else emit(ctx, opened, () => `${opened.shellId} (pid ${opened.pid}, ${opened.cols}x${opened.rows}, in ${opened.cwd})`);
    });

  shell
    .command("list")
    .description("list the workspace's shells")
    .argument("<workspace-id>")
    .option("--json", "print JSON")
    .action(async (id: string) => {
      const shells = await ctx.pyro.listShells(id, { signal: ctx.signal });
      emit(ctx, { workspaceId: id, shells }, () =>
        shells.length ? table([["SHELL_ID", "STATE", "PID", "SIZE", "CWD", "OUTPUT_BYTES"], ...shells.map((s) => [s.shellId, s.state, String(s.pid), `${s.cols}x${s.rows}`, s.cwd, String(s.endCursor)])]) : "no shells",
      );
    });

  shell
    .command("read")
    .description("print a shell's output from --cursor; the next cursor goes to standard error")
    .argument("<workspace-id>")
    .argument("<shell-id>")
    .addOption(new Option("--cursor <n>", "where to start (default 0; then the previous next_cursor)").argParser(intParser("--cursor", "cursor")))
    .addOption(new Option("--max-chars <n>", "at most this much output (default 65536)").argParser(intParser("--max-chars", "maxChars")))
    .option("--plain", "strip colours and terminal control sequences")
    .addOption(new Option("--wait-for-idle-ms <n>", "first wait until the shell has been quiet this long").argParser(intParser("--wait-for-idle-ms", "waitForIdleMs")))
    .option("--json", "print JSON")
    .action(async (id: string, shellId: string, flags: { cursor?: number; maxChars?: number; plain?: boolean; waitForIdleMs?: number }) => {
      const read = await ctx.pyro.readShell(id, shellId, { cursor: flags.cursor, maxChars: flags.maxChars, plain: flags.plain, waitForIdleMs: flags.waitForIdleMs, signal: ctx.signal });
      if (ctx.json) return emit(ctx, read, () => "");
      process.stdout.write(read.output);
      const dropped = read.droppedChars ? `, ${read.droppedChars} bytes dropped before it` : "";
      process.stderr.write(`\n(next cursor ${read.nextCursor}${dropped}; shell ${read.state}${read.state === "exited" ? ` ${read.signal ?? `exit ${read.exitCode ?? "?"}`}` : ""})\n`);
    });

  shell
    .command("write")
    .description("type input into a shell, then Enter (unless --no-newline)")
    .argument("<workspace-id>")
    .argument("<shell-id>")
    .argument("[input...]", "what to type (joined with spaces); standard input when none")
    .option("--no-newline", "do not press Enter after the input")
    .option("--json", "print JSON")
    .action(async (id: string, shellId: string, input: string[], flags: { newline: boolean }) => {
      let text = input.join(" ");
      if (input.length === 0) {
        if (process.stdin.isTTY) throw new InvalidArgumentError("input", "give the input as arguments or on standard input");
        const chunks: Buffer[] = [];
        for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
        text = Buffer.concat(chunks).toString("utf8");
      }
      const written = await ctx.pyro.writeShell(id, shellId, text, { appendNewline: flags.newline, signal: ctx.signal });
      emit(ctx, written, () => `wrote ${written.bytes} bytes`);
    });

  shell
    .command("signal")
    .description("send INT (Ctrl-C), TERM, KILL or HUP to the shell's foreground job")
    .argument("<workspace-id>")
    .argument("<shell-id>")
    .argument("<signal>", "INT, TERM, KILL or HUP")
    .option("--json", "print JSON")
    .action(async (id: string, shellId: string, signal: string) => {
      const sent = await ctx.pyro.signalShell(id, shellId, signal as ShellSignalName, { signal: ctx.signal });
      emit(ctx, sent, () => `sent ${sent.signal}`);
    });

  shell
    .command("close")
    .description("end a shell and everything it started")
    .argument("<workspace-id>")
    .argument("<shell-id>")
    .option("--json", "print JSON")
    .action(async (id: string, shellId: string) => {
      const closed = await ctx.pyro.closeShell(id, shellId, { signal: ctx.signal });
      emit(ctx, closed, () => `closed ${shellId}`);
    });

  shell
    .command("attach")
    .description("use a shell from this terminal (opens a new one without <shell-id>); Ctrl-] detaches and leaves it running")
    .argument("<workspace-id>")
    .argument("[shell-id]")
    .action(async (id: string, shellId: string | undefined) => {
      if (!process.stdin.isTTY || !process.stdout.isTTY) throw new InvalidArgumentError("terminal", "shell attach needs a terminal on standard input and output", "use shell write and shell read from scripts");
      const size = () => ({ cols: Math.max(1, Math.min(1000, process.stdout.columns || 120)), rows: Math.max(1, Math.min(500, process.stdout.rows || 30)) });
      const target = shellId ?? (await ctx.pyro.openShell(id, { ...size(), signal: ctx.signal })).shellId;
      await ctx.pyro.resizeShell(id, target, size());
      process.stderr.write(`attached to ${target} in ${id}; Ctrl-] detaches\r\n`);
      const first = await ctx.pyro.readShell(id, target, { maxChars: 1 });
      // Start at the end of what is there, but show the last screenful first.
      let cursor = Math.max(0, first.nextCursor + first.droppedChars - 4096);
      let writing = Promise.resolve();
      let done = false;
      let detached = false;
      const stdin = process.stdin;
      stdin.setRawMode(true);
      stdin.resume();
      const onData = (data: Buffer) => {
        const at = data.indexOf(DETACH_KEY);
        const send = at >= 0 ? data.subarray(0, at) : data;
        if (send.length) writing = writing.then(() => ctx.pyro.writeShell(id, target, send.toString("utf8"), { appendNewline: false }).then(() => undefined));
        if (at >= 0) {
          detached = true;
          done = true;
        }
      };
      const onResize = () => void ctx.pyro.resizeShell(id, target, size()).catch(() => undefined);
      stdin.on("data", onData);
      process.stdout.on("resize", onResize);
      try {
        while (!done && !ctx.signal.aborted) {
          const read = await ctx.pyro.readShell(id, target, { cursor, maxChars: 65_536 });
          if (read.output) process.stdout.write(read.output);
          cursor = read.nextCursor;
          if (read.state === "exited") {
            process.stderr.write(`\r\nthe shell exited (${read.signal ?? `exit ${read.exitCode ?? "?"}`})\r\n`);
            break;
          }
          if (!read.output) await new Promise((r) => setTimeout(r, ATTACH_POLL_MS));
        }
        await writing;
      } finally {
        stdin.off("data", onData);
        process.stdout.off("resize", onResize);
        stdin.setRawMode(false);
        stdin.pause();
      }
      if (detached) process.stderr.write(`\r\ndetached; the shell runs on (pyro workspace shell attach ${id} ${target})\r\n`);
    });

  const service = ws
    .command("service")
    .description("background services in a workspace (dev servers, databases), with readiness checks and published ports")
    .addHelpText(
      "after",
      `
Example (git's daemon, which debian:12 has, serving /workspace on its port 9418):
  id=$(pyro workspace create debian:12 --network-policy egress+published-ports --id-only)
  pyro workspace service start "$id" git --ready-tcp 9418 --publish 9418 -- git daemon --reuseaddr --export-all --base-path=/workspace
  pyro workspace service logs "$id" git --tail-lines 50
  pyro workspace service stop "$id" git
  pyro workspace delete "$id"

service start prints the host port it published on 127.0.0.1 (--publish HOST:GUEST picks it).`,
    );

  service
    .command("start")
    .description("start a named service and wait until it is ready")
    .argument("<workspace-id>")
    .argument("<name>", "lowercase letters, digits, '.', '_', '-'")
    .argument("[command...]", "the command, after --")
    .option("--cwd <path>", "working directory under /workspace (default /workspace)")
    .option("--ready-file <path>", "ready once this file exists")
    .addOption(new Option("--ready-tcp <port>", "ready once this guest port accepts connections").argParser(intParser("--ready-tcp", "readiness.port")))
    .option("--ready-http <url>", "ready once this http:// URL (fetched in the guest) answers 2xx or 3xx")
    .option("--ready-command <command>", "ready once this shell command exits 0")
    .addOption(new Option("--ready-timeout-seconds <n>", "how long to wait for readiness (default 60)").argParser(intParser("--ready-timeout-seconds", "readiness.timeoutSeconds")))
    .addOption(new Option("--publish <[host:]guest>", "publish a guest port on the host's 127.0.0.1 (repeatable; needs --network-policy egress+published-ports)").argParser(parsePublish))
    .addOption(secretEnvOption())
    .option("--json", "print JSON")
    .action(
      async (
        id: string,
        name: string,
        command: string[],
        flags: { cwd?: string; readyFile?: string; readyTcp?: number; readyHttp?: string; readyCommand?: string; readyTimeoutSeconds?: number; publish?: { guestPort: number; hostPort?: number }[]; secretEnv?: Record<string, string> },
      ) => {
        if (command.length === 0) throw new InvalidArgumentError("command", "give the service's command after --", "e.g. pyro workspace service start ID web -- ./serve --port 8080");
        const started = await ctx.pyro
          .startService(id, {
            name,
            command: shellJoin(command),
            cwd: flags.cwd,
            readiness: readinessFrom(flags),
            publish: flags.publish,
            secretEnv: flags.secretEnv,
            signal: ctx.signal,
          })
          .catch((error: unknown) => {
            throw withShellLineHint(error, command);
          });
        emit(ctx, started, () => describeService(started));
      },
    );

  service
    .command("list")
    .description("list the workspace's services")
    .argument("<workspace-id>")
    .option("--json", "print JSON")
    .action(async (id: string) => {
      const services = await ctx.pyro.listServices(id, { signal: ctx.signal });
      emit(ctx, { workspaceId: id, services }, () =>
        services.length
          ? table([
              ["NAME", "STATE", "PID", "PUBLISHED", "COMMAND"],
              ...services.map((s) => [s.name, s.state === "exited" ? `exited (${s.signal ?? s.exitCode ?? "?"})` : s.state, String(s.pid ?? "-"), s.publishedPorts.map((p) => `${p.hostPort}→${p.guestPort}`).join(",") || "-", s.command]),
            ])
          : "no services",
      );
    });

  service
    .command("status")
    .description("show one service")
    .argument("<workspace-id>")
    .argument("<name>")
    .option("--json", "print JSON")
    .action(async (id: string, name: string) => {
      const status = await ctx.pyro.serviceStatus(id, name, { signal: ctx.signal });
      emit(ctx, status, () => describeService(status));
    });

  service
    .command("logs")
    .description("print the last lines of a service's output")
    .argument("<workspace-id>")
    .argument("<name>")
    .addOption(new Option("--tail-lines <n>", "lines from the end (default 200)").argParser(intParser("--tail-lines", "tailLines")))
    .option("--json", "print JSON")
    .action(async (id: string, name: string, flags: { tailLines?: number }) => {
      const logs = await ctx.pyro.serviceLogs(id, name, { tailLines: flags.tailLines, signal: ctx.signal });
      if (ctx.json) return emit(ctx, logs, () => "");
      process.stdout.write(logs.output);
    });

  service
    .command("stop")
    .description("stop a service (TERM, then KILL after 3 s) and close its published ports")
    .argument("<workspace-id>")
    .argument("<name>")
    .option("--json", "print JSON")
    .action(async (id: string, name: string) => {
      const stopped = await ctx.pyro.stopService(id, name, { signal: ctx.signal });
      emit(ctx, stopped, () => describeService(stopped));
    });
}

/** `--secret NAME=VALUE` and `--secret-file NAME=PATH`, both repeatable, in the order given. */
export function secretOptions(): Option[] {
  const collect = (kind: "value" | "file") => (value: string, previous: ({ name: string; value: string } | { name: string; filePath: string })[] = []) => {
    const eq = value.indexOf("=");
    if (eq <= 0) throw new InvalidArgumentError("secrets", `--secret${kind === "file" ? "-file" : ""} takes NAME=${kind === "file" ? "PATH" : "VALUE"}`, kind === "file" ? "e.g. --secret-file api_token=./token.txt" : "e.g. --secret api_token=abc123");
    const name = value.slice(0, eq);
    const rest = value.slice(eq + 1);
    return [...previous, kind === "file" ? { name, filePath: rest } : { name, value: rest }];
  };
  return [
    new Option("--secret <name=value>", "a secret for this workspace (repeatable); prefer --secret-file, as values on a command line show in process lists").argParser(collect("value")),
    new Option("--secret-file <name=path>", "a secret read from a host file (repeatable; one trailing newline dropped)").argParser(collect("file")),
  ];
}

/** Both secret flags land in separate lists; the SDK takes one. */
export function secretsFrom(flags: { secret?: { name: string; value: string }[]; secretFile?: { name: string; filePath: string }[] }): ({ name: string; value: string } | { name: string; filePath: string })[] | undefined {
  const all = [...(flags.secret ?? []), ...(flags.secretFile ?? [])];
  return all.length ? all : undefined;
}

/**
 * A service given as one argument holding a whole shell line runs as one
 * word and exits 126 or 127 before it is ready: the failure then says how to
 * run the line, as `pyro workspace exec` does.
 */
function withShellLineHint(error: unknown, argv: readonly string[]): unknown {
  if (!(error instanceof PyroError) || error.code !== ErrorCode.serviceFailed) return error;
  const exitCode = error.details?.exitCode;
  const hint = typeof exitCode === "number" ? oneWordShellLineHint(argv, exitCode) : undefined;
  return hint === undefined ? error : new PyroError(error.code, error.message, { hint, details: error.details, cause: error });
}
