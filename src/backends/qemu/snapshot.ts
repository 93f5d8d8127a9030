import { ErrorCode, PyroError } from "../../errors.js";
import { QmpClient } from "./qmp.js";
import { shellPath } from "./vm.js";

/**
 * Saves a running VM's device state to a file: pause, then migrate into a
 * compressor. The VM's RAM is its shared memory file (see LaunchSpec), which
 * the migration skips. Stopping first also flushes the VM's disks, so the
 * disk, memory and state files agree.
 */
export async function saveVmState(qmpSocket: string, statePath: string, deadline: number): Promise<void> {
  const qmp = await QmpClient.connect(qmpSocket, deadline);
  try {
    await qmp.execute("stop", undefined, deadline);
    // The default bandwidth cap is for live migration over a network; a local file wants none.
    await qmp.execute("migrate-set-parameters", { "max-bandwidth": 64 * 1024 * 1024 * 1024 }, deadline);
    // RAM lives in a shared file already; the stream needs only the devices.
    await qmp.execute("migrate-set-capabilities", { capabilities: [{ capability: "x-ignore-shared", state: true }] }, deadline);
    await qmp.execute("migrate", { uri: `exec:zstd -1 -q -T1 > ${shellPath(statePath)}` }, deadline);
    while (Date.now() < deadline) {
      const info = (await qmp.execute("query-migrate", undefined, deadline)) as { status?: string; "error-desc"?: string };
      if (info.status === "completed") return;
      if (info.status === "failed" || info.status === "cancelled") {
        throw new PyroError(ErrorCode.bootFailed, `saving the VM state failed: ${info["error-desc"] ?? info.status}`);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new PyroError(ErrorCode.bootTimeout, "saving the VM state did not finish in time");
  } finally {
    qmp.close();
  }
}
