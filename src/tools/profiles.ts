/**
 * Which tools each MCP profile offers. Kept apart from the tool definitions (./catalog.ts) so
 * the CLI can list profiles without loading the schemas; catalog.ts checks every name here.
 */

export type ProfileName = "vm-run" | "workspace-core" | "workspace-full";
export const PROFILES: readonly ProfileName[] = ["vm-run", "workspace-core", "workspace-full"];
export const DEFAULT_PROFILE: ProfileName = "workspace-core";

/** What an agent uses day to day: one-shot runs and workspaces. */
const CORE_TOOLS = [
  "vm_run",
  "vm_list_environments",
  "workspace_create",
  "workspace_sync_push",
  "workspace_exec",
  "workspace_status",
  "workspace_logs",
  "workspace_delete",
  "workspace_list",
  "workspace_file_list",
  "workspace_file_read",
  "workspace_file_write",
  "workspace_patch_apply",
  "workspace_diff",
  "workspace_export",
  "workspace_update",
  "workspace_summary",
  "workspace_reset",
] as const;

/** Rewinding, pausing and forking workspaces. */
const WORKSPACE_STATE_TOOLS = ["snapshot_create", "snapshot_list", "snapshot_delete", "workspace_stop", "workspace_start", "workspace_fork"] as const;

/** Long-running work: interactive shells and background services. */
const WORKSPACE_WORK_TOOLS = [
  "shell_open",
  "shell_read",
  "shell_write",
  "shell_signal",
  "shell_close",
  "service_start",
  "service_list",
  "service_status",
  "service_logs",
  "service_stop",
] as const;

/** The step-by-step VM lifecycle, offered only by the full profile. */
const VM_LIFECYCLE_TOOLS = ["vm_create", "vm_start", "vm_exec", "vm_stop", "vm_delete", "vm_status", "vm_network_info", "vm_reap_expired"] as const;

export const PROFILE_TOOLS: Record<ProfileName, readonly string[]> = {
  "vm-run": ["vm_run"],
  "workspace-core": CORE_TOOLS,
  "workspace-full": [...CORE_TOOLS, ...WORKSPACE_STATE_TOOLS, ...WORKSPACE_WORK_TOOLS, ...VM_LIFECYCLE_TOOLS],
};
