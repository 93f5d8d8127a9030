import { Option } from "commander";
import { Defaults } from "../config.js";
import { InvalidArgumentError } from "../errors.js";
import { NETWORK_POLICIES, type NetworkPolicy } from "../network/policy.js";
import type { VmOptions } from "../sdk/types.js";

/** Parses a whole number option; the SDK checks ranges, this only checks it is a number. */
export function intParser(flag: string, field: string) {
  return (value: string): number => {
    if (!/^-?\d+$/.test(value.trim())) throw new InvalidArgumentError(field, `must be a whole number, got "${value}"`, `e.g. ${flag} 2`);
    return Number(value);
  };
}

/** The VM options of a creating command, in the SDK's words. */
export function vmOptionsFrom(flags: VmFlags): Pick<VmOptions, "vcpuCount" | "memMib" | "ttlSeconds" | "network" | "networkPolicy" | "allowHosts" | "allowHostCompat"> {
  return {
    vcpuCount: flags.vcpuCount,
    memMib: flags.memMib,
    ttlSeconds: flags.ttlSeconds,
    network: flags.network,
    networkPolicy: flags.networkPolicy,
    allowHosts: flags.allowHost,
    allowHostCompat: flags.allowHostCompat,
  };
}

/** The options every VM-creating command shares, with the contract's defaults in the help. */
export function vmOptions(): Option[] {
  return [
    new Option("--vcpu-count <n>", `virtual CPUs (default ${Defaults.vcpuCount})`).argParser(intParser("--vcpu-count", "vcpuCount")),
    new Option("--mem-mib <n>", `guest memory in MiB, at least 128 (default ${Defaults.memMib})`).argParser(intParser("--mem-mib", "memMib")),
    new Option("--ttl-seconds <n>", `seconds until the VM expires and is reaped (default ${Defaults.ttlSeconds})`).argParser(intParser("--ttl-seconds", "ttlSeconds")),
    new Option("--network", "give the guest outbound network access, as --network-policy egress (default off: no NIC at all)"),
    new Option("--network-policy <policy>", "off | egress | egress+published-ports (default off; egress reaches the public internet, never this host or private addresses)").choices(NETWORK_POLICIES),
    new Option("--allow-host <name>", "with network: only this host name may be resolved and reached; *.example.org for subdomains (repeatable; default any public host)").argParser(
      (value: string, previous: string[] = []) => [...previous, value],
    ),
    new Option("--allow-host-compat", "if no guest can boot here, run on the host WITHOUT isolation (default off)"),
  ];
}

export function timeoutOption(): Option {
  return new Option("--timeout-seconds <n>", `kill the command after this many seconds (default ${Defaults.timeoutSeconds})`).argParser(
    intParser("--timeout-seconds", "timeoutSeconds"),
  );
}

export interface VmFlags {
  vcpuCount?: number;
  memMib?: number;
  ttlSeconds?: number;
  network?: boolean;
  networkPolicy?: NetworkPolicy;
  allowHost?: string[];
  allowHostCompat?: boolean;
  timeoutSeconds?: number;
  json?: boolean;
}
