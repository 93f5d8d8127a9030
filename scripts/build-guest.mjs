// Builds the static guest agent (Go, standard library only) into dist/guest/.
import { spawnSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = join(root, "dist", "guest", "pyro-agent");
mkdirSync(dirname(out), { recursive: true });
const result = spawnSync("go", ["build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", out, "./cmd/pyro-agent"], {
  cwd: join(root, "guest"),
  stdio: "inherit",
  env: { ...process.env, CGO_ENABLED: "0", GOFLAGS: "-mod=mod", GOTOOLCHAIN: "local" },
});
if (result.error) {
  console.error(`build-guest: could not run go (${result.error.message}); install it with: apt-get install golang-go`);
  process.exit(1);
}
process.exit(result.status ?? 1);
