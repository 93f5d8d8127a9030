import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { copyFile, mkdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import type { AgentSession, ExecHooks, ExecOutcome } from "../agent/client.js";
import { hostExec } from "../backends/hostCompat/exec.js";
import { chooseAccel, markKvmUnusable, type Accel } from "../backends/qemu/accel.js";
import { listSandboxProcesses } from "../backends/qemu/procs.js";
import { QmpClient } from "../backends/qemu/qmp.js";
import { saveVmState } from "../backends/qemu/snapshot.js";
import { bootVm, openSession, prepareJailDir, shutdownVm, vmFiles, type LockedSession } from "../backends/qemu/vm.js";
import { Defaults, qemuBinary, type Paths } from "../config.js";
import type { HelperProcess } from "../network/helper.js";
import { operatorDestinations } from "../network/policy.js";
import { EnvironmentStore, type ReadyEnvironment } from "../environments/store.js";
import { RESTORE_TIMEOUT_SECONDS } from "../settings.js";
import { ErrorCode, PyroError } from "../errors.js";
import type { ExecRequestOptions, GuestSupport, ResolvedVmOptions, StartHooks } from "./types.js";
import { pathExists } from "../util/fs.js";
import { newId } from "../util/ids.js";
import { debug } from "../util/log.js";
import { isSameProcessAlive, killAndWait, sameProcess, selfProcess, which } from "../util/proc.js";
import { describe, networkPolicyOf, notFound, touched, VmStore, type GoneReason, type ExecutionMode, type ProcessRef, type VmKind, type VmRecord, type WorkspaceFields } from "./store.js";
import { createOverlay, VmLauncher } from "./launch.js";
import { killHelpers } from "./helpers.js";
import { TemplateBuilder } from "./template-builder.js";
import { TemplateStore } from "./templates.js";


/**
 * Owns VM lifecycles: records, booting through the QEMU backend (or the
 * host-compat fallback), command execution and teardown. Every method works
 * from the on-disk record, so any process can act on a VM another one created.
 */
/** A saved VM state to start from: a template's, a suspended VM's own, or a copy for a fork. */
interface Incoming {
  statePath: string;
  /** keep: the same machine resuming; fresh: a new machine (new hostname, machine id, entropy). */
  identity: "keep" | "fresh";
  mode: "restore" | "resume";
  /** For progress lines: "its template", "its saved memory". */
  what: string;
}

/** A saved running VM (memory and a copy of its disk) that new VMs start from. */
export interface RestoreSource {
  statePath: string;
  disk: string;
  /** The root image the disk is backed by. */
  rootfsImage: string;
  what: string;
}

/** How long saving a VM's memory may take. */
const SAVE_TIMEOUT_MS = 300_000;

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
    this.launcher = new VmLauncher(env, paths.cacheDir);
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

  /**
   * Creates the record. With allowHostCompat and no guest support, the VM
   * runs on the host. A one-shot VM names its `owner` (this process): if the
   * owner dies before deleting it, the next pyro process does.
   */
  async create(
    options: ResolvedVmOptions,
    hooks: StartHooks = {},
    kind: { kind: VmKind; workspace: WorkspaceFields | null; owner?: ProcessRef | null; pool?: VmRecord["pool"] } = { kind: "vm", workspace: null },
  ): Promise<VmRecord> {
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
   * Starting a running VM is a no-op. With `from`, a created VM starts as a
   * copy of a saved one (a fork, see saveCopy).
   */
  async start(vmId: string, hooks: StartHooks = {}, kind: VmKind = "vm", from?: RestoreSource): Promise<VmRecord> {
    const claim = await this.claimStart(vmId, kind);
    if (claim.running) return claim.record;
    try {
      return await this.startClaimed(claim.record, hooks, from);
    } catch (error) {
      // Whatever failed, the claim must not outlive this attempt.
      await this.store
        .update(vmId, async (current) => {
          if (current.state !== "starting" || !sameProcess(current.starter, claim.record.starter)) return current;
          if (current.qemu) await killAndWait(current.qemu.pid, current.qemu.startTime);
          await killHelpers(current);
          return { ...current, state: "failed", starter: null, qemu: null, netd: null, published: [], failure: current.failure ?? (error instanceof Error ? error.message : String(error)) };
        })
        .catch(() => undefined);
      throw error;
    }
  }

  /**
   * Moves the VM to `starting` under its lock, naming this process as the
   * starter, so two concurrent starts never spawn two QEMUs on one disk. A
   * start whose process died half-way is taken over (its QEMU killed).
   */
  private async claimStart(vmId: string, kind: VmKind): Promise<{ record: VmRecord; running: boolean }> {
    const me = await selfProcess();
    let claim: { record: VmRecord; running: boolean } | undefined;
    await this.store.update(vmId, async (current) => {
      if (current.kind !== kind) throw notFound(vmId, kind);
      const qemuAlive = current.qemu ? await isSameProcessAlive(current.qemu.pid, current.qemu.startTime) : false;
      if (current.state === "started" && (qemuAlive || current.executionMode !== "guest")) {
        claim = { record: current, running: true };
        return current;
      }
      if (current.state === "pooled") throw new PyroError(ErrorCode.vmNotRunning, `${describe(current)} is waiting in the pool`);
      if (current.state === "starting" && current.starter && (await isSameProcessAlive(current.starter.pid, current.starter.startTime))) {
        throw new PyroError(ErrorCode.vmNotRunning, `${describe(current)} is being started by another process (pid ${current.starter.pid})`, {
          hint: "wait a few seconds and check its status",
        });
      }
      // Left by a start (or a VM) whose process died: nothing of it may run on beside the new one.
      if (current.qemu && qemuAlive) await killAndWait(current.qemu.pid, current.qemu.startTime);
      await killHelpers(current);
      const next: VmRecord = { ...current, state: "starting", starter: me, qemu: null, netd: null, published: [], failure: null };
      claim = { record: next, running: false };
      return next;
    });
    if (!claim) throw notFound(vmId, kind);
    return claim;
  }

  private async startClaimed(claimed: VmRecord, hooks: StartHooks, from?: RestoreSource): Promise<VmRecord> {
    let record = claimed;
    const vmId = record.vmId;
    if (record.executionMode === "host_compat") {
      await mkdir(join(this.store.dir(vmId), "work"), { recursive: true });
      return this.setState(vmId, { state: "started", starter: null, startedAt: new Date().toISOString(), failure: null });
    }
    let environment = await this.environments.ensure(record.environment, { signal: hooks.signal, onProgress: hooks.onProgress });
    const files = vmFiles(this.store.dir(vmId));
    const choice = await chooseAccel(this.paths.stateDir, this.env);
    await prepareJailDir(files, (await this.launcher.jailHost()).qemuUser);
    // A VM stopped by an earlier pyro kept its disk beside its record; QEMU now sees only its jail directory.
    const oldDisk = join(files.dir, "disk.qcow2");
    if ((await pathExists(oldDisk)) && !(await pathExists(files.disk))) await rename(oldDisk, files.disk);
    if (from) return this.startFromSaved(record, environment, choice.accel, hooks, from);
    if (await pathExists(files.disk)) {
      // Its disk is backed by the image it was made from, which a rebuild of the environment does not change.
      const image = record.rootfsImage ?? environment.rootfsPath;
      if (!(await pathExists(image))) {
        throw new PyroError(ErrorCode.bootFailed, `the root image ${describe(record)}'s disk is built on is gone (${image})`, {
          hint: `its files cannot be read without it; delete it (pyro ${record.kind} delete ${vmId}) and create a new one`,
        });
      }
      environment = { ...environment, rootfsPath: image };
      const memory = this.memoryStatePath(vmId);
      if (await pathExists(memory)) {
        // Suspended with its memory: it resumes where it was. The saved state is spent either way (the disk moves on from here).
        try {
          return await this.boot(record, environment, choice.accel, hooks, { statePath: memory, identity: "keep", mode: "resume", what: "its saved memory" });
        } catch (error) {
          if (error instanceof PyroError && error.code === ErrorCode.cancelled) throw error;
          debug("vm", `resuming ${vmId} failed (${error instanceof Error ? error.message : String(error)}); booting cold from its disk`);
          hooks.onProgress?.({ phase: "boot", message: "resuming from the saved memory failed; booting cold from the disk" });
        } finally {
          await rm(memory, { force: true });
        }
      }
    } else {
      // Registered before the disk exists: from here no prune removes the image under it.
      record = await this.setState(vmId, { rootfsImage: environment.rootfsPath });
      await this.environments.images.retain(environment.rootfsPath, this.store.recordPath(vmId));
      if (this.env.PYRO_TEMPLATES !== "0") {
        const restored = await this.startFromTemplate(record, environment, choice.accel, hooks);
        if (restored) return restored;
      }
      if (!(await pathExists(files.disk))) await createOverlay(environment.rootfsPath, files.disk);
    }
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

  /** Starts a new VM as a copy of a saved one (a fork): its disk and memory, with an identity of its own. */
  private async startFromSaved(record: VmRecord, environment: ReadyEnvironment, accel: Accel, hooks: StartHooks, from: RestoreSource): Promise<VmRecord> {
    const files = vmFiles(this.store.dir(record.vmId));
    if (!(await pathExists(from.rootfsImage))) throw new PyroError(ErrorCode.bootFailed, `the root image the saved VM is built on is gone (${from.rootfsImage})`);
    record = await this.setState(record.vmId, { rootfsImage: from.rootfsImage });
    await this.environments.images.retain(from.rootfsImage, this.store.recordPath(record.vmId));
    const partial = `${files.disk}.partial`;
    await rm(partial, { force: true });
    await copyFile(from.disk, partial, constants.COPYFILE_FICLONE);
    await rename(partial, files.disk);
    return this.boot(record, { ...environment, rootfsPath: from.rootfsImage }, accel, hooks, { statePath: from.statePath, identity: "fresh", mode: "restore", what: from.what });
  }

  /** Where a suspended VM's memory is kept: beside its record, out of its QEMU's reach. */
  memoryStatePath(vmId: string): string {
    return join(this.store.dir(vmId), "memory.state");
  }

  /**
   * Saves a running VM whole (RAM, devices, disk) and ends its QEMU; `start`
   * resumes it where it was, processes and all. A VM that is not running is
   * returned as it is.
   */
  async suspend(vmId: string, kind: VmKind, hooks: StartHooks = {}): Promise<VmRecord> {
    await this.dropBootSession(vmId);
    return this.store.locked(vmId, async () => {
      const record = await this.refresh(await this.store.get(vmId, kind));
      if (record.state === "stopped") return record;
      if (record.state !== "started") throw new PyroError(ErrorCode.vmNotRunning, `${describe(record)} is ${record.state}${record.failure ? ` (${record.failure})` : ""}`);
      if (record.executionMode !== "guest" || !record.qemu) throw new PyroError(ErrorCode.guestUnavailable, `${describe(record)} runs in host_compat mode, which has no memory to save`, { hint: "delete it when done instead" });
      const files = vmFiles(this.store.dir(vmId));
      const host = await this.launcher.jailHost();
      const partial = `${this.memoryStatePath(vmId)}.partial`;
      hooks.onProgress?.({ phase: "save", message: `saving ${describe(record)} (${record.memMib} MiB of memory)` });
      try {
        await saveVmState(files.qmp, { statePath: partial, socketPath: join(files.jailDir, "save.sock"), owner: host.qemuUser }, Date.now() + SAVE_TIMEOUT_MS, hooks.signal);
      } catch (error) {
        await rm(partial, { force: true });
        // Saving paused it; a failed save must leave it running as it was.
        await this.resumeQemu(files.qmp).catch(() => undefined);
        throw error;
      }
      await killAndWait(record.qemu.pid, record.qemu.startTime);
      await this.endProcesses(record);
      await rename(partial, this.memoryStatePath(vmId));
      const next: VmRecord = { ...record, state: "stopped", qemu: null, netd: null, published: [] };
      await this.store.create(next);
      return next;
    });
  }

  private async resumeQemu(qmpSocket: string): Promise<void> {
    const qmp = await QmpClient.connect(qmpSocket, Date.now() + 10_000);
    try {
      await qmp.execute("cont", undefined, Date.now() + 10_000);
    } finally {
      qmp.close();
    }
  }

  /**
   * Saves a running VM's memory and a copy of its disk into `dir`, pausing
   * it only for as long as that takes; it then runs on. What is saved starts
   * forks (`start` with `from`).
   */
  async saveCopy(vmId: string, kind: VmKind, dir: string, hooks: StartHooks = {}): Promise<RestoreSource> {
    return this.store.locked(vmId, async () => {
      const record = await this.refresh(await this.store.get(vmId, kind));
      if (record.state !== "started") throw new PyroError(ErrorCode.vmNotRunning, `${describe(record)} is ${record.state}; only a running one can be forked`, { hint: "start it first" });
      if (record.executionMode !== "guest" || !record.rootfsImage) throw new PyroError(ErrorCode.guestUnavailable, `${describe(record)} runs in host_compat mode, which cannot be forked`);
      const files = vmFiles(this.store.dir(vmId));
      const host = await this.launcher.jailHost();
      const statePath = join(dir, "state");
      const disk = join(dir, "disk.qcow2");
      hooks.onProgress?.({ phase: "save", message: `saving ${describe(record)} to fork it` });
      try {
        await saveVmState(files.qmp, { statePath, socketPath: join(files.jailDir, "save.sock"), owner: host.qemuUser }, Date.now() + SAVE_TIMEOUT_MS, hooks.signal);
        // Still paused: the disk is exactly what the saved memory expects.
        await copyFile(files.disk, disk, constants.COPYFILE_FICLONE);
      } finally {
        await this.resumeQemu(files.qmp);
      }
      return { statePath, disk, rootfsImage: record.rootfsImage, what: `a copy of ${describe(record)}` };
    });
  }

  private async startFromTemplate(record: VmRecord, environment: ReadyEnvironment, accel: Accel, hooks: StartHooks): Promise<VmRecord | undefined> {
    const template = await this.builder.ensure(environment, record, accel, hooks);
    if (!template) return undefined;
    const files = vmFiles(this.store.dir(record.vmId));
    // The VM's disk starts as the template's, exactly as it was when the state was saved.
    try {
      // Under another name until complete: a start killed half-way must not leave a half disk the next start would boot.
      const partial = `${files.disk}.partial`;
      await rm(partial, { force: true });
      await copyFile(template.diskPath, partial, constants.COPYFILE_FICLONE | constants.COPYFILE_EXCL);
      await rename(partial, files.disk);
    } catch (error) {
      // A full disk, or a template removed meanwhile: a cold boot still works.
      debug("template", `could not copy the template's disk (${error instanceof Error ? error.message : String(error)}); booting cold`);
      await rm(files.disk, { force: true });
      return undefined;
    }
    try {
      return await this.boot(record, environment, accel, hooks, { statePath: template.statePath, identity: "fresh", mode: "restore", what: "its template" });
    } catch (error) {
      await rm(files.disk, { force: true });
      if (error instanceof PyroError && error.code === ErrorCode.cancelled) throw error;
      debug("template", `restore failed (${error instanceof Error ? error.message : String(error)}); booting cold and discarding ${template.dir}`);
      hooks.onProgress?.({ phase: "boot", message: "restoring the template failed; booting cold (the template will be remade)" });
      await this.builder.templates.discard(template);
      return undefined;
    }
  }

  private async boot(record: VmRecord, environment: ReadyEnvironment, accel: Accel, hooks: StartHooks, incoming?: Incoming): Promise<VmRecord> {
    const files = vmFiles(this.store.dir(record.vmId));
    const incomingPath = incoming?.statePath;
    const spec = this.launcher.spec(files, environment, { ...record, accel }, await this.launcher.tscKhz(accel), incoming ? { incomingFd: 3 } : {});
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
    const bootMode = incoming?.mode ?? "cold";
    // A restore that has not answered in this time is not going to; the cold boot fallback is better.
    const timeoutSeconds = incomingPath ? Math.min(RESTORE_TIMEOUT_SECONDS, this.launcher.bootTimeoutSeconds()) : this.launcher.bootTimeoutSeconds();
    hooks.onProgress?.({ phase: "boot", message: incoming ? `${incoming.mode === "resume" ? "resuming" : "restoring"} ${record.environment} from ${incoming.what} (${accel})` : `booting ${record.environment} (${accel})` });
    try {
      const result = await bootVm(spec, files, {
        deadline: Date.now() + timeoutSeconds * 1000,
        qemuBinary: qemuBinary(this.env),
        jail,
        incomingPath,
        signal: hooks.signal,
        // A resumed VM is the same machine: it keeps its name and machine id. Every other start is a new machine.
        hello:
          incoming?.identity === "keep"
            ? { timeUnixMs: Date.now(), entropy: randomBytes(64) }
            : { timeUnixMs: Date.now(), entropy: randomBytes(64), hostname: `pyro-${record.vmId}`, machineId: randomBytes(16).toString("hex") },
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
      result.session.session.holdProcess(false);
      this.bootSessions.set(record.vmId, result.session);
      debug("vm", `${record.vmId} started (${bootMode}, ${accel})`);
      return await this.setState(record.vmId, { state: "started", starter: null, startedAt: new Date().toISOString(), qemu: result.qemu, accel, bootMode });
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      if (netd) await killAndWait(netd.pid, netd.startTime);
      await this.launcher.releaseJail(jail);
      // Still claimed: a cold boot may follow a failed restore; start() ends the claim.
      await this.setState(record.vmId, { state: "starting", qemu: null, netd: null, published: [], failure: message }).catch(() => undefined);
      throw error;
    }
  }

  private async setState(vmId: string, patch: Partial<VmRecord>): Promise<VmRecord> {
    const next = await this.store.update(vmId, (current) => ({ ...current, ...patch }));
    if (!next) throw new PyroError(ErrorCode.vmNotFound, `${vmId} was deleted while in use`);
    return next;
  }

  /**
   * The record, with a dead QEMU reported (and recorded) as `failed`, never
   * as running, and a start whose process died reported as failed too (what
   * it had started is stopped: nobody else would).
   */
  async refresh(record: VmRecord): Promise<VmRecord> {
    if (record.executionMode !== "guest" || !["started", "starting", "pooled"].includes(record.state)) return record;
    const problem = await this.deadStartOrQemu(record);
    if (!problem) return record;
    const updated = await this.store.update(record.vmId, async (current) => {
      if (current.executionMode !== "guest" || !["started", "starting", "pooled"].includes(current.state)) return current;
      const failure = await this.deadStartOrQemu(current);
      if (!failure) return current;
      if (current.qemu) await killAndWait(current.qemu.pid, current.qemu.startTime);
      await killHelpers(current);
      // A starter killed before it recorded its QEMU leaves processes nobody knows by pid (QEMU, its
      // network helper, their sandboxes): found by the VM directory their command lines name.
      if (current.state === "starting") await this.endSandboxes(current.vmId);
      return { ...current, state: "failed", starter: null, qemu: null, netd: null, published: [], failure };
    });
    return updated ?? { ...record, state: "failed", starter: null, failure: problem };
  }

  private async deadStartOrQemu(record: VmRecord): Promise<string | undefined> {
    if (record.state === "starting" && record.starter && !(await isSameProcessAlive(record.starter.pid, record.starter.startTime))) {
      return `the process starting it (pid ${record.starter.pid}) ended before it was up`;
    }
    if (record.qemu && !(await isSameProcessAlive(record.qemu.pid, record.qemu.startTime))) return "its QEMU process exited unexpectedly";
    return undefined;
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
        session.exec({ shell: request.command, cwd: request.cwd, timeoutMs, maxOutputBytes, sync: request.sync, secretEnv: request.secretEnv }, hooks),
      );
    }
    // A workspace's journal entry marks the activity under the same lock; a VM is touched here.
    const updated = kind === "workspace" ? record : await this.store.update(vmId, (current) => touched(current));
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
  async withSession<T>(record: VmRecord, signal: AbortSignal | undefined, fn: (session: AgentSession) => Promise<T>, deadline = Date.now() + 30_000): Promise<T> {
    const files = vmFiles(this.store.dir(record.vmId));
    const locked =
      this.takeBootSession(record.vmId) ??
      // Every session reseeds the guest's random pool and sets its clock: a VM handed out from the pool, or idle for long, gets both fresh.
      (await openSession(files, { deadline: Math.min(deadline, Date.now() + 30_000), signal, hello: { timeUnixMs: Date.now(), entropy: randomBytes(32) } }));
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
    session?.session.holdProcess(true);
    return session;
  }

  /** Closes the sessions kept from boots (their ports' locks released). The VMs run on. */
  async close(): Promise<void> {
    await Promise.all([...this.bootSessions.keys()].map((vmId) => this.dropBootSession(vmId)));
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
      await this.endProcesses(record);
      const next: VmRecord = { ...record, state: "stopped", qemu: null, netd: null, published: [] };
      await this.store.create(next);
      return next;
    });
  }

  /**
   * Ends every process of a VM whose QEMU is gone: its network helpers, then
   * what is left (the sandboxes around them and passt would exit on their
   * own a moment later; waiting for them here means a VM that is gone leaves
   * no process), and frees its cgroup.
   */
  private async endProcesses(record: VmRecord): Promise<void> {
    await killHelpers(record);
    await this.endSandboxes(record.vmId);
    await this.launcher.releaseJail({ cgroupName: record.vmId });
  }

  /** Kills every process whose command line names the VM's directory: QEMU, its network helper, their sandboxes, passt. */
  private async endSandboxes(vmId: string): Promise<void> {
    const dir = this.store.dir(vmId);
    for (const process of await listSandboxProcesses()) if (process.dir === dir) await killAndWait(process.pid, process.startTime);
  }

  /**
   * Kills the VM and removes every file of it. Deleting a missing VM reports
   * false; a VM of another kind than `kind` (when given) is not found.
   * With `onlyIf`, the VM is deleted only when that holds for its record
   * under its lock, and one deleted by another process meanwhile reports
   * false (it was not this call's doing).
   */
  async delete(vmId: string, kind?: VmKind, options: { reason?: GoneReason; onlyIf?: (current: VmRecord) => boolean | Promise<boolean> } = {}): Promise<boolean> {
    const record = await this.store.read(vmId).catch(() => undefined);
    if (record && kind && record.kind !== kind) throw notFound(vmId, kind);
    await this.dropBootSession(vmId);
    if (!record) {
      // Gone already, or being deleted by another process: nothing left to decide on.
      if (options.onlyIf) return false;
      // A directory without a readable record is still ours to clean.
      const existed = await pathExists(this.store.dir(vmId));
      if (existed) await this.store.remove(vmId);
      return existed;
    }
    let deleted = true;
    await this.store.locked(vmId, async () => {
      const now = await this.store.read(vmId).catch(() => undefined);
      // Deleted by another process since we looked: a conditional delete is not ours to count.
      if (!now && options.onlyIf) {
        deleted = false;
        return;
      }
      const current = now ?? record;
      // Decided again under the lock: activity since the caller looked may have kept it alive.
      if (options.onlyIf && !(await options.onlyIf(current))) {
        deleted = false;
        return;
      }
      if (current.qemu) {
        const gone = await killAndWait(current.qemu.pid, current.qemu.startTime);
        if (!gone) throw new PyroError(ErrorCode.internal, `QEMU (pid ${current.qemu.pid}) of ${describe(current)} did not exit after SIGKILL`);
      }
      await this.endProcesses(current);
      if (current.rootfsImage) await this.environments.images.release(current.rootfsImage, this.store.recordPath(vmId));
      await this.store.bury(current, options.reason ?? "deleted").catch((error: unknown) => debug("vm", `could not note why ${vmId} went: ${String(error)}`));
      await this.store.remove(vmId);
    });
    if (deleted) debug("vm", `deleted ${vmId}`);
    return deleted;
  }


}
