// Builds pyro's Go programs (standard library only, static): the guest agent
// into dist/guest/, and the host-side helpers (the network helper and QEMU's
// launcher) into dist/netd/.
import { spawnSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const programs = [
  { module: "guest", pkg: "./cmd/pyro-agent", out: join(root, "dist", "guest", "pyro-agent") },
  { module: "netd", pkg: "./cmd/pyro-netd", out: join(root, "dist", "netd", "pyro-netd") },
  { module: "netd", pkg: "./cmd/pyro-launch", out: join(root, "dist", "netd", "pyro-launch") },
];
for (const program of programs) {
  mkdirSync(dirname(program.out), { recursive: true });
  const result = spawnSync("go", ["build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", program.out, program.pkg], {
    cwd: join(root, program.module),
    stdio: "inherit",
    env: { ...process.env, CGO_ENABLED: "0", GOFLAGS: "-mod=mod", GOTOOLCHAIN: "local" },
  });
  if (result.error) {
    console.error(`build-go: could not run go (${result.error.message}); install it with: apt-get install golang-go`);
    process.exit(1);
  }
  if (result.status !== 0) process.exit(result.status ?? 1);
}
