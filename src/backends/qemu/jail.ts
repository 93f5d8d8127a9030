import { randomBytes } from "node:crypto";
import { closeSync, constants, openSync, readSync, unlinkSync } from "node:fs";
import { lstat, readFile, readlink, stat } from "node:fs/promises";
import { dirname, isAbsolute, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { launcherPath } from "../../config.js";
import { SETTINGS } from "../../settings.js";
import { readJsonIfExists, writeJsonAtomic } from "../../util/fs.js";
import { debug, warnOnce } from "../../util/log.js";
import { executableIdentity, runTool, which } from "../../util/proc.js";
import { inspectCgroups, type CgroupSupport } from "./cgroup.js";

/**
 * QEMU's confinement, the part Firecracker's jailer plays. Under TCG the
 * whole emulator is attack surface, so a guest that escapes it must land in
 * a process that holds nothing: an unprivileged user of its own, QEMU's
 * seccomp filter, new mount, PID, IPC, UTS and network namespaces in which
 * only its VM directory is writable and only its kernel, initramfs and root
 * image (plus the system's libraries) are visible, and a cgroup with limits
 * from the VM's shape. Each layer that cannot be applied on a host is
 * reported (once per process, and by `pyro doctor`), never silently skipped.
 */

export type JailLayerName = "user" | "seccomp" | "namespaces" | "cgroup";

export interface JailLayer {
  layer: JailLayerName;
  active: boolean;
  /** What the layer does here, or why it is not applied. */
  detail: string;
}

export interface JailHost {
  /** The unprivileged user QEMU runs as, when pyro runs as root, and setpriv to become it. */
  qemuUser: { name: string; uid: number; gid: number; setpriv: string } | undefined;
  /** bubblewrap, when namespaces can be made on this host. */
  bwrap: string | undefined;
  /** When pyro is not root, bubblewrap needs a user namespace of its own. */
  userNamespace: boolean;
  seccomp: boolean;
  cgroup: CgroupSupport | undefined;
  layers: JailLayer[];
}

/** QEMU's own seccomp filter: no obsolete calls, no setuid, no fork/exec, no scheduler or affinity changes. */
export const SECCOMP_SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/** The dedicated user QEMU runs as when pyro runs as root. */
export const DEFAULT_QEMU_USER = SETTINGS.PYRO_QEMU_USER.default;

function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** The user from /etc/passwd, where useradd puts it; else from getent (other name services). */
async function lookupUser(name: string): Promise<{ name: string; uid: number; gid: number } | undefined> {
  const passwd = await readFile("/etc/passwd", "utf8").catch(() => "");
  let line = passwd.split("\n").find((entry) => entry.startsWith(`${name}:`));
  if (!line) {
    const result = await runTool("getent", ["passwd", name], { timeoutMs: 5000 }).catch(() => undefined);
    line = result?.code === 0 ? result.stdout.trim() : "";
  }
  const fields = line.split(":");
  const uid = Number(fields[2]);
  const gid = Number(fields[3]);
  return fields.length >= 4 && Number.isInteger(uid) && Number.isInteger(gid) && uid > 0 ? { name, uid, gid } : undefined;
}

/**
 * The QEMU user, created on first use as a system user with no home and no
 * shell. Concurrent pyro processes may race to create it; the loser finds it.
 */
async function ensureQemuUser(name: string): Promise<{ user?: { name: string; uid: number; gid: number }; detail: string }> {
  const found = await lookupUser(name);
  if (found) return { user: found, detail: `QEMU runs as ${name} (uid ${found.uid}), not root` };
  const useradd = await which("useradd");
  if (!useradd) return { detail: `user ${name} does not exist and useradd is missing; create it (useradd --system ${name}) so QEMU does not run as root` };
  const made = await runTool(
    useradd,
    ["--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "--comment", "pyro QEMU sandbox user", name],
    { timeoutMs: 30_000 },
  ).catch((error: unknown) => ({ code: -1, stderr: String(error), stdout: "", signal: null }));
  const user = await lookupUser(name);
  if (user) return { user, detail: `QEMU runs as ${name} (uid ${user.uid}, created by pyro), not root` };
  return { detail: `could not create user ${name}: ${made.stderr.trim() || `useradd exited ${made.code}`}` };
}

/**
 * Whether this QEMU was built with seccomp (it rejects `-sandbox` otherwise), or why that
 * cannot be told. It is a property of the binary, so the answer is kept in `cacheDir` for
 * that binary (path, size, modification time) and QEMU is not started to ask again.
 */
async function qemuSeccomp(qemu: string, cacheDir: string | undefined): Promise<{ ok: boolean; detail: string }> {
  const binary = await which(qemu);
  if (!binary) return { ok: false, detail: `QEMU (${qemu}) is not installed` };
  const identity = await executableIdentity(binary).catch(() => undefined);
  const cacheFile = cacheDir && join(cacheDir, "qemu-seccomp.json");
  const recorded = cacheFile && (await readJsonIfExists<{ qemu: string; ok: boolean }>(cacheFile).catch(() => undefined));
  let ok: boolean;
  if (recorded && recorded.qemu === identity && typeof recorded.ok === "boolean") ok = recorded.ok;
  else {
    const result = await runTool(binary, ["-sandbox", SECCOMP_SANDBOX, "-version"], { timeoutMs: 10_000 }).catch(() => undefined);
    ok = result?.code === 0;
    if (cacheFile && identity) await writeJsonAtomic(cacheFile, { qemu: identity, ok }, 0o644).catch(() => undefined);
  }
  return ok ? { ok: true, detail: `-sandbox ${SECCOMP_SANDBOX}` } : { ok: false, detail: `${qemu} was built without seccomp (-sandbox is not accepted)` };
}

/** Whether bubblewrap can make namespaces as this user (unprivileged, it needs user namespaces). */
async function bwrapWorks(bwrap: string, userNamespace: boolean): Promise<string | undefined> {
  const args = [...(userNamespace ? ["--unshare-user"] : []), "--unshare-pid", "--unshare-net", "--ro-bind", "/", "/", "true"];
  const result = await runTool(bwrap, args, { timeoutMs: 10_000 }).catch((error: unknown) => ({ code: -1, stderr: String(error) }));
  return result.code === 0 ? undefined : result.stderr.trim().split("\n").pop() || `exit ${result.code}`;
}

async function qemuUserLayer(root: boolean, env: NodeJS.ProcessEnv): Promise<{ qemuUser: JailHost["qemuUser"]; layer: JailLayer }> {
  if (!root) {
    return { qemuUser: undefined, layer: { layer: "user", active: false, detail: `pyro runs as uid ${process.getuid?.() ?? "?"}, so QEMU runs as that user; run pyro as root for a dedicated unprivileged QEMU user` } };
  }
  const name = env.PYRO_QEMU_USER || DEFAULT_QEMU_USER;
  const setpriv = await which("setpriv");
  if (!setpriv) return { qemuUser: undefined, layer: { layer: "user", active: false, detail: "setpriv (util-linux) is missing, so QEMU would run as root; install util-linux" } };
  const ensured = await ensureQemuUser(name);
  return { qemuUser: ensured.user && { ...ensured.user, setpriv }, layer: { layer: "user", active: ensured.user !== undefined, detail: ensured.detail } };
}

async function namespacesLayer(userNamespace: boolean): Promise<{ bwrap: string | undefined; layer: JailLayer }> {
  const bwrapPath = await which("bwrap");
  if (!bwrapPath) return { bwrap: undefined, layer: { layer: "namespaces", active: false, detail: "bubblewrap is not installed (apt-get install bubblewrap)" } };
  const failure = await bwrapWorks(bwrapPath, userNamespace);
  if (failure) {
    return {
      bwrap: undefined,
      layer: { layer: "namespaces", active: false, detail: `bubblewrap cannot make namespaces here${userNamespace ? " without root (user namespaces are off?)" : ""}: ${failure}` },
    };
  }
  return { bwrap: bwrapPath, layer: { layer: "namespaces", active: true, detail: "new mount, PID, IPC, UTS and network namespaces; only the VM's directory is writable" } };
}

const cache = new Map<string, Promise<JailHost>>();

/**
 * What confinement this host allows for this QEMU; probed once per process, the probes at
 * once. Whether QEMU has seccomp is kept in `cacheDir` when given.
 */
export function inspectJail(qemu: string, env: NodeJS.ProcessEnv = process.env, cacheDir?: string): Promise<JailHost> {
  const key = `${qemu}\0${env.PYRO_QEMU_USER ?? ""}\0${env.PYRO_CONFINEMENT ?? ""}`;
  let found = cache.get(key);
  if (!found) {
    found = probe(qemu, env, cacheDir);
    cache.set(key, found);
    found.catch(() => cache.delete(key));
  }
  return found;
}

async function probe(qemu: string, env: NodeJS.ProcessEnv, cacheDir: string | undefined): Promise<JailHost> {
  if (env.PYRO_CONFINEMENT === "off") {
    // For measuring what confinement costs, and for debugging QEMU itself; never a default.
    const detail = "turned off by PYRO_CONFINEMENT=off";
    warnOnce("jail:off", "QEMU confinement is turned off (PYRO_CONFINEMENT=off): QEMU runs with pyro's privileges and sees the whole host");
    const layers = (["user", "seccomp", "namespaces", "cgroup"] as const).map((layer) => ({ layer, active: false, detail }));
    return { qemuUser: undefined, bwrap: undefined, userNamespace: false, seccomp: false, cgroup: undefined, layers };
  }
  const root = isRoot();
  const userNamespace = !root;
  // Independent of each other: asked at once.
  const [userLayer, sandbox, namespaces, cgroups] = await Promise.all([
    qemuUserLayer(root, env),
    qemuSeccomp(qemu, cacheDir),
    namespacesLayer(userNamespace),
    inspectCgroups(),
  ]);
  const qemuUser = userLayer.qemuUser;
  const seccomp = sandbox.ok;
  const bwrap = namespaces.bwrap;
  const layers: JailLayer[] = [
    userLayer.layer,
    { layer: "seccomp", active: seccomp, detail: sandbox.detail },
    namespaces.layer,
    { layer: "cgroup", active: cgroups.support !== undefined, detail: cgroups.support ? `${cgroups.detail}, memory, pids and CPU limited per VM` : cgroups.detail },
  ];

  for (const layer of layers) {
    if (!layer.active) warnOnce(`jail:${layer.layer}`, `QEMU confinement: ${layer.layer} is not applied: ${layer.detail} (see \`pyro doctor\`)`);
  }
  debug("jail", layers.map((l) => `${l.layer}=${l.active ? "on" : "off"}`).join(" "));
  return { qemuUser, bwrap, userNamespace, seccomp, cgroup: cgroups.support, layers };
}

export interface JailMounts {
  /** Files QEMU reads: kernel, initramfs, root image, the QEMU binary when it is not under /usr. */
  readOnly: string[];
  /** The one directory QEMU may write: its disk and sockets. */
  writableDir: string;
  /** Device nodes QEMU needs beyond the basic ones (/dev/kvm). */
  devices: string[];
}

export interface JailCommand {
  file: string;
  args: string[];
  /** bubblewrap writes the confined process's pid, as JSON, to this fd of the spawned process (see openPidReport). */
  infoFd: number | undefined;
}

/** Where each top-level directory of a merged-/usr (or not) system comes from, inside the sandbox. */
async function systemDirs(): Promise<string[]> {
  const args = ["--ro-bind", "/usr", "/usr"];
  for (const path of ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"]) {
    const info = await lstat(path).catch(() => undefined);
    if (!info) continue;
    if (info.isSymbolicLink()) args.push("--symlink", await readlink(path), path);
    else if (info.isDirectory()) args.push("--ro-bind", path, path);
  }
  for (const file of ["/etc/ld.so.cache", "/etc/ld.so.conf"]) {
    if (await stat(file).catch(() => undefined)) args.push("--ro-bind", file, file);
  }
  return args;
}

/** Every ancestor of the mount targets, made traversable: bubblewrap creates missing ones 0700, which the QEMU user could not enter. */
function ancestors(paths: readonly string[]): string[] {
  const dirs = new Set<string>();
  for (const path of paths) {
    for (let dir = dirname(path); dir !== "/" && dir !== "."; dir = dirname(dir)) dirs.add(dir);
  }
  return [...dirs].sort((a, b) => a.split("/").length - b.split("/").length || a.localeCompare(b));
}

/**
 * The command that starts `qemu` confined as far as `host` allows. QEMU's
 * own argv gets `-sandbox` separately (qemuArgs), since it is QEMU that
 * installs the filter.
 */
export async function jailCommand(host: JailHost, qemu: { binary: string; args: string[] }, mounts: JailMounts, extraGroups: readonly number[] = []): Promise<JailCommand> {
  const binary = isAbsolute(qemu.binary) ? qemu.binary : ((await which(qemu.binary)) ?? qemu.binary);
  const dropPrivileges = host.qemuUser
    ? [
        host.qemuUser.setpriv,
        `--reuid=${host.qemuUser.uid}`,
        `--regid=${host.qemuUser.gid}`,
        ...(extraGroups.length ? [`--groups=${extraGroups.join(",")}`] : ["--clear-groups"]),
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
      ]
    : [];
  if (!host.bwrap) {
    const [file, ...rest] = [...dropPrivileges, binary, ...qemu.args];
    return { file: file!, args: rest, infoFd: undefined };
  }
  const readOnly = [...mounts.readOnly, ...(binary.startsWith("/usr/") ? [] : [binary])];
  const args = [
    ...(host.userNamespace ? ["--unshare-user", "--disable-userns"] : []),
    "--unshare-pid",
    "--unshare-ipc",
    "--unshare-uts",
    // Its NIC is a unix socket to the network helper; QEMU itself needs no network at all.
    "--unshare-net",
    "--unshare-cgroup-try",
    "--new-session",
    // QEMU itself is PID 1 of its namespace: its pid is the VM's, and when it exits the namespace goes with it.
    "--as-pid-1",
    "--hostname",
    "pyro",
    ...(await systemDirs()),
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    ...mounts.devices.flatMap((device) => ["--dev-bind", device, device]),
    ...ancestors([...readOnly, mounts.writableDir]).flatMap((dir) => ["--perms", "0755", "--dir", dir]),
    ...readOnly.flatMap((path) => ["--ro-bind", path, path]),
    "--bind",
    mounts.writableDir,
    mounts.writableDir,
    "--chdir",
    mounts.writableDir,
    "--info-fd",
    "4",
    "--",
    ...dropPrivileges,
    binary,
    ...qemu.args,
  ];
  return { file: host.bwrap, args, infoFd: 4 };
}

/**
 * Where bubblewrap reports the pid of the process it confined: a file of
 * pyro's own (in a directory only pyro can write), unlinked at once, given to
 * bubblewrap as its info fd. Not a pipe: bubblewrap writes the report before
 * it lets its child (the sandbox's pid 1) go on, and a pipe whose reader died
 * (pyro killed while starting a VM) fails that write, so bubblewrap exits and
 * its child waits on it forever, a process nothing would ever end. A file
 * always takes the report; what bubblewrap then starts is found by its
 * command line, like any QEMU whose starter died.
 */
export function openPidReport(dir: string): number {
  const path = join(dir, `.sandbox-pid-${process.pid}-${randomBytes(6).toString("hex")}`);
  const fd = openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  unlinkSync(path);
  return fd;
}

/**
 * The pid bubblewrap reports (as JSON, see openPidReport) for the process it
 * confined (QEMU, the network helper). `running` tells whether bubblewrap has
 * not exited yet. Closes `report`.
 */
export async function confinedPid(report: number, running: () => boolean, deadline: number): Promise<number> {
  const buffer = Buffer.alloc(4096);
  const pidIn = (): number | undefined => {
    const bytesRead = readSync(report, buffer, 0, buffer.length, 0);
    try {
      const pid = (JSON.parse(buffer.toString("utf8", 0, bytesRead)) as { "child-pid"?: unknown })["child-pid"];
      return typeof pid === "number" && Number.isInteger(pid) && pid > 1 ? pid : undefined;
    } catch {
      return undefined; // not complete yet
    }
  };
  try {
    for (;;) {
      // Whether it still ran is asked before reading: a report written just before it exited is still read.
      const alive = running();
      const pid = pidIn();
      if (pid !== undefined) return pid;
      if (!alive) {
        const text = buffer.toString("utf8").replace(/\0+$/, "").trim();
        throw new Error(`bubblewrap exited without reporting a pid${text ? ` (${text})` : ""}`);
      }
      if (Date.now() >= deadline) throw new Error("no pid report from bubblewrap in time");
      await sleep(2);
    }
  } finally {
    closeSync(report);
  }
}

/**
 * bubblewrap for the network helper when pyro runs as root: its own PID,
 * IPC and UTS namespaces (it cannot see or signal any QEMU or another VM's
 * helper, although they share a user), the host's network (it needs it), a
 * read-only view of the host, and its VM's QEMU directory writable for its
 * socket. Undefined when that is not possible; the helper then runs as is.
 */
export function helperSandbox(host: JailHost, writableDir: string, programs: readonly string[] = []): { file: string; args: string[]; infoFd: number } | undefined {
  if (!host.bwrap || host.userNamespace) return undefined;
  // The sandbox's /tmp is empty; a program installed below /tmp (a checkout there) is bound back in.
  const visible = programs.filter((program) => program === "/tmp" || program.startsWith("/tmp/")).flatMap((program) => ["--ro-bind", program, program]);
  return {
    file: host.bwrap,
    args: [
      "--unshare-pid",
      "--unshare-ipc",
      "--unshare-uts",
      "--new-session",
      "--as-pid-1",
      "--ro-bind",
      "/",
      "/",
      "--dev",
      "/dev",
      "--proc",
      "/proc",
      "--tmpfs",
      "/tmp",
      ...visible,
      "--bind",
      writableDir,
      writableDir,
      "--chdir",
      writableDir,
      "--info-fd",
      "4",
      "--",
    ],
    infoFd: 4,
  };
}

/**
 * The command behind pyro-launch (netd/cmd/pyro-launch), which turns off
 * transparent huge pages for it and everything it starts (QEMU madvises
 * guest RAM for them, so a restore's scattered writes would fill whole 2 MiB
 * pages) and joins its cgroup before exec, so nothing of it runs outside its
 * limits.
 */
export function launched<T extends { file: string; args: string[] }>(command: T, cgroupDirs: readonly string[] = [], env: NodeJS.ProcessEnv = process.env): T {
  return {
    ...command,
    file: launcherPath(env),
    args: [...cgroupDirs.flatMap((dir) => ["--cgroup", dir]), "--", command.file, ...command.args],
  };
}
