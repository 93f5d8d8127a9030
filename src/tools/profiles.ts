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
] as const;

/** The step-by-step VM lifecycle, offered only by the full profile. */
const VM_LIFECYCLE_TOOLS = ["vm_create", "vm_start", "vm_exec", "vm_stop", "vm_delete", "vm_status", "vm_network_info", "vm_reap_expired"] as const;

export const PROFILE_TOOLS: Record<ProfileName, readonly string[]> = {
  "vm-run": ["vm_run"],
  "workspace-core": CORE_TOOLS,
  "workspace-full": [...CORE_TOOLS, ...VM_LIFECYCLE_TOOLS],
};
