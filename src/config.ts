import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { SETTINGS } from "./settings.js";

/** Defaults of the public contract; every surface resolves options against these. */
export const Defaults = {
  vcpuCount: 1,
  memMib: 1024,
  timeoutSeconds: 30,
  ttlSeconds: 600,
  network: false,
  allowHostCompat: false,
  /** Per stream; beyond it output is counted, not kept, and flagged truncated. */
  maxOutputBytes: 1024 * 1024,
  /** Cold boot to a ready agent; TCG on a busy 2-core host needs generous room. */
  bootTimeoutSeconds: SETTINGS.PYRO_BOOT_TIMEOUT_SECONDS.default,
  /** A push (or a seed) that has not finished in this time fails; the workspace keeps what it had. */
  pushTimeoutSeconds: 600,
} as const;

export const Limits = {
  minMemMib: 128,
  maxMemMib: 32 * 1024,
  maxTimeoutSeconds: 24 * 3600,
  maxTtlSeconds: 7 * 24 * 3600,
  maxCommandBytes: 256 * 1024,
  maxOutputBytes: 64 * 1024 * 1024,
} as const;

export interface Paths {
  /** Per-user state: VM records, sockets, logs. */
  stateDir: string;
  /** Built environments (kernel, initramfs, root image, manifest). */
  environmentsDir: string;
  /** Cache root (environments live below it unless overridden). */
  cacheDir: string;
}

export function resolvePaths(overrides: Partial<Paths> = {}, env: NodeJS.ProcessEnv = process.env): Paths {
  const home = homedir();
  const cacheDir = overrides.cacheDir ?? env.PYRO_CACHE_DIR ?? join(env.XDG_CACHE_HOME ?? join(home, ".cache"), "pyro-mcp");
  return {
    cacheDir: resolve(cacheDir),
    environmentsDir: resolve(overrides.environmentsDir ?? env.PYRO_ENVIRONMENT_CACHE_DIR ?? join(cacheDir, "environments")),
    stateDir: resolve(overrides.stateDir ?? env.PYRO_STATE_DIR ?? join(env.XDG_STATE_HOME ?? join(home, ".local", "state"), "pyro-mcp")),
  };
}

let cachedRoot: string | undefined;

/** The installed package's root (where package.json and dist/ live). */
export function packageRoot(): string {
  if (cachedRoot !== undefined) return cachedRoot;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, "package.json")) && existsSync(join(dir, "guest"))) {
      cachedRoot = dir;
      return dir;
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error("cannot locate the pyro-mcp package root");
    dir = parent;
  }
}

/** The static guest agent built by `npm run build`. */
export function agentBinaryPath(env: NodeJS.ProcessEnv = process.env): string {
  return env.PYRO_AGENT_PATH ?? join(packageRoot(), "dist", "guest", "pyro-agent");
}

/** The launcher that starts QEMU and the network helper (netd/cmd/pyro-launch), built by `npm run build`. */
export function launcherPath(env: NodeJS.ProcessEnv = process.env): string {
  return env.PYRO_LAUNCH_PATH ?? join(packageRoot(), "dist", "netd", "pyro-launch");
}

/** The host-side network helper built by `npm run build` (see src/network/helper.ts). */
export function netdBinaryPath(env: NodeJS.ProcessEnv = process.env): string {
  return env.PYRO_NETD_PATH ?? join(packageRoot(), "dist", "netd", "pyro-netd");
}

export function qemuBinary(env: NodeJS.ProcessEnv = process.env): string {
  return env.PYRO_QEMU_BINARY ?? SETTINGS.PYRO_QEMU_BINARY.default;
}

export function debugEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.PYRO_DEBUG === "1" || env.PYRO_DEBUG === "true";
}
