import type { NetworkPolicy } from "../network/policy.js";

/** A step of a long operation (environment pull, boot), for progress display. */
export interface ProgressEvent {
  /** kernel, rootfs, image, initramfs, verify, done (environment builds); template, boot, seed, exec, cleanup. */
  phase: string;
  message: string;
}

/** What a caller may pass to a long runtime operation. */
export interface StartHooks {
  signal?: AbortSignal;
  onProgress?: (event: ProgressEvent) => void;
}

/** VM options with the contract's defaults applied and every value checked (sdk/validate.ts makes them). */
export interface ResolvedVmOptions {
  environment: string;
  vcpuCount: number;
  memMib: number;
  ttlSeconds: number;
  /** The guest has a NIC (its machine shape); true for every policy but `off`. */
  network: boolean;
  networkPolicy: NetworkPolicy;
  allowHosts: string[];
  allowHostCompat: boolean;
}

export interface ExecRequestOptions {
  command: string;
  timeoutSeconds: number;
  maxOutputBytes?: number;
  cwd?: string;
  /** Flush the guest's filesystems before reporting, so what the command wrote is on disk. */
  sync?: boolean;
  /** Environment variables from the guest's secrets: { ENV_NAME: SECRET_NAME }. */
  secretEnv?: Record<string, string>;
}

/** Whether this host can boot guests, and if not, what is missing and how to fix it. */
export interface GuestSupport {
  ok: boolean;
  missing: { what: string; fix: string }[];
}
