import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Command, CommanderError } from "commander";
import { packageRoot } from "../config.js";
import { ErrorCode, PyroError, toPyroError } from "../errors.js";
import { Pyro } from "../sdk/pyro.js";
import { registerDemo } from "./commands/demo.js";
import { registerDoctor } from "./commands/doctor.js";
import { registerEnv } from "./commands/env.js";
import { registerMcp } from "./commands/mcp.js";
import { registerPool } from "./commands/pool.js";
import { registerRun } from "./commands/run.js";
import { registerVm } from "./commands/vm.js";
import { registerWorkspace } from "./commands/workspace.js";
import { newContext, type CliContext } from "./context.js";
import { environmentHelp, exitStatusHelp } from "./help-text.js";
import { EXIT_CODES, printError } from "./output.js";
import { cliVocabulary } from "./vocabulary.js";

function version(): string {
  try {
    return (JSON.parse(readFileSync(join(packageRoot(), "package.json"), "utf8")) as { version: string }).version;
  } catch {
    return "unknown";
  }
}

/** Exit statuses and environment variables, generated from EXIT_CODES and SETTINGS so they cannot drift. */
const EXIT_HELP = `
${exitStatusHelp()}

${environmentHelp()}`;

export function buildProgram(ctx: CliContext): Command {
  const program = new Command()
    .name("pyro")
    .description("Disposable microVM sandboxes for AI agents: run commands in real Linux guests (QEMU microvm).")
    .version(version(), "-V, --version")
    .addHelpText("after", EXIT_HELP)
    .exitOverride();
  registerRun(program, ctx);
  registerEnv(program, ctx);
  registerWorkspace(program, ctx);
  registerVm(program, ctx);
  registerDoctor(program, ctx);
  registerPool(program, ctx);
  registerDemo(program, ctx);
  registerMcp(program, ctx, version());
  const override = (command: Command) => {
    command.exitOverride();
    command.commands.forEach(override);
  };
  override(program);
  program.hook("preAction", (_program, action) => {
    ctx.command = action;
  });
  return program;
}

/** The deepest command named on the command line (`pyro workspace file read`), for pointing at its help. */
function usageOf(program: Command, argv: string[]): string {
  const names = ["pyro"];
  let command = program;
  for (const word of argv.slice(2)) {
    if (word === "--") break;
    const next = command.commands.find((c) => c.name() === word || c.aliases().includes(word));
    if (!next) continue;
    names.push(next.name());
    command = next;
  }
  return names.join(" ");
}

/** Runs the CLI and returns the process exit status. The only place errors become exit codes. */
export async function main(argv: string[] = process.argv): Promise<number> {
  const controller = new AbortController();
  let interrupts = 0;
  const onSignal = () => {
    interrupts += 1;
    controller.abort();
    if (interrupts === 1) process.stderr.write("\npyro: cancelling and cleaning up (press Ctrl-C again to force)\n");
    else process.exit(130);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const ctx = newContext(new Pyro(), controller.signal);
  // Known before parsing, so that even a bad option gets the JSON error document.
  ctx.json = argv.slice(2, argv.includes("--") ? argv.indexOf("--") : undefined).includes("--json");
  const program = buildProgram(ctx);
  try {
    await program.parseAsync(argv);
    return ctx.exitCode;
  } catch (error) {
    ctx.progress.stop();
    if (error instanceof CommanderError) {
      // Help and version requests are not failures; commander has already printed its own message.
      if (error.code === "commander.helpDisplayed" || error.code === "commander.version" || error.code === "commander.help") return 0;
      // Commander has printed the reason; the hint says where the usage is.
      const hint = `see \`${usageOf(program, argv)} --help\` for the usage`;
      process.stderr.write(`hint: ${hint}\n`);
      if (ctx.json) {
        const message = error.message.replace(/^error: /, "");
        process.stdout.write(`${JSON.stringify({ error: { code: ErrorCode.invalidArgument, message, hint } }, null, 2)}\n`);
      }
      return EXIT_CODES[ErrorCode.invalidArgument];
    }
    const failure = controller.signal.aborted && !(error instanceof PyroError) ? new PyroError(ErrorCode.cancelled, "cancelled") : toPyroError(error);
    printError(failure, ctx.json, cliVocabulary(program, ctx.command));
    return EXIT_CODES[failure.code];
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

/** Entry point of bin/pyro. */
export function run(): void {
  void main().then((code) => {
    // Let buffered output reach a pipe before exiting.
    process.stdout.write("", () => process.exit(code));
  });
}
