/**
 * Every environment variable pyro reads: its name, what applies when it is
 * unset, and what it does. This is the one list; `pyro --help`, the settings
 * tables of README.md and docs/install.md and the public contract are
 * generated from it (`npm run contract`), and a unit test scans src/ for
 * reads so that a variable read here and there cannot go undocumented.
 *
 * Readers take a literal default from their row (`SETTINGS.PYRO_POOL_MAX_MIB.default`)
 * so the documented default is the one the code uses. This module imports
 * nothing: every layer may read it.
 */

/** One environment variable. */
export interface Setting {
  /** The values it takes, when they are a closed set or a form (`kvm|tcg`, `N`). */
  readonly values?: string;
  /** What applies when it is unset: the literal value the code falls back to, or a description. */
  readonly default: string | number;
  /** Whether `default` is a literal value (shown as code) rather than a description. */
  readonly literal: boolean;
  /** What it does, for people: one or two sentences. */
  readonly effect: string;
}

/** A restore from a template that has not answered in this many seconds is given up for a cold boot. */
export const RESTORE_TIMEOUT_SECONDS = 20;

/** Pooled VMs are reaped after at least this long, whatever PYRO_POOL_TTL_SECONDS says. */
export const MIN_POOL_TTL_SECONDS = 60;

/** A row whose default is the literal value the code uses. */
function literal<T extends string | number>(value: T, effect: string, values?: string): { readonly default: T; readonly literal: true; readonly effect: string; readonly values?: string } {
  return { default: value, literal: true, effect, ...(values === undefined ? {} : { values }) };
}

/** A row whose default is described, not a single value. */
function described(description: string, effect: string, values?: string): Setting {
  return { default: description, literal: false, effect, ...(values === undefined ? {} : { values }) };
}

/** Every variable, in the order the tables show them. */
export const SETTINGS = {
  PYRO_STATE_DIR: described(
    "`$XDG_STATE_HOME/pyro-mcp`, else `~/.local/state/pyro-mcp`",
    "State directory: VM and workspace records, sockets, logs, locks.",
  ),
  PYRO_CACHE_DIR: described("`$XDG_CACHE_HOME/pyro-mcp`, else `~/.cache/pyro-mcp`", "Cache root: built environments and template snapshots."),
  PYRO_ENVIRONMENT_CACHE_DIR: described("`<cache root>/environments`", "Where built environments live."),
  XDG_STATE_HOME: described("`~/.local/state`", "Base of the default state directory."),
  XDG_CACHE_HOME: described("`~/.cache`", "Base of the default cache root."),
  PYRO_ACCEL: described("KVM when it really works, else TCG", "Forces the accelerator; any other value is ignored.", "kvm|tcg"),
  PYRO_QEMU_BINARY: literal("qemu-system-x86_64", "The QEMU to run: a path, or a name looked up on `PATH`."),
  PYRO_DEBIAN_MIRROR: described("mmdebstrap's", "Debian mirror that environments are built from."),
  PYRO_BOOT_TIMEOUT_SECONDS: literal(
    90,
    `Cold boot deadline in seconds. A restore from a template gets at most ${RESTORE_TIMEOUT_SECONDS} before pyro falls back to a cold boot.`,
    "N",
  ),
  PYRO_TEMPLATES: described("on", "`0` turns template snapshots off: every VM boots cold.", "0"),
  PYRO_POOL_SIZE: literal(
    0,
    "Warm VMs kept per machine shape for runs to take; runs refill the pool in the background. Overrides `pyro mcp serve --keep-warm` (which keeps 1) and the SDK's `keepWarm`.",
    "N",
  ),
  PYRO_POOL_MAX_MIB: literal(4096, "Cap on the summed guest memory of all pooled VMs, in MiB; never more than half of the memory the host has available.", "N"),
  PYRO_POOL_TTL_SECONDS: literal(3600, `A pooled VM not taken within this many seconds is reaped (at least ${MIN_POOL_TTL_SECONDS}).`, "N"),
  PYRO_MCP_TOKEN: described(
    "generated, printed on stderr and written to `<state dir>/mcp/http-<port>.token` (mode 0600)",
    "Bearer token that `pyro mcp serve --transport http` requires on every request, loopback included. A guest with network or another local user can reach loopback too, so it is never skipped.",
  ),
  PYRO_NETWORK_ALLOW_DESTINATIONS: described(
    "none",
    "Destinations guests with network may reach even in blocked ranges: comma-separated `ADDRESS[/PREFIX][:PORT[+PORT...]]`, e.g. `10.1.2.3:8080,192.168.5.0/24,127.0.0.1:3142`. The entry `127.0.0.1:PORT` opens a port of the host's loopback, which the guest reaches at its gateway 10.0.2.2. Read when a VM starts; models cannot set it.",
  ),
  PYRO_QEMU_USER: literal("pyro-qemu", "The unprivileged user QEMU runs as when pyro runs as root (created on first use)."),
  PYRO_CONFINEMENT: described(
    "on",
    "`off` runs QEMU without its confinement (user, seccomp, namespaces, cgroup), to measure its cost or debug QEMU.",
    "off",
  ),
  PYRO_AGENT_PATH: described("`dist/guest/pyro-agent` of the package", "The guest agent binary put into environments."),
  PYRO_NETD_PATH: described("`dist/netd/pyro-netd` of the package", "The network helper behind guests with network."),
  PYRO_LAUNCH_PATH: described(
    "`dist/netd/pyro-launch` of the package",
    "The launcher that starts QEMU and the network helper (no transparent huge pages; joins the VM's cgroup before exec).",
  ),
  PYRO_PROGRESS: described("only when stderr is a terminal", "`1` shows CLI progress lines on stderr even when stderr is not a terminal.", "1"),
  PYRO_DEBUG: described("off", "`1` or `true` prints debug lines on stderr, the QEMU command line among them.", "1|true"),
  NO_COLOR: described("unset", "Set and not empty: the CLI never colours its output."),
  FORCE_COLOR: described("unset", "Set and not `0`: the CLI colours its output even when it is not a terminal (`NO_COLOR` wins)."),
  TERM: described("the terminal's", "`dumb` turns the CLI's colours off."),
  PATH: described(
    "the caller's",
    "Where host tools (QEMU, qemu-img, mmdebstrap, bwrap, setpriv, passt) are looked up; the system's sbin and bin directories are searched after it.",
  ),
} as const satisfies Record<string, Setting>;

export type SettingName = keyof typeof SETTINGS;
