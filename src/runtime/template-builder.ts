import { join } from "node:path";
import { chooseAccel, type Accel } from "../backends/qemu/accel.js";
import type { MachineShape } from "../backends/qemu/argv.js";
import { saveVmState } from "../backends/qemu/snapshot.js";
import { bootVm, handDiskTo, prepareJailDir, vmFiles } from "../backends/qemu/vm.js";
import { Defaults, qemuBinary, type Paths } from "../config.js";
import type { EnvironmentStore, ReadyEnvironment } from "../environments/store.js";
import { ErrorCode, PyroError } from "../errors.js";
import { debug } from "../util/log.js";
import { executableIdentity, killAndWait, which } from "../util/proc.js";
import { createOverlay, type VmLauncher } from "./launch.js";
import { environmentDigest, TEMPLATE_FORMAT, type ReadyTemplate, type TemplateKey, type TemplateStore } from "./templates.js";
import type { StartHooks } from "./types.js";

/**
 * Makes template snapshots: boots a VM of a shape once, cold, warms it, and
 * saves it whole, so later VMs of that shape restore instead of booting.
 * Storage and validity checks are TemplateStore's.
 */
export class TemplateBuilder {
  constructor(
    private readonly paths: Paths,
    private readonly env: NodeJS.ProcessEnv,
    private readonly launcher: VmLauncher,
    private readonly environments: EnvironmentStore,
    readonly templates: TemplateStore,
  ) {}

  async key(environment: ReadyEnvironment, shape: MachineShape, accel: Accel): Promise<TemplateKey> {
    const binary = (await which(qemuBinary(this.env))) ?? qemuBinary(this.env);
    return {
      format: TEMPLATE_FORMAT,
      environment: environment.name,
      environmentDigest: environmentDigest(environment.manifest),
      accel,
      vcpuCount: shape.vcpuCount,
      memMib: shape.memMib,
      network: shape.network,
      tscKhz: (await this.launcher.tscKhz(accel)) ?? null,
      qemu: await executableIdentity(binary),
    };
  }

  /** Makes (or finds) the template for this shape; undefined when there is none to use. */
  async ensure(environment: ReadyEnvironment, shape: MachineShape, accel: Accel, hooks: StartHooks = {}): Promise<ReadyTemplate | undefined> {
    const key = await this.key(environment, shape, accel);
    const found = await this.templates.lookup(key);
    if ("template" in found) return found.template;
    if ("discarded" in found) {
      // Do not make the caller wait for a rebuild now; the next start makes a new one.
      hooks.onProgress?.({ phase: "boot", message: `the template snapshot was unusable (${found.discarded}); booting cold` });
      return undefined;
    }
    hooks.onProgress?.({ phase: "template", message: `saving a template snapshot for ${environment.name} (${shape.vcpuCount} vCPU, ${shape.memMib} MiB) — first use only` });
    try {
      return await this.templates.build(key, (work) => this.makeState(work, environment, key, hooks.signal), hooks.signal);
    } catch (error) {
      if (error instanceof PyroError && error.code === ErrorCode.cancelled) throw error;
      const reason = error instanceof Error ? error.message : String(error);
      debug("template", `could not make a template, booting cold: ${reason}`);
      hooks.onProgress?.({ phase: "template", message: `could not save a template snapshot (${reason}); booting cold` });
      return undefined;
    }
  }

  /**
   * Makes the template for the default machine shape ahead of time (pyro env
   * pull --warm), so the first run restores instead of booting. Errors surface.
   */
  async warm(name: string, hooks: StartHooks = {}): Promise<ReadyTemplate> {
    const environment = await this.environments.ensure(name, hooks);
    const { accel } = await chooseAccel(this.paths.stateDir, this.env);
    const shape = { vcpuCount: Defaults.vcpuCount, memMib: Defaults.memMib, network: Defaults.network };
    const key = await this.key(environment, shape, accel);
    const found = await this.templates.find(key);
    if (found) return found;
    hooks.onProgress?.({ phase: "template", message: `saving a template snapshot for ${name} (${shape.vcpuCount} vCPU, ${shape.memMib} MiB, ${accel})` });
    return this.templates.build(key, (work) => this.makeState(work, environment, key, hooks.signal), hooks.signal);
  }

  /** Removes unused environment cache entries, and templates of environments that were rebuilt since. */
  async prune(): Promise<{ removed: string[]; freedBytes: number; kept: { image: string; usedBy: string[] }[] }> {
    const result = await this.environments.prune();
    const current = new Set<string>();
    for (const entry of await this.environments.list()) {
      if (entry.state === "installed" && entry.manifest) current.add(environmentDigest(entry.manifest));
    }
    const removed = await this.templates.prune((key) => key.format === TEMPLATE_FORMAT && current.has(key.environmentDigest));
    return { removed: [...result.removed, ...removed], freedBytes: result.freedBytes, kept: result.kept };
  }

  /** Boots a VM cold, warms its login shell, and saves it whole into `work`. */
  private async makeState(work: string, environment: ReadyEnvironment, key: TemplateKey, signal: AbortSignal | undefined): Promise<{ state: string; disk: string }> {
    const files = vmFiles(work);
    const host = await this.launcher.jailHost();
    await prepareJailDir(files, host.qemuUser);
    await createOverlay(environment.rootfsPath, files.disk);
    const jail = await this.launcher.jailFor(files, environment, key, `template-${process.pid}-${Date.now()}`);
    const state = join(work, "state");
    try {
      const result = await bootVm(this.launcher.spec(files, environment, key, key.tscKhz ?? undefined), files, {
        deadline: Date.now() + this.launcher.bootTimeoutSeconds() * 1000,
        qemuBinary: qemuBinary(this.env),
        hello: { timeUnixMs: Date.now() },
        jail,
        signal,
      });
      try {
        // Every command starts a login shell; having run one puts its files in the saved page cache.
        for (let i = 0; i < 2; i++) await result.session.session.exec({ shell: "true", timeoutMs: 30_000, maxOutputBytes: 1024 }, { signal });
        result.session.session.close();
        await result.session.release();
        await saveVmState(files.qmp, { statePath: state, socketPath: join(files.jailDir, "save.sock"), owner: host.qemuUser }, Date.now() + 120_000, signal);
      } finally {
        await killAndWait(result.qemu.pid, result.qemu.startTime);
      }
    } finally {
      await this.launcher.releaseJail(jail);
    }
    // Every later VM starts from this disk: it must be the regular file QEMU was given, not whatever its directory holds now.
    await handDiskTo(files, undefined);
    return { state, disk: files.disk };
  }
}
