import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, truncateSync, writeFileSync, rmSync, existsSync } from "node:fs";
import { basename, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Pyro } from "../../src/index.js";
import { ensureEnvironment, removeDir, runCli, tempStateDir } from "../helpers.js";

const stateDir = tempStateDir();
/** A cache of our own, seeded with a copy of the shared debian:12, so we can damage it. */
const cacheDir = tempStateDir("pyro-test-cache-");
const envDir = join(cacheDir, "environments");
const env = { PYRO_CACHE_DIR: cacheDir, PYRO_ENVIRONMENT_CACHE_DIR: envDir };

/** The root image an environment entry names (kept by content, beside the entries). */
function rootfsOf(entry: string): string {
  const manifest = JSON.parse(readFileSync(join(entry, "manifest.json"), "utf8")) as { files: { rootfs: { path: string } } };
  return join(entry, manifest.files.rootfs.path);
}

function json<T>(stdout: string): T {
  return JSON.parse(stdout) as T;
}

interface Inspect {
  name: string;
  state: string;
  installed: boolean;
  kernel_release: string | null;
  built_at: string | null;
  digests: { kernel: string; initramfs: string; rootfs: string; agent: string } | null;
}

async function inspect(name: string): Promise<Inspect> {
  const r = await runCli(["env", "inspect", name, "--json"], { stateDir, env });
  assert.equal(r.code, 0, r.stderr);
  return json<Inspect>(r.stdout);
}

describe("environments", () => {
  before(async () => {
    await ensureEnvironment();
    const shared = (await new Pyro().inspectEnvironment("debian:12")).cachePath;
    mkdirSync(envDir, { recursive: true });
    execFileSync("cp", ["-a", "--reflink=auto", shared, join(envDir, "debian-12")]);
    execFileSync("cp", ["-a", "--reflink=auto", join(shared, "..", ".kernels"), join(envDir, ".kernels")]);
    // Only the image debian:12 names (beside the entries, or inside it in older caches).
    mkdirSync(join(envDir, ".images"));
    const image = rootfsOf(join(envDir, "debian-12"));
    const sharedImage = rootfsOf(shared);
    if (!existsSync(image)) execFileSync("cp", ["-a", "--reflink=auto", sharedImage, image]);
  });

  after(() => {
    removeDir(stateDir);
    removeDir(cacheDir);
  });

  test("list and inspect, with --json", async () => {
    const list = await runCli(["env", "list", "--json"], { stateDir, env });
    assert.equal(list.code, 0, list.stderr);
    const names = json<{ environments: { name: string; state: string }[] }>(list.stdout).environments.map((e) => `${e.name}=${e.state}`);
    assert.deepEqual(names, ["debian:12=installed", "debian:12-base=not_installed", "debian:12-build=not_installed"]);
    const human = await runCli(["env", "list"], { stateDir, env });
    assert.match(human.stdout, /^debian:12\s+installed/m);

    const info = await inspect("debian:12");
    assert.equal(info.installed, true);
    assert.match(String(info.kernel_release), /cloud-amd64$/);
    for (const digest of Object.values(info.digests ?? {})) assert.match(digest, /^[0-9a-f]{64}$/);

    const unknown = await runCli(["env", "inspect", "ubuntu:24.04", "--json"], { stateDir, env });
    assert.equal(unknown.code, 65);
    assert.equal(json<{ error: { code: string } }>(unknown.stdout).error.code, "unknown_environment");
  });

  test("an entry without its manifest is never used; leftovers of interrupted builds are pruned", async () => {
    const manifest = join(envDir, "debian-12", "manifest.json");
    const saved = readFileSync(manifest);
    rmSync(manifest);
    assert.equal((await inspect("debian:12")).state, "not_installed");
    writeFileSync(manifest, saved);
    assert.equal((await inspect("debian:12")).state, "installed");

    const leftover = join(envDir, ".build-debian-12-999999-1");
    mkdirSync(join(leftover, "tree"), { recursive: true });
    const pruned = await runCli(["env", "prune", "--json"], { stateDir, env });
    assert.equal(pruned.code, 0, pruned.stderr);
    assert.deepEqual(json<{ removed: string[] }>(pruned.stdout).removed, [".build-debian-12-999999-1"]);
    assert.equal(existsSync(leftover), false);
    assert.equal((await inspect("debian:12")).state, "installed");
  });

  test("a changed guest agent gets a new initramfs before the next boot", async () => {
    const manifestPath = join(envDir, "debian-12", "manifest.json");
    const manifest = json<{ agent: { sha256: string } }>(readFileSync(manifestPath, "utf8"));
    const current = manifest.agent.sha256;
    manifest.agent.sha256 = "0".repeat(64);
    writeFileSync(manifestPath, JSON.stringify(manifest));
    const run = await runCli(["run", "debian:12", "--json", "--", "true"], { stateDir, env });
    assert.equal(run.code, 0, run.stderr);
    assert.equal((await inspect("debian:12")).digests?.agent, current);
  });

  test("a corrupt entry is detected and rebuilt on first use", async () => {
    const before = await inspect("debian:12");
    truncateSync(rootfsOf(join(envDir, "debian-12")), 4096);
    assert.equal((await inspect("debian:12")).state, "corrupt");
    const run = await runCli(["run", "debian:12", "--json", "--", "git", "--version"], { stateDir, env, timeoutMs: 20 * 60_000 });
    assert.equal(run.code, 0, run.stderr);
    assert.match(json<{ stdout: string }>(run.stdout).stdout, /^git version/);
    const after = await inspect("debian:12");
    assert.equal(after.state, "installed");
    assert.notEqual(after.built_at, before.built_at);
  });

  test("debian:12-base: two concurrent pulls build it once; minimal, no git", async () => {
    const progressEnv = { ...env, PYRO_PROGRESS: "1" };
    const [a, b] = await Promise.all([
      runCli(["env", "pull", "debian:12-base", "--json"], { stateDir, env: progressEnv, timeoutMs: 20 * 60_000 }),
      runCli(["env", "pull", "debian:12-base", "--json"], { stateDir, env: progressEnv, timeoutMs: 20 * 60_000 }),
    ]);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(b.code, 0, b.stderr);
    const builds = [a, b].filter((r) => r.stderr.includes("bootstrapping Debian")).length;
    assert.equal(builds, 1, "exactly one process built the environment");
    const run = await runCli(["run", "debian:12-base", "--json", "--", "sh", "-c", "cat /etc/debian_version; command -v git || echo no-git"], { stateDir, env });
    const result = json<{ exit_code: number; stdout: string; environment: string }>(run.stdout);
    assert.equal(result.exit_code, 0);
    assert.equal(result.environment, "debian:12-base");
    assert.match(result.stdout, /^12\.\d+\nno-git\n$/);
  });

  test("a rebuild and a prune leave the image a stopped VM and a running workspace are built on; it goes once they do", async () => {
    const pyro = new Pyro({ stateDir, cacheDir, environmentsDir: envDir });
    const vm = await pyro.createVm({ environment: "debian:12-base" });
    await vm.start();
    await vm.stop();
    await using ws = await pyro.createWorkspace({ environment: "debian:12-base" });
    await ws.exec("echo mine > note");
    const before = await inspect("debian:12-base");
    const oldImage = rootfsOf(join(envDir, "debian-12-base"));

    const rebuilt = await runCli(["env", "pull", "debian:12-base", "--force", "--json"], { stateDir, env, timeoutMs: 20 * 60_000 });
    assert.equal(rebuilt.code, 0, rebuilt.stderr);
    assert.notEqual((await inspect("debian:12-base")).built_at, before.built_at);
    assert.notEqual(rootfsOf(join(envDir, "debian-12-base")), oldImage, "a new build is a new image");
    assert.ok(existsSync(oldImage));

    const pruned = await runCli(["env", "prune", "--json"], { stateDir, env });
    assert.equal(pruned.code, 0, pruned.stderr);
    const kept = json<{ kept: { image: string; used_by: string[] }[] }>(pruned.stdout).kept;
    assert.deepEqual(
      kept.map((k) => ({ image: k.image, users: k.used_by.map((path) => path.split("/").at(-2)).sort() })),
      [{ image: oldImage, users: [vm.vmId, ws.workspaceId].sort() }],
    );
    assert.match((await runCli(["env", "prune"], { stateDir, env })).stdout, new RegExp(`kept .*: still used by .*${vm.vmId}`));

    // The stopped VM boots on its own disk, over the image it was made from.
    await vm.start();
    const inVm = await vm.exec("cat /etc/debian_version");
    assert.equal(inVm.exitCode, 0, inVm.stderr);
    assert.equal((await ws.exec("cat note")).stdout, "mine\n");
    await ws.delete();

    const last = await runCli(["env", "prune", "--json"], { stateDir, env });
    const result = json<{ removed: string[]; kept: unknown[] }>(last.stdout);
    assert.deepEqual(result.kept, []);
    assert.ok(result.removed.includes(`.images/${basename(oldImage)}`), last.stdout);
    assert.equal(existsSync(oldImage), false);
    await pyro.close();
  });

  test("debian:12-build compiles and runs C", async () => {
    const pull = await runCli(["env", "pull", "debian:12-build", "--json"], { stateDir, env, timeoutMs: 30 * 60_000 });
    assert.equal(pull.code, 0, pull.stderr);
    const script = [
      "printf '#include <stdio.h>\\nint main(void){puts(\"hello from cc\");return 0;}\\n' > hello.c",
      "cc -O2 -o hello hello.c",
      "./hello",
      "make --version | head -1",
      "pkg-config --version >/dev/null && echo pkg-config-ok",
      "git --version | cut -d' ' -f1-2",
    ].join(" && ");
    const run = await runCli(["run", "debian:12-build", "--json", "--timeout-seconds", "120", "--", "bash", "-c", script], { stateDir, env });
    const result = json<{ exit_code: number; stdout: string; stderr: string }>(run.stdout);
    assert.equal(result.exit_code, 0, result.stderr);
    assert.match(result.stdout, /^hello from cc\nGNU Make 4\.\d\npkg-config-ok\ngit version\n$/);
  });
});
