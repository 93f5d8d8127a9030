import { Option, type Command } from "commander";
import { InvalidArgumentError } from "../../errors.js";
import { Pyro } from "../../sdk/pyro.js";
import { DEFAULT_PROFILE, PROFILE_TOOLS, PROFILES, type ProfileName } from "../../tools/profiles.js";
import type { CliContext } from "../context.js";
import { intParser } from "../options.js";

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

export function registerMcp(program: Command, ctx: CliContext, version: string): void {
  const mcp = program.command("mcp").description("the MCP server, for MCP clients (Claude Desktop, Claude Code, Cursor, Codex, ...)");
  mcp
    .command("serve")
    .description("serve pyro's tools over MCP (stdio by default; Streamable HTTP with --transport http)")
    .addOption(new Option("--profile <profile>", "which tools to offer").choices(PROFILES).default(DEFAULT_PROFILE))
    .addOption(new Option("--transport <transport>", "stdio, or Streamable HTTP on /mcp").choices(["stdio", "http"]).default("stdio"))
    .option("--host <host>", "address to listen on with --transport http (default loopback)", "127.0.0.1")
    .addOption(new Option("--port <port>", "port to listen on with --transport http (0 picks a free one)").default(8765).argParser(intParser("--port", "port")))
    .option("--allow-root <dir>", "a host directory whose files models may name as seed_path or source_path (repeatable; default: the current directory, unless it is / or the home directory or above it)", collect, [])
    .option("--allow-host <name>", "limit every guest's network to these host names (repeatable; *.example.org for subdomains); tools may narrow it, never widen it", collect, [])
    .option("--allow-host-compat", "when no guest can boot on this host, let tools run commands on the host WITHOUT isolation (default off; models cannot turn it on)")
    .addOption(
      new Option("--keep-warm <n>", "VMs kept warm per machine shape vm_run has used, refilled after each run and deleted on exit; each holds its guest memory meanwhile (`pyro pool list` shows them; 0 turns it off; PYRO_POOL_SIZE overrides)")
        .default(1)
        .argParser(intParser("--keep-warm", "keepWarm")),
    )
    .addHelpText(
      "after",
      `
Profiles:
${PROFILES.map((p) => `  ${p.padEnd(15)} ${PROFILE_TOOLS[p].join(", ")}`).join("\n")}

Network: tools create guests without network unless asked (network_policy).
Egress reaches the public internet only, never this host or private ranges;
--allow-host limits it to names, and a model can narrow that list, not widen it.
The operator opens other destinations with PYRO_NETWORK_ALLOW_DESTINATIONS.

Host files: a model may name as seed_path or source_path only paths under the
--allow-root directories (symlinks resolved); anything else is refused with
source_refused. Started from /, the home directory or above it, no directory
is shared unless named.

With --transport http every request needs "Authorization: Bearer <token>",
on loopback too. The token is PYRO_MCP_TOKEN, or generated and printed on
stderr; either way it is written to <state dir>/mcp/http-<port>.token (mode
0600) while the server runs. The Host header must name this server (DNS
rebinding protection).`,
    )
    .action(async (flags: { profile: ProfileName; transport: "stdio" | "http"; host: string; port: number; allowRoot: string[]; allowHost: string[]; allowHostCompat?: boolean; keepWarm: number }) => {
      if (flags.port < 0 || flags.port > 65535) throw new InvalidArgumentError("port", `must be between 0 and 65535, got ${flags.port}`, "a TCP port: 1 to 65535, or 0 for a free one (default 8765)");
      if (flags.keepWarm < 0 || flags.keepWarm > 16) throw new InvalidArgumentError("keepWarm", `must be between 0 and 16, got ${flags.keepWarm}`, "VMs kept warm per machine shape: 0 (off) to 16 (default 1)");
      // A server lives long: it keeps VMs warm so a model's vm_run starts from one, and deletes them when it stops.
      const pyro = new Pyro({ keepWarm: flags.keepWarm });
      // The MCP SDK and the tool schemas load only here: every other command starts faster.
      const [{ serveHttp, serveStdio }, { defaultToolPolicy }] = await Promise.all([import("../../mcp/server.js"), import("../../tools/policy.js")]);
      const policy = defaultToolPolicy({
        allowHostCompat: flags.allowHostCompat === true,
        allowedRoots: flags.allowRoot.length ? flags.allowRoot : undefined,
        allowHosts: flags.allowHost,
      });
      process.stderr.write(`pyro mcp: sharing host files under ${policy.allowedRoots.length ? policy.allowedRoots.join(", ") : "no directory (pass --allow-root DIR)"}\n`);
      if (policy.allowHosts.length) process.stderr.write(`pyro mcp: guests may reach only ${policy.allowHosts.join(", ")}\n`);
      if (policy.allowHostCompat) process.stderr.write("pyro mcp: host-compat is ON: when no guest can boot, commands run on this host without isolation\n");
      const options = { profile: flags.profile, version, policy };
      // A failure that escaped one call (a library's callback, a stray promise) is logged; the other calls and their VMs live on.
      const survive = (what: string) => (error: unknown) => {
        process.stderr.write(`pyro mcp: ${what} (the server keeps running): ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
      };
      const onRejection = survive("unhandled rejection");
      const onException = survive("uncaught exception");
      process.on("unhandledRejection", onRejection);
      process.on("uncaughtException", onException);
      try {
        if (flags.transport === "stdio") {
          await serveStdio(pyro, { ...options, signal: ctx.signal });
          return;
        }
        const token = process.env.PYRO_MCP_TOKEN || undefined;
        const handle = await serveHttp(pyro, { ...options, host: flags.host, port: flags.port, token });
        await new Promise<void>((resolvePromise) => ctx.signal.addEventListener("abort", () => resolvePromise(), { once: true }));
        await handle.close();
      } finally {
        await pyro.close();
        await ctx.pyro.close();
        process.off("unhandledRejection", onRejection);
        process.off("uncaughtException", onException);
      }
    });
}
