// A persistent workspace: seed /workspace from a host directory, run commands
// that share files, push a later host change. `await using` deletes the
// workspace when the block ends, whatever happens in it.
//   npx tsx examples/sdk_workspace.ts
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Pyro } from "pyro-mcp";

const project = mkdtempSync(join(tmpdir(), "pyro-example-"));
writeFileSync(join(project, "greet.sh"), 'echo "hello, $1"\n');

try {
  const pyro = new Pyro();
  await using ws = await pyro.createWorkspace({ environment: "debian:12", seedPath: project, name: "example" });
  console.log((await ws.exec("sh greet.sh seed")).stdout.trim());
  await ws.exec("echo built > out.txt");

  writeFileSync(join(project, "greet.sh"), 'echo "hi again, $1"\n');
  const pushed = await ws.push(project);
  console.log(`pushed ${pushed.files} file(s) into ${pushed.dest}`);

  console.log((await ws.exec("sh greet.sh push && cat out.txt")).stdout.trim());
  const logs = await ws.logs();
  console.log(`${logs.entries.length} commands in the journal`);
} finally {
  rmSync(project, { recursive: true, force: true });
}
