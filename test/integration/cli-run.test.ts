import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { writeFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { availableParallelism, release, tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import { Pyro } from "../../src/index.js";
import { assertNothingLeft, ensureEnvironment, removeDir, runCli, tempStateDir, vmDirsUnder } from "../helpers.js";

const stateDir = tempStateDir();
let guestKernel = "";

function json(stdout: string): Record<string, unknown> {
  return JSON.parse(stdout) as Record<string, unknown>;
}

describe("pyro run on real guests", () => {
  before(async () => {
    await ensureEnvironment();
    guestKernel = (await new Pyro().inspectEnvironment("debian:12")).kernelRelease ?? "";
    assert.ok(guestKernel);
  });

  afterEach(() => {
    // After every run: no QEMU process and no per-VM files remain.
    assertNothingLeft(stateDir);
  });

  after(() => removeDir(stateDir));

  test("argument boundaries survive and the kernel is the guest's", async () => {
    const r = await runCli(["run", "debian:12", "--json", "--", "sh", "-lc", 'echo "a  b"; uname -r'], { stateDir });
    assert.equal(r.code, 0, r.stderr);
    const result = json(r.stdout);
    const lines = String(result.stdout).split("\n");
    assert.equal(lines[0], "a  b");
    assert.equal(lines[1], guestKernel);
    assert.notEqual(lines[1], release(), "the command ran on the host kernel");
    for (const key of ["exit_code", "stdout", "stderr", "duration_ms", "timed_out", "stdout_truncated", "stderr_truncated", "execution_mode", "accel", "environment", "vm_id"]) {
      assert.ok(key in result, `missing ${key}`);
    }
    assert.equal(result.execution_mode, "guest");
    assert.equal(result.environment, "debian:12");
    assert.match(String(result.accel), /^(kvm|tcg)$/);
  });

  test("stdout and stderr are separate and the exit code passes through", async () => {
    const split = await runCli(["run", "debian:12", "--json", "--", "sh", "-c", "echo out; echo err >&2"], { stateDir });
    const result = json(split.stdout);
    assert.equal(result.stdout, "out\n");
    assert.equal(result.stderr, "err\n");

    const human = await runCli(["run", "debian:12", "--", "sh", "-c", "echo to-out; echo to-err >&2; exit 7"], { stateDir });
    assert.equal(human.code, 7);
    assert.equal(human.stdout, "to-out\n");
    assert.match(human.stderr, /^to-err$/m);

    const seven = await runCli(["run", "debian:12", "--json", "--", "sh", "-c", "exit 7"], { stateDir });
    assert.equal(seven.code, 7);
    assert.equal(json(seven.stdout).exit_code, 7);
  });

  test("a whole shell line as one argument: the guest's 127 passes through, with a hint to use sh -c; other failures get none", async () => {
    const advice = /^hint: .* ran as one command name; to run it as a shell line, write: -- sh -c 'ls -la && true'$/m;
    const human = await runCli(["run", "debian:12", "--", "ls -la && true"], { stateDir });
    assert.equal(human.code, 127, human.stderr);
    assert.match(human.stderr, /command not found/);
    assert.match(human.stderr, advice);

    const asJson = await runCli(["run", "debian:12", "--json", "--", "ls -la && true"], { stateDir });
    assert.equal(asJson.code, 127, asJson.stderr);
    const result = json(asJson.stdout);
    assert.equal(result.exit_code, 127);
    assert.match(`hint: ${String(result.hint)}`, advice);
    assert.match(asJson.stderr, advice);

    // The command's own 127 and a plain failure, given as separate words: nothing to advise.
    const own = await runCli(["run", "debian:12", "--json", "--", "sh", "-c", "exit 127"], { stateDir });
    assert.equal(own.code, 127, own.stderr);
    assert.ok(!("hint" in json(own.stdout)), own.stdout);
    assert.doesNotMatch(own.stderr, /hint/);
    const plain = await runCli(["run", "debian:12", "--", "false"], { stateDir });
    assert.equal(plain.code, 1, plain.stderr);
    assert.doesNotMatch(plain.stderr, /hint/);
  });

  test("pyro vm exec gives the same hint for a shell line in one argument", async () => {
    const created = await runCli(["vm", "create", "debian:12", "--id-only"], { stateDir });
    assert.equal(created.code, 0, created.stderr);
    const vmId = created.stdout.trim();
    assert.equal((await runCli(["vm", "start", vmId, "--json"], { stateDir })).code, 0);
    const exec = await runCli(["vm", "exec", vmId, "--json", "--", "cd /tmp; ls"], { stateDir });
    assert.equal(exec.code, 127, exec.stderr);
    const result = json(exec.stdout);
    assert.equal(result.exit_code, 127);
    assert.match(String(result.hint), / -- sh -c 'cd \/tmp; ls'$/);
    assert.match(exec.stderr, /^hint: .* -- sh -c 'cd \/tmp; ls'$/m);
  });

  test("a command past its timeout is killed, reported, and its VM removed", async () => {
    const r = await runCli(["run", "debian:12", "--json", "--timeout-seconds", "2", "--", "sleep", "60"], { stateDir });
    const result = json(r.stdout);
    assert.equal(result.timed_out, true);
    assert.equal(result.exit_code, 124);
    assert.equal(r.code, 124);
    // Boot plus two seconds, far from sixty.
    assert.ok(r.wallMs < 45_000, `took ${r.wallMs} ms`);
  });

  test("huge output is truncated and flagged while pyro's memory stays bounded", async () => {
    const r = await runCli(["run", "debian:12", "--json", "--", "sh", "-c", "yes | head -c 50000000; yes e | head -c 3000000 >&2"], { stateDir });
    assert.equal(r.code, 0, r.stderr.slice(0, 500));
    const result = json(r.stdout);
    assert.equal(result.stdout_truncated, true);
    assert.equal(result.stderr_truncated, true);
    assert.equal(String(result.stdout).length, 1024 * 1024);
    assert.equal(String(result.stderr).length, 1024 * 1024);
    // The bound: output is capped at 1 MiB per stream, so the CLI stays well under 200 MiB.
    assert.ok(r.peakRssBytes > 0 && r.peakRssBytes < 200 * 1024 * 1024, `peak RSS ${r.peakRssBytes}`);
  });

  test("without --network only lo exists; with it the host's loopback is closed unless the operator opens a port", async () => {
    const off = await runCli(["run", "debian:12", "--json", "--", "ls", "/sys/class/net"], { stateDir });
    assert.equal(json(off.stdout).stdout, "lo\n");

    const token = randomBytes(8).toString("hex");
    let received = "";
    const server = createServer((socket) => {
      socket.setEncoding("utf8");
      socket.on("data", (chunk: string) => (received += chunk));
      socket.end("hello-from-host\n");
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as { port: number }).port;
    try {
      // The gateway leads to the host's loopback, closed by default.
      const script = `timeout 5 bash -c 'exec 3<>/dev/tcp/10.0.2.2/${port}; echo ${token} >&3; head -n1 <&3'; echo "exit $?"; ls /sys/class/net`;
      const closed = json((await runCli(["run", "debian:12", "--network", "--json", "--", "bash", "-c", script], { stateDir })).stdout);
      assert.match(String(closed.stdout), /^exit [1-9]\d*\neth0\nlo\n$/, String(closed.stderr));
      assert.equal(received, "", "the host's server heard nothing");
      // An operator (not a model) can open one port of it, which the guest then reaches at the gateway.
      const opened = json(
        (await runCli(["run", "debian:12", "--network", "--json", "--", "bash", "-c", script], { stateDir, env: { PYRO_NETWORK_ALLOW_DESTINATIONS: `127.0.0.1:${port}` } })).stdout,
      );
      assert.equal(opened.stdout, "hello-from-host\nexit 0\neth0\nlo\n", String(opened.stderr));
      assert.equal(received.trim(), token);
    } finally {
      server.close();
    }
  });

  test("a file on the host is not visible inside the guest", async () => {
    const name = `pyro-secret-${randomBytes(6).toString("hex")}`;
    const hostFile = join(tmpdir(), name);
    writeFileSync(hostFile, "secret");
    try {
      const r = await runCli(["run", "debian:12", "--json", "--", "sh", "-c", `test -e ${hostFile} && echo visible; find / -xdev -name ${name} 2>/dev/null | wc -l`], {
        stateDir,
      });
      const result = json(r.stdout);
      assert.equal(result.stdout, "0\n");
    } finally {
      rmSync(hostFile, { force: true });
    }
  });

  test("three runs in parallel all succeed", async () => {
    const runs = await Promise.all(
      [1, 2, 3].map((n) => runCli(["run", "debian:12", "--json", "--", "sh", "-c", `echo run-${n}; hostname`], { stateDir })),
    );
    const hostnames = new Set<string>();
    runs.forEach((r, i) => {
      assert.equal(r.code, 0, r.stderr);
      const result = json(r.stdout);
      const lines = String(result.stdout).split("\n");
      assert.equal(lines[0], `run-${i + 1}`);
      assert.equal(lines[1], `pyro-${String(result.vm_id)}`);
      hostnames.add(lines[1] ?? "");
    });
    assert.equal(hostnames.size, 3, "each run had its own VM");
  });

  test("bad input is refused before anything starts, naming the field", async () => {
    const cases: [string[], number, RegExp][] = [
      [["run", "debian:99", "--", "true"], 65, /<environment>: unknown environment "debian:99"/],
      [["run", "debian:12", "--vcpu-count", "0", "--", "true"], 64, /--vcpu-count: must be between 1/],
      [["run", "debian:12", "--vcpu-count", String(availableParallelism() + 1), "--", "true"], 64, /--vcpu-count: must be between 1/],
      [["run", "debian:12", "--mem-mib", "127", "--", "true"], 64, /--mem-mib: must be between 128/],
      [["run", "debian:12", "--timeout-seconds", "0", "--", "true"], 64, /--timeout-seconds: must be between 1/],
      [["run", "debian:12", "--timeout-seconds", "-3", "--", "true"], 64, /--timeout-seconds: must be between 1/],
      [["run", "debian:12", "--ttl-seconds", "0", "--", "true"], 64, /--ttl-seconds: must be between 1/],
      [["run", "debian:12", "--vcpu-count", "two", "--", "true"], 64, /--vcpu-count: must be a whole number/],
      [["run", "debian:12"], 64, /the command after --: must be a non-empty command line/],
    ];
    for (const [args, code, message] of cases) {
      const r = await runCli(args, { stateDir });
      assert.equal(r.code, code, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, message);
      assert.match(r.stderr, /hint:|\[/);
      assert.equal(r.stdout, "");
      assert.deepEqual(vmDirsUnder(stateDir), [], "nothing was created");
    }
  });

  test("pyro doctor reports the accelerator and a working guest", async () => {
    const r = await runCli(["doctor", "--json"], { stateDir });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const report = json(r.stdout) as {
      kvm: { present: boolean; usable: boolean; reason: string };
      accel: { accel: string; reason: string };
      guest: { boot: boolean; exec: boolean; kernel_release: string };
    };
    if (process.env.PYRO_ACCEL === undefined) {
      // These machines: /dev/kvm is absent or cannot run stock kernels, so TCG is used.
      assert.equal(report.kvm.usable, false, report.kvm.reason);
      assert.equal(report.accel.accel, "tcg");
      assert.match(report.accel.reason, report.kvm.present ? /cannot run stock kernels|not readable/ : /does not exist/);
    }
    assert.equal(report.guest.boot, true);
    assert.equal(report.guest.exec, true);
    assert.equal(report.guest.kernel_release, guestKernel);
  });
});
