import { realpathSync } from "node:fs";
import { realpath } from "node:fs/promises";
import { homedir } from "node:os";
import { basename, dirname, isAbsolute, join, resolve, sep } from "node:path";
import { ErrorCode, InvalidArgumentError, PyroError } from "../errors.js";
import { hostPatternCovers, normalizeHostPattern } from "../network/policy.js";
import { isErrno } from "../util/fs.js";

/**
 * What the operator of a tool server (or of a framework adapter) decided for
 * every call. None of it is a tool argument: a model, possibly following
 * injected instructions, must not be able to turn isolation off or read host
 * files outside what the operator shared.
 */
export interface ToolPolicy {
  /**
   * When no guest can boot on this host, run commands on the host without
   * isolation (`pyro mcp serve --allow-host-compat`). Default false.
   */
  allowHostCompat: boolean;
  /**
   * Host directories (resolved, symlinks included) under which a model may
   * name seed and push sources. Default: the directory the server started
   * in, unless that is `/`, the home directory or above it. Never `/` itself.
   */
  allowedRoots: readonly string[];
  /**
   * Host names every guest started through these tools is limited to
   * (`pyro mcp serve --allow-host`, repeatable); a model may narrow them
   * with `allow_hosts`, never widen them. Empty: any public host.
   */
  allowHosts: readonly string[];
}

/**
 * Resolves the roots an operator named: each must exist, be a directory by
 * its real path, and not be `/` (that would share the whole host).
 */
export function resolveAllowedRoots(roots: readonly string[], base = process.cwd()): string[] {
  const resolved: string[] = [];
  for (const root of roots) {
    let real: string;
    try {
      real = realpathSync(resolve(base, root));
    } catch {
      throw new InvalidArgumentError("allowedRoots", `${root} does not exist`, "name existing directories in `allowedRoots`, e.g. ./repo");
    }
    if (real === "/") throw new InvalidArgumentError("allowedRoots", "must not be / (it would share every host file)", "name in `allowedRoots` the directory that holds the files to share, e.g. ./repo");
    if (!resolved.includes(real)) resolved.push(real);
  }
  return resolved;
}

/**
 * The policy when the operator said nothing: no host-compat, any public host,
 * and the current directory as the only root, unless it is `/`, the home
 * directory or above it (clients often start servers in the home directory,
 * and sharing it would share ~/.ssh): then no root at all.
 */
export function defaultToolPolicy(overrides: { allowHostCompat?: boolean; allowedRoots?: readonly string[]; allowHosts?: readonly string[] } = {}): ToolPolicy {
  let roots: string[];
  if (overrides.allowedRoots) roots = resolveAllowedRoots(overrides.allowedRoots);
  else {
    const cwd = realpathSync(process.cwd());
    const home = (() => {
      try {
        return realpathSync(homedir());
      } catch {
        return homedir();
      }
    })();
    const holdsHome = cwd === "/" || home === cwd || home.startsWith(cwd.endsWith(sep) ? cwd : cwd + sep);
    roots = holdsHome ? [] : [cwd];
  }
  const allowHosts = [...new Set((overrides.allowHosts ?? []).map((h) => normalizeHostPattern("allowHost", h)))];
  return { allowHostCompat: overrides.allowHostCompat ?? false, allowedRoots: roots, allowHosts };
}

/**
 * The host names a guest gets: what the model asked for, which must lie
 * within the operator's list when there is one; the operator's list when the
 * model asked for nothing.
 */
export function effectiveAllowHosts(requested: readonly unknown[] | undefined, policy: ToolPolicy, network: boolean): string[] | undefined {
  // Without network there is nothing to limit; an explicit list then gets the usual "needs network" error.
  if (!policy.allowHosts.length || (!network && requested === undefined)) return requested as string[] | undefined;
  if (requested === undefined || requested.length === 0) return [...policy.allowHosts];
  return requested.map((entry) => {
    const name = normalizeHostPattern("allow_hosts", entry);
    if (!policy.allowHosts.some((outer) => hostPatternCovers(outer, name))) {
      throw new InvalidArgumentError("allow_hosts", `${name} is outside the hosts this server allows (${policy.allowHosts.join(", ")})`, `choose among ${policy.allowHosts.join(", ")}, or leave \`allowHosts\` out`);
    }
    return name;
  });
}

/**
 * A host path a model named, resolved with every symlink followed, when it
 * lies under one of the allowed roots; `source_refused` naming the roots
 * otherwise. Relative paths are taken from the server's directory.
 */
export async function confineHostPath(field: string, path: string, policy: ToolPolicy): Promise<string> {
  const absolute = isAbsolute(path) ? path : resolve(process.cwd(), path);
  let real: string;
  try {
    real = await realpath(absolute);
  } catch (error) {
    if (isErrno(error, "ENOENT") || isErrno(error, "ENOTDIR")) {
      throw new PyroError(ErrorCode.sourceRefused, `${field}: ${path} does not exist on the host`, {
        hint: policy.allowedRoots.length ? `name a directory or archive under ${policy.allowedRoots.join(", ")}` : "this server shares no host directory",
        details: { field },
      });
    }
    throw error;
  }
  const inside = policy.allowedRoots.some((root) => real === root || real.startsWith(root.endsWith(sep) ? root : root + sep));
  if (!inside) {
    const roots = policy.allowedRoots.length ? policy.allowedRoots.join(", ") : "(none)";
    throw new PyroError(ErrorCode.sourceRefused, `${field}: ${path} is outside the directories this server shares (${roots})`, {
      hint: policy.allowedRoots.length
        ? `name a directory or archive under ${roots}; only the operator can share more, with \`allowedRoots\``
        : "this server shares no host directory; only the operator can share one, with `allowedRoots`",
      details: { field, allowedRoots: policy.allowedRoots },
    });
  }
  return real;
}

/**
 * A host path a model names for pyro to write (it must not exist yet): its
 * directory, resolved with every symlink followed, must lie under one of the
 * allowed roots, as for paths pyro reads.
 */
export async function confineHostOutputPath(field: string, path: string, policy: ToolPolicy): Promise<string> {
  const absolute = isAbsolute(path) ? path : resolve(process.cwd(), path);
  const name = basename(absolute);
  if (name === "" || name === "." || name === "..") throw new PyroError(ErrorCode.invalidArgument, `${field}: ${path} does not name a file or directory to create`, { details: { field } });
  const parent = await confineHostPath(field, dirname(absolute), policy);
  return join(parent, name);
}
