import { Option, type Command } from "commander";
import { InvalidArgumentError } from "../../errors.js";
import { DEFAULT_PROFILE, PROFILE_TOOLS, PROFILES, type ProfileName } from "../../tools/profiles.js";
import type { CliContext } from "../context.js";
import { intParser } from "../options.js";

export function registerMcp(program: Command, ctx: CliContext, version: string): void {
  const mcp = program.command("mcp").description("the MCP server, for MCP clients (Claude Desktop, Claude Code, Cursor, Codex, ...)");
  mcp
    .command("serve")
    .description("serve pyro's tools over MCP (stdio by default; Streamable HTTP with --transport http)")
    .addOption(new Option("--profile <profile>", "which tools to offer").choices(PROFILES).default(DEFAULT_PROFILE))
    .addOption(new Option("--transport <transport>", "stdio, or Streamable HTTP on /mcp").choices(["stdio", "http"]).default("stdio"))
    .option("--host <host>", "address to listen on with --transport http (loopback by default; anything else requires a bearer token)", "127.0.0.1")
    .addOption(new Option("--port <port>", "port to listen on with --transport http (0 picks a free one)").default(8765).argParser(intParser("--port", "port")))
    .addHelpText(
      "after",
      `
Profiles:
${PROFILES.map((p) => `  ${p.padEnd(15)} ${PROFILE_TOOLS[p].join(", ")}`).join("\n")}

With --transport http the token comes from PYRO_MCP_TOKEN; when listening beyond
loopback without one, a token is generated and printed on stderr. Host and Origin
headers must name this server (DNS rebinding protection).`,
    )
    .action(async (flags: { profile: ProfileName; transport: "stdio" | "http"; host: string; port: number }) => {
      if (flags.port < 0 || flags.port > 65535) throw new InvalidArgumentError("port", `must be between 0 and 65535, got ${flags.port}`);
      // The MCP SDK and the tool schemas load only here: every other command starts faster.
      const { isLoopback, serveHttp, serveStdio } = await import("../../mcp/server.js");
      const options = { profile: flags.profile, version };
      if (flags.transport === "stdio") {
        await serveStdio(ctx.pyro, options);
        return;
      }
      const token = process.env.PYRO_MCP_TOKEN || undefined;
      const handle = await serveHttp(ctx.pyro, { ...options, host: flags.host, port: flags.port, token });
      if (!isLoopback(flags.host) && token) process.stderr.write("pyro mcp: bearer token required (from PYRO_MCP_TOKEN)\n");
      await new Promise<void>((resolvePromise) => ctx.signal.addEventListener("abort", () => resolvePromise(), { once: true }));
      await handle.close();
    });
}
