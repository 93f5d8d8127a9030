// One command in a fresh microVM, with automatic cleanup: the usual way in.
//   npx tsx examples/sdk_run.ts
import { Pyro } from "pyro-mcp";

const pyro = new Pyro();
const result = await pyro.runInVm({
  environment: "debian:12",
  command: "git --version && uname -r",
  timeoutSeconds: 60,
});
console.log(`exit ${result.exitCode} in ${result.durationMs} ms (${result.executionMode}, ${result.accel})`);
process.stdout.write(result.stdout);
