import { ErrorCode, PyroError } from "../errors.js";

/**
 * Bump when anything that goes into a built environment changes (package
 * lists, image layout, kernel modules, boot protocol): older cache entries are
 * then rebuilt instead of used.
 */
export const CATALOG_VERSION = 1;

export interface EnvironmentSpec {
  /** Public name, e.g. `debian:12`. */
  name: string;
  description: string;
  /** Debian suite the root filesystem is built from. */
  suite: string;
  /** Packages added to a `minbase` bootstrap. */
  packages: readonly string[];
  /** Size of the guest's root filesystem in MiB; what the packages leave free is the VM's scratch space. */
  diskMib: number;
}

export const CATALOG: readonly EnvironmentSpec[] = [
  {
    name: "debian:12",
    description: "Debian 12 (bookworm) with bash, coreutils, git and CA certificates",
    suite: "bookworm",
    packages: ["git", "ca-certificates"],
    diskMib: 4096,
  },
  {
    name: "debian:12-base",
    description: "Debian 12 (bookworm) minimal: shell and core tools",
    suite: "bookworm",
    packages: [],
    diskMib: 4096,
  },
  {
    name: "debian:12-build",
    description: "Debian 12 (bookworm) with git, the GCC toolchain, make and pkg-config",
    suite: "bookworm",
    packages: ["git", "ca-certificates", "build-essential", "pkg-config"],
    diskMib: 8192,
  },
];

export function findEnvironment(name: string): EnvironmentSpec | undefined {
  return CATALOG.find((spec) => spec.name === name);
}

export function requireEnvironment(name: string): EnvironmentSpec {
  const spec = findEnvironment(name);
  if (spec === undefined) {
    throw new PyroError(ErrorCode.unknownEnvironment, `environment: unknown environment "${name}"`, {
      hint: `choose one of ${CATALOG.map((s) => s.name).join(", ")} (listEnvironments() describes them)`,
      details: { field: "environment" },
    });
  }
  return spec;
}

/** Directory name of an environment in the cache (`debian:12` → `debian-12`). */
export function cacheKey(name: string): string {
  return name.replace(/[^A-Za-z0-9._-]/g, "-");
}
