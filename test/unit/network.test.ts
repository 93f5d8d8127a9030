import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { test } from "node:test";
import { PyroError } from "../../src/errors.js";
import { ALWAYS_BLOCKED, helperPolicy, hostPatternCovers, normalizeHostPattern, operatorDestinations, resolveNetwork } from "../../src/network/policy.js";
import { resolveVmOptions } from "../../src/sdk/validate.js";
import { defaultToolPolicy, effectiveAllowHosts } from "../../src/tools/policy.js";
import { ROOT } from "../helpers.js";

const names = { network: "network", networkPolicy: "networkPolicy", allowHosts: "allowHosts" };

function refused(fn: () => unknown, field: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof PyroError, String(error));
    assert.equal(error.code, "invalid_argument");
    assert.match(error.message, field);
    return true;
  });
}

test("network: the boolean means egress, the policy names the mode, contradictions are refused", () => {
  assert.deepEqual(resolveNetwork({}, names), { policy: "off", allowHosts: [] });
  assert.deepEqual(resolveNetwork({ network: true }, names), { policy: "egress", allowHosts: [] });
  assert.deepEqual(resolveNetwork({ network: false }, names), { policy: "off", allowHosts: [] });
  assert.deepEqual(resolveNetwork({ networkPolicy: "egress+published-ports" }, names), { policy: "egress+published-ports", allowHosts: [] });
  assert.deepEqual(resolveNetwork({ network: true, networkPolicy: "egress", allowHosts: ["Example.ORG.", "*.github.com", "example.org"] }, names), {
    policy: "egress",
    allowHosts: ["example.org", "*.github.com"],
  });
  refused(() => resolveNetwork({ network: true, networkPolicy: "off" }, names), /^network: contradicts/);
  refused(() => resolveNetwork({ network: false, networkPolicy: "egress" }, names), /^network:/);
  refused(() => resolveNetwork({ networkPolicy: "everything" }, names), /^networkPolicy: must be one of off, egress, egress\+published-ports/);
  refused(() => resolveNetwork({ network: "yes" }, names), /^network:/);
  refused(() => resolveNetwork({ allowHosts: ["example.org"] }, names), /^allowHosts: needs network/);
  refused(() => resolveNetwork({ network: true, allowHosts: "example.org" }, names), /^allowHosts: must be a list/);
  refused(() => resolveNetwork({ network: true, allowHosts: Array.from({ length: 65 }, (_, i) => `h${i}.org`) }, names), /at most 64/);
  assert.equal(resolveVmOptions({ environment: "debian:12", network: true }).networkPolicy, "egress");
  assert.equal(resolveVmOptions({ environment: "debian:12", networkPolicy: "egress" }).network, true);
});

test("allowed hosts are names or *.suffix, never addresses or wildcards elsewhere", () => {
  assert.equal(normalizeHostPattern("h", " API.GitHub.com. "), "api.github.com");
  assert.equal(normalizeHostPattern("h", "*.pythonhosted.org"), "*.pythonhosted.org");
  for (const bad of ["", "*", "*.", "a.*.org", "1.2.3.4", "::1", "exa mple.org", "a..org", "-a.org", `${"a".repeat(64)}.org`, 7, null]) {
    refused(() => normalizeHostPattern("allowHosts", bad), /^allowHosts:/);
  }
});

test("a server's allowed hosts can be narrowed by a model, never widened", () => {
  assert.ok(hostPatternCovers("*.github.com", "api.github.com"));
  assert.ok(hostPatternCovers("*.github.com", "*.api.github.com"));
  assert.ok(hostPatternCovers("pypi.org", "pypi.org"));
  assert.ok(!hostPatternCovers("*.github.com", "github.com"));
  assert.ok(!hostPatternCovers("*.github.com", "evilgithub.com"));
  assert.ok(!hostPatternCovers("api.github.com", "*.github.com"));
  const policy = defaultToolPolicy({ allowHosts: ["*.github.com", "pypi.org"] });
  assert.deepEqual(effectiveAllowHosts(undefined, policy, true), ["*.github.com", "pypi.org"]);
  assert.deepEqual(effectiveAllowHosts([], policy, true), ["*.github.com", "pypi.org"]);
  assert.deepEqual(effectiveAllowHosts(["API.github.com"], policy, true), ["api.github.com"]);
  refused(() => effectiveAllowHosts(["evil.example"], policy, true), /^allow_hosts: evil\.example is outside/);
  refused(() => effectiveAllowHosts(["*.com"], policy, true), /^allow_hosts:/);
  assert.equal(effectiveAllowHosts(undefined, defaultToolPolicy(), true), undefined);
  // A guest without network is not refused for the server's list.
  assert.equal(effectiveAllowHosts(undefined, policy, false), undefined);
});

test("operator destinations: addresses, prefixes, ports; the host's loopback only as 127.0.0.1 with ports", () => {
  assert.deepEqual(operatorDestinations({}), []);
  assert.deepEqual(operatorDestinations({ PYRO_NETWORK_ALLOW_DESTINATIONS: "10.1.2.3:8080, 192.168.5.77/24 ,127.0.0.1:3142+3143" }), [
    { prefix: "10.1.2.3/32", ports: [8080] },
    { prefix: "192.168.5.0/24", ports: [] },
    { prefix: "127.0.0.1/32", ports: [3142, 3143] },
  ]);
  for (const bad of ["example.org", "10.1.2.3:0", "10.1.2.3:70000", "10.1.2.3/33", "300.1.1.1", "127.0.0.2:80", "127.0.0.1", "127.0.0.0/8:80", "::1", "0.0.0.0/0", "126.0.0.0/7", "96.0.0.0/3:80"]) {
    refused(() => operatorDestinations({ PYRO_NETWORK_ALLOW_DESTINATIONS: bad }), /^PYRO_NETWORK_ALLOW_DESTINATIONS:/);
  }
});

test("the helper's policy JSON says what the VM may do", () => {
  const json = JSON.parse(helperPolicy({ policy: "egress", allowHosts: ["example.org"] }, [{ prefix: "10.1.2.3/32", ports: [80] }])) as Record<string, unknown>;
  assert.deepEqual(json, {
    guestIp: "10.0.2.15",
    gateway: "10.0.2.2",
    dns: "10.0.2.3",
    egress: true,
    allowHosts: ["example.org"],
    destinations: [{ prefix: "10.1.2.3/32", ports: [80] }],
  });
  assert.equal((JSON.parse(helperPolicy({ policy: "off", allowHosts: [] }, [])) as { egress: boolean }).egress, false);
});

test("the ranges reported as always blocked are the ones the network helper blocks", () => {
  const fromHelper = JSON.parse(execFileSync(join(ROOT, "dist", "netd", "pyro-netd"), ["--print-blocked"], { encoding: "utf8" })) as string[];
  assert.deepEqual([...ALWAYS_BLOCKED], fromHelper);
});
