// A persistent workspace: seed /workspace from a host directory, run commands
// that share files, push a later host change, and clean up.
//   npx tsx examples/sdk_workspace.ts
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Pyro } from "pyro-mcp";

const project = mkdtempSync(join(tmpdir(), "pyro-example-"));
writeFileSync(join(project, "greet.sh"), 'echo "hello, $1"\n');

const pyro = new Pyro();
const ws = await pyro.createWorkspace({ environment: "debian:12", seedPath: project, name: "example" });
try {
  console.log((await pyro.execWorkspace(ws.workspaceId, { command: "sh greet.sh seed" })).stdout.trim());
  await pyro.execWorkspace(ws.workspaceId, { command: "echo built > out.txt" });

  writeFileSync(join(project, "greet.sh"), 'echo "hi again, $1"\n');
  const pushed = await pyro.pushWorkspaceSync(ws.workspaceId, project);
  console.log(`pushed ${pushed.files} file(s) into ${pushed.dest}`);

  console.log((await pyro.execWorkspace(ws.workspaceId, { command: "sh greet.sh push && cat out.txt" })).stdout.trim());
  const logs = await pyro.logsWorkspace(ws.workspaceId);
  console.log(`${logs.entries.length} commands in the journal`);
} finally {
  await pyro.deleteWorkspace(ws.workspaceId);
  rmSync(project, { recursive: true, force: true });
}
