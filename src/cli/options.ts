import { Option } from "commander";
import { Defaults } from "../config.js";
import { InvalidArgumentError } from "../errors.js";

/** Parses a whole number option; the SDK checks ranges, this only checks it is a number. */
export function intParser(flag: string, field: string) {
  return (value: string): number => {
    if (!/^-?\d+$/.test(value.trim())) throw new InvalidArgumentError(field, `must be a whole number, got "${value}"`, `e.g. ${flag} 2`);
    return Number(value);
  };
}

/** The options every VM-creating command shares, with the contract's defaults in the help. */
export function vmOptions(): Option[] {
  return [
    new Option("--vcpu-count <n>", `virtual CPUs (default ${Defaults.vcpuCount})`).argParser(intParser("--vcpu-count", "vcpuCount")),
    new Option("--mem-mib <n>", `guest memory in MiB, at least 128 (default ${Defaults.memMib})`).argParser(intParser("--mem-mib", "memMib")),
    new Option("--ttl-seconds <n>", `seconds until the VM expires and is reaped (default ${Defaults.ttlSeconds})`).argParser(intParser("--ttl-seconds", "ttlSeconds")),
    new Option("--network", "give the guest outbound network access (default off: no NIC at all)"),
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
  allowHostCompat?: boolean;
  timeoutSeconds?: number;
  json?: boolean;
}
