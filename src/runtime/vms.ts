import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { copyFile, mkdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import type { AgentSession, ExecHooks, ExecOutcome } from "../agent/client.js";
import { hostExec } from "../backends/hostCompat/exec.js";
import { chooseAccel, markKvmUnusable, type Accel } from "../backends/qemu/accel.js";
import { bootVm, openSession, prepareJailDir, shutdownVm, vmFiles, type LockedSession } from "../backends/qemu/vm.js";
import { Defaults, qemuBinary, type Paths } from "../config.js";
import type { HelperProcess } from "../network/helper.js";
import { operatorDestinations } from "../network/policy.js";
import { EnvironmentStore, type ReadyEnvironment } from "../environments/store.js";
import { ErrorCode, PyroError } from "../errors.js";
import type { ExecRequestOptions, GuestSupport, ResolvedVmOptions, StartHooks } from "./types.js";
import { pathExists } from "../util/fs.js";
import { newId } from "../util/ids.js";
import { debug } from "../util/log.js";
import { isSameProcessAlive, killAndWait, which } from "../util/proc.js";
import { describe, networkPolicyOf, notFound, VmStore, type ExecutionMode, type VmKind, type VmRecord, type WorkspaceFields } from "./store.js";
import { createOverlay, VmLauncher } from "./launch.js";
import { TemplateBuilder } from "./template-builder.js";
import { TemplateStore, type ReadyTemplate } from "./templates.js";

const RESTORE_TIMEOUT_SECONDS = 20;

/**
 * Owns VM lifecycles: records, booting through the QEMU backend (or the
 * host-compat fallback), command execution and teardown. Every method works
 * from the on-disk record, so any process can act on a VM another one created.
 */
export class VmManager {
  readonly store: VmStore;
  readonly environments: EnvironmentStore;
  readonly launcher: VmLauncher;
  readonly builder: TemplateBuilder;
  /** Sessions opened by a boot in this process, handed to the first exec. */
  private readonly bootSessions = new Map<string, LockedSession>();

  constructor(
    readonly paths: Paths,
    readonly env: NodeJS.ProcessEnv = process.env,
  ) {
    this.store = new VmStore(paths.stateDir);
    this.environments = new EnvironmentStore(paths, env);
    this.launcher = new VmLauncher(env);
    this.builder = new TemplateBuilder(paths, env, this.launcher, this.environments, new TemplateStore(join(paths.cacheDir, "templates")));
  }

  async guestSupport(environment: string): Promise<GuestSupport> {
    const missing: GuestSupport["missing"] = [];
    if (!(await which(qemuBinary(this.env)))) {
      missing.push({ what: `QEMU (${qemuBinary(this.env)}) is not installed`, fix: "apt-get install qemu-system-x86 qemu-utils" });
    }
    if (!(await which("qemu-img"))) missing.push({ what: "qemu-img is not installed", fix: "apt-get install qemu-utils" });
    const check = await this.environments.check(environment);
    if (check.state !== "installed") {
      if (!(await which("mmdebstrap"))) {
        missing.push({ what: `environment ${environment} is not built and mmdebstrap is missing`, fix: "apt-get install mmdebstrap" });
      } else if (process.getuid?.() !== 0) {
        missing.push({ what: `environment ${environment} is not built and building needs root`, fix: `sudo pyro env pull ${environment}` });
      }
    }
    return { ok: missing.length === 0, missing };
  }

  /** Creates the record. With allowHostCompat and no guest support, the VM runs on the host. */
  async create(options: ResolvedVmOptions, hooks: StartHooks = {}, kind: { kind: VmKind; workspace: WorkspaceFields | null } = { kind: "vm", workspace: null }): Promise<VmRecord> {
    const support = await this.guestSupport(options.environment);
    let executionMode: ExecutionMode = "guest";
    if (!support.ok) {
      if (!options.allowHostCompat) {
        throw new PyroError(ErrorCode.guestUnavailable, `cannot boot a guest on this host: ${support.missing.map((m) => m.what).join("; ")}`, {
          hint: support.missing.map((m) => m.fix).join("; "),
          details: { missing: support.missing },
        });
      }
      executionMode = "host_compat";
    }
    if (executionMode === "guest") {
      // Build (first use pulls) before the record exists, so a failed pull leaves nothing behind.
      await this.environments.ensure(options.environment, { signal: hooks.signal, onProgress: hooks.onProgress });
    }
    const now = new Date();
    const record: VmRecord = {
      schema: 1,
      vmId: newId(),
      ...kind,
      environment: options.environment,
      vcpuCount: options.vcpuCount,
      memMib: options.memMib,
      ttlSeconds: options.ttlSeconds,
      network: options.network,
      networkPolicy: options.networkPolicy,
      allowHosts: options.allowHosts,
      allowHostCompat: options.allowHostCompat,
      executionMode,
      accel: null,
      state: "created",
      createdAt: now.toISOString(),
      expiresAt: new Date(now.getTime() + options.ttlSeconds * 1000).toISOString(),
      startedAt: null,
      lastActivityAt: now.toISOString(),
      qemu: null,
      failure: null,
      bootMode: null,
    };
    await this.store.create(record);
    return record;
  }

  /**
   * Boots a created or stopped VM. A fresh VM is restored from the template
   * snapshot of its environment and shape (made on first use); a stopped VM,
   * whose disk has its own changes, and any failed restore, boot cold.
   * Starting a running VM is a no-op.
   */
  async start(vmId: string, hooks: StartHooks = {}, kind: VmKind = "vm"): Promise<VmRecord> {
    const record = await this.refresh(await this.store.get(vmId, kind));
    if (record.state === "started") return record;
    if (record.state === "starting") {
      throw new PyroError(ErrorCode.vmNotRunning, `${describe(record)} is being started by another process`, { hint: "wait a few seconds and check its status" });
    }
    if (record.executionMode === "host_compat") {
      await mkdir(join(this.store.dir(vmId), "work"), { recursive: true });
      return this.setState(vmId, { state: "started", startedAt: new Date().toISOString(), failure: null });
    }
    const environment = await this.environments.ensure(record.environment, { signal: hooks.signal, onProgress: hooks.onProgress });
    const files = vmFiles(this.store.dir(vmId));
    const choice = await chooseAccel(this.paths.stateDir, this.env);
    await prepareJailDir(files, (await this.launcher.jailHost()).qemuUser);
    // A VM stopped by an earlier pyro kept its disk beside its record; QEMU now sees only its jail directory.
    const oldDisk = join(files.dir, "disk.qcow2");
    if ((await pathExists(oldDisk)) && !(await pathExists(files.disk))) await rename(oldDisk, files.disk);
    if (!(await pathExists(files.disk)) && this.env.PYRO_TEMPLATES !== "0") {
      const restored = await this.startFromTemplate(record, environment, choice.accel, hooks);
      if (restored) return restored;
    }
    if (!(await pathExists(files.disk))) await createOverlay(environment.rootfsPath, files.disk);
    try {
      return await this.boot(record, environment, choice.accel, hooks);
    } catch (error) {
      const kvmBroke = error instanceof PyroError && error.details?.kvmFailure === true;
      if (!kvmBroke || choice.accel !== "kvm" || choice.forced) throw error;
      // /dev/kvm looked usable but cannot run this guest: remember and fall back to TCG.
      const log = typeof error.details?.qemuLogTail === "string" ? error.details.qemuLogTail : error.message;
      await markKvmUnusable(this.paths.stateDir, log.trim().split("\n").pop() ?? "");
      hooks.onProgress?.({ phase: "boot", message: "KVM cannot run the guest here; retrying with TCG" });
      return this.boot(record, environment, "tcg", hooks);
    }
  }

  private async startFromTemplate(record: VmRecord, environment: ReadyEnvironment, accel: Accel, hooks: StartHooks): Promise<VmRecord | undefined> {
    const template = await this.builder.ensure(environment, record, accel, hooks);
    if (!template) return undefined;
    const files = vmFiles(this.store.dir(record.vmId));
    // The VM's disk starts as the template's, exactly as it was when the state was saved.
    await copyFile(template.diskPath, files.disk, constants.COPYFILE_FICLONE | constants.COPYFILE_EXCL);
    try {
      return await this.boot(record, environment, accel, hooks, template);
    } catch (error) {
      await rm(files.disk, { force: true });
      if (error instanceof PyroError && error.code === ErrorCode.cancelled) throw error;
      debug("template", `restore failed (${error instanceof Error ? error.message : String(error)}); booting cold and discarding ${template.dir}`);
      hooks.onProgress?.({ phase: "boot", message: "restoring the template failed; booting cold (the template will be remade)" });
      await this.builder.templates.remove(template.dir);
      return undefined;
    }
  }

  private async boot(record: VmRecord, environment: ReadyEnvironment, accel: Accel, hooks: StartHooks, template?: ReadyTemplate): Promise<VmRecord> {
    const files = vmFiles(this.store.dir(record.vmId));
    const incomingPath = template?.statePath;
    const spec = this.launcher.spec(files, environment, { ...record, accel }, await this.launcher.tscKhz(accel), template ? { incomingFd: 3 } : {});
    const jail = await this.launcher.jailFor(files, environment, { ...record, accel }, record.vmId);
    let netd: HelperProcess | undefined;
    const destinations = record.network ? operatorDestinations(this.env) : [];
    if (record.network) {
      try {
        netd = await this.launcher.startNetd(files, jail, { policy: networkPolicyOf(record), allowHosts: record.allowHosts ?? [] }, destinations);
      } catch (error) {
        await this.launcher.releaseJail(jail);
        throw error;
      }
    }
    const bootMode = incomingPath ? "restore" : "cold";
    // A restore that has not answered in this time is not going to; the cold boot fallback is better.
    const timeoutSeconds = incomingPath ? Math.min(RESTORE_TIMEOUT_SECONDS, this.launcher.bootTimeoutSeconds()) : this.launcher.bootTimeoutSeconds();
    hooks.onProgress?.({ phase: "boot", message: incomingPath ? `restoring ${record.environment} from its template (${accel})` : `booting ${record.environment} (${accel})` });
    try {
      const result = await bootVm(spec, files, {
        deadline: Date.now() + timeoutSeconds * 1000,
        qemuBinary: qemuBinary(this.env),
        jail,
        incomingPath,
        signal: hooks.signal,
        hello: {
          timeUnixMs: Date.now(),
          entropy: randomBytes(64),
          hostname: `pyro-${record.vmId}`,
          machineId: randomBytes(16).toString("hex"),
        },
        onPhase: (message) => hooks.onProgress?.({ phase: "boot", message }),
        onSpawned: async (qemu) => {
          await this.setState(record.vmId, {
            state: "starting",
            qemu,
            netd: netd ?? null,
            openedDestinations: destinations.map((d) => (d.ports.length ? `${d.prefix}:${d.ports.join("+")}` : d.prefix)),
            accel,
            failure: null,
          });
        },
      });
      this.bootSessions.set(record.vmId, result.session);
      debug("vm", `${record.vmId} started (${bootMode}, ${accel})`);
      return await this.setState(record.vmId, { state: "started", startedAt: new Date().toISOString(), qemu: result.qemu, accel, bootMode });
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      if (netd) await killAndWait(netd.pid, netd.startTime);
      await this.launcher.releaseJail(jail);
      await this.setState(record.vmId, { state: "failed", qemu: null, netd: null, failure: message }).catch(() => undefined);
      throw error;
    }
  }

  private async setState(vmId: string, patch: Partial<VmRecord>): Promise<VmRecord> {
    const next = await this.store.update(vmId, (current) => ({ ...current, ...patch }));
    if (!next) throw new PyroError(ErrorCode.vmNotFound, `${vmId} was deleted while in use`);
    return next;
  }

  /** The record, with a dead QEMU reported (and recorded) as `failed`, never as running. */
  async refresh(record: VmRecord): Promise<VmRecord> {
    if (record.executionMode !== "guest" || !["started", "starting", "pooled"].includes(record.state) || !record.qemu) return record;
    if (await isSameProcessAlive(record.qemu.pid, record.qemu.startTime)) return record;
    const failure = "its QEMU process exited unexpectedly";
    return (await this.store.update(record.vmId, (current) => ({ ...current, state: "failed", failure }))) ?? { ...record, state: "failed", failure };
  }

  async status(vmId: string, kind: VmKind = "vm"): Promise<VmRecord> {
    return this.refresh(await this.store.get(vmId, kind));
  }

  async list(): Promise<VmRecord[]> {
    const records: VmRecord[] = [];
    for (const id of await this.store.ids()) {
      const record = await this.store.read(id).catch(() => undefined);
      if (record) records.push(await this.refresh(record));
    }
    return records.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  /** Runs one command in a started VM. A non-zero exit is a result, not an error. */
  async exec(vmId: string, request: ExecRequestOptions, hooks: ExecHooks = {}, kind: VmKind = "vm"): Promise<{ record: VmRecord; outcome: ExecOutcome }> {
    const record = await this.requireRunning(vmId, kind);
    const timeoutMs = request.timeoutSeconds * 1000;
    const maxOutputBytes = request.maxOutputBytes ?? Defaults.maxOutputBytes;
    let outcome: ExecOutcome;
    if (record.executionMode === "host_compat") {
      outcome = await hostExec(request.command, { cwd: join(this.store.dir(vmId), "work"), timeoutMs, maxOutputBytes }, hooks);
    } else {
      outcome = await this.withSession(record, hooks.signal, (session) =>
        session.exec({ shell: request.command, cwd: request.cwd, timeoutMs, maxOutputBytes }, hooks),
      );
    }
    const updated = await this.store.update(vmId, (current) => ({ ...current, lastActivityAt: new Date().toISOString() }));
    return { record: updated ?? record, outcome };
  }

  /** The record of a started, unexpired VM, or a clear error saying what it is instead. */
  async requireRunning(vmId: string, kind: VmKind): Promise<VmRecord> {
    const record = await this.status(vmId, kind);
    const deleteHint = `delete it (pyro ${kind === "workspace" ? "workspace" : "vm"} delete ${vmId}) and create a new one`;
    if (record.state !== "started") {
      throw new PyroError(ErrorCode.vmNotRunning, `${describe(record)} is ${record.state}${record.failure ? ` (${record.failure})` : ""}`, {
        hint: record.state === "failed" ? deleteHint : "start it first",
      });
    }
    if (new Date(record.expiresAt).getTime() <= Date.now()) {
      throw new PyroError(ErrorCode.vmNotRunning, `${describe(record)} expired at ${record.expiresAt}`, { hint: "create a new one, with a longer ttlSeconds if needed" });
    }
    return record;
  }

  /**
   * Runs `fn` with an agent session of a running guest: the one its boot left
   * open in this process, or a fresh one on a free port. An error caused by
   * the VM dying is reported as that.
   */
  async withSession<T>(record: VmRecord, signal: AbortSignal | undefined, fn: (session: AgentSession) => Promise<T>): Promise<T> {
    const files = vmFiles(this.store.dir(record.vmId));
    const locked =
      this.takeBootSession(record.vmId) ??
      // Every session reseeds the guest's random pool and sets its clock: a VM handed out from the pool, or idle for long, gets both fresh.
      (await openSession(files, { deadline: Date.now() + 30_000, signal, hello: { timeUnixMs: Date.now(), entropy: randomBytes(32) } }));
    try {
      return await fn(locked.session);
    } catch (error) {
      const now = await this.refresh((await this.store.read(record.vmId).catch(() => undefined)) ?? record);
      if (now.state === "failed") {
        throw new PyroError(ErrorCode.vmNotRunning, `${describe(record)} died while in use (${now.failure})`, {
          cause: error,
          hint: `delete it (pyro ${record.kind === "workspace" ? "workspace" : "vm"} delete ${record.vmId}) and create a new one`,
        });
      }
      throw error;
    } finally {
      locked.session.close();
      await locked.release().catch(() => undefined);
    }
  }

  private takeBootSession(vmId: string): LockedSession | undefined {
    const session = this.bootSessions.get(vmId);
    this.bootSessions.delete(vmId);
    return session;
  }

  private async dropBootSession(vmId: string): Promise<void> {
    const locked = this.takeBootSession(vmId);
    if (locked) {
      locked.session.close();
      await locked.release().catch(() => undefined);
    }
  }

  /** Powers the guest off (its disk is kept); `start` boots it again. */
  async stop(vmId: string, kind: VmKind = "vm"): Promise<VmRecord> {
    await this.dropBootSession(vmId);
    return this.store.locked(vmId, async () => {
      const record = await this.refresh(await this.store.get(vmId, kind));
      if (record.executionMode === "guest" && record.qemu) await shutdownVm(vmFiles(this.store.dir(vmId)), record.qemu);
      if (record.netd) await killAndWait(record.netd.pid, record.netd.startTime);
      await this.launcher.releaseJail({ cgroupName: vmId });
      const next: VmRecord = { ...record, state: "stopped", qemu: null, netd: null };
      await this.store.create(next);
      return next;
    });
  }

  /**
   * Kills the VM and removes every file of it. Deleting a missing VM reports
   * false; a VM of another kind than `kind` (when given) is not found.
   */
  async delete(vmId: string, kind?: VmKind): Promise<boolean> {
    const record = await this.store.read(vmId).catch(() => undefined);
    if (record && kind && record.kind !== kind) throw notFound(vmId, kind);
    await this.dropBootSession(vmId);
    if (!record) {
      // A directory without a readable record is still ours to clean.
      const existed = await pathExists(this.store.dir(vmId));
      if (existed) await this.store.remove(vmId);
      return existed;
    }
    await this.store.locked(vmId, async () => {
      const current = (await this.store.read(vmId).catch(() => undefined)) ?? record;
      if (current.qemu) {
        const gone = await killAndWait(current.qemu.pid, current.qemu.startTime);
        if (!gone) throw new PyroError(ErrorCode.internal, `QEMU (pid ${current.qemu.pid}) of ${describe(current)} did not exit after SIGKILL`);
      }
      if (current.netd) await killAndWait(current.netd.pid, current.netd.startTime);
      await this.launcher.releaseJail({ cgroupName: vmId });
      await this.store.remove(vmId);
    });
    debug("vm", `deleted ${vmId}`);
    return true;
  }


}
