import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { openSession, vmFiles } from "../../src/backends/qemu/vm.js";
import { Pyro } from "../../src/index.js";
import { ensureEnvironment, removeDir, tempStateDir } from "../helpers.js";

const stateDir = tempStateDir();
const pyro = new Pyro({ stateDir });

after(async () => {
  for (const vm of await pyro.listVms().catch(() => [])) await pyro.deleteVm(vm.vmId).catch(() => undefined);
  await pyro.close();
  removeDir(stateDir);
});

/**
 * The agent waits for hosts on its ports by events, not by re-reading them
 * on a timer. Many sessions opened and closed in a row on one VM, on all
 * four ports at once, must each get to work: none may hang (the host sends
 * its hello again on a new connection when one goes unanswered).
 */
describe("the agent channel on a real guest", () => {
  before(() => ensureEnvironment());

  test("50 rounds of four sessions at once, opened and closed in a row: every one works", async () => {
    // Started by another instance, closed at once: it lets go of the session its boot kept (QEMU serves one client per port).
    const starter = new Pyro({ stateDir });
    const vm = await starter.createVm({ environment: "debian:12" });
    await starter.startVm(vm.vmId);
    await starter.close();
    const files = vmFiles(join(stateDir, "vms", vm.vmId));
    for (let round = 0; round < 50; round++) {
      const held = await Promise.all(
        files.agents.map(() =>
          openSession(files, { deadline: Date.now() + 30_000 }).catch((error: unknown) => {
            throw new Error(`round ${round}: ${error instanceof Error ? error.message : String(error)}`);
          }),
        ),
      );
      await Promise.all(
        held.map(async ({ session }, i) => {
          // Every few rounds real work, else a ping; then the connection just goes.
          if (round % 5 === 0) assert.equal((await session.exec({ shell: `echo ${round}-${i}`, timeoutMs: 10_000, maxOutputBytes: 1024 })).stdout.toString(), `${round}-${i}\n`);
          else await session.ping();
        }),
      );
      for (const { session, release } of held) {
        session.close();
        await release();
      }
    }
    // The port pyro itself uses still works (execVm deletes the VM afterwards).
    const last = await pyro.execVm(vm.vmId, { command: "echo still-fine" });
    assert.equal(last.stdout, "still-fine\n");
  });
});
