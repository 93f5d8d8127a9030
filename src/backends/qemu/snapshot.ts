import { createWriteStream } from "node:fs";
import { lchown, rename, rm } from "node:fs/promises";
import { createServer, type Socket } from "node:net";
import { pipeline } from "node:stream/promises";
import { ErrorCode, PyroError } from "../../errors.js";
import { debug } from "../../util/log.js";
import { QmpClient } from "./qmp.js";
import { dropZeroPages, UnknownStreamError } from "./stream.js";

export interface SaveTarget {
  /** Where the state (devices and RAM) is written, mode 0600. */
  statePath: string;
  /** A unix socket path QEMU can reach (inside its jail directory); pyro listens there for the stream. */
  socketPath: string;
  /** The user QEMU runs as, who must be allowed to connect to the socket. */
  owner?: { uid: number; gid: number };
}

/**
 * Saves a running VM whole: pause, then migrate its devices and RAM into a
 * file. QEMU connects to a socket pyro serves and pyro writes the file, so a
 * confined QEMU (no process spawning, no view of the cache) can still save.
 * Stopping first also flushes the VM's disks, so disk and state agree.
 */
export async function saveVmState(qmpSocket: string, target: SaveTarget, deadline: number, signal?: AbortSignal): Promise<void> {
  await rm(target.socketPath, { force: true });
  const server = createServer();
  let received: Promise<void> | undefined;
  const connected = new Promise<Socket>((resolvePromise) => server.once("connection", resolvePromise));
  await new Promise<void>((resolvePromise, reject) => {
    server.once("error", reject);
    server.listen(target.socketPath, () => resolvePromise());
  });
  const qmp = await QmpClient.connect(qmpSocket, deadline);
  const raw = `${target.statePath}.raw`;
  try {
    // lchown: by now QEMU (whose directory this is) could have put a link here; that must not redirect the change.
    if (target.owner) await lchown(target.socketPath, target.owner.uid, target.owner.gid);
    // One stream, then nobody else may connect.
    void connected.then((socket) => {
      server.close();
      received = pipeline(socket, createWriteStream(raw, { mode: 0o600 }));
      received.catch(() => undefined);
    });
    await qmp.execute("stop", undefined, deadline);
    // The default bandwidth cap is for live migration over a network; a local file wants none.
    await qmp.execute("migrate-set-parameters", { "max-bandwidth": 64 * 1024 * 1024 * 1024 }, deadline);
    await qmp.execute("migrate", { uri: `unix:${target.socketPath}` }, deadline);
    while (Date.now() < deadline) {
      if (signal?.aborted) {
        await qmp.execute("migrate_cancel", undefined, Date.now() + 5000).catch(() => undefined);
        throw new PyroError(ErrorCode.cancelled, "cancelled while saving the VM");
      }
      const info = (await qmp.execute("query-migrate", undefined, deadline)) as { status?: string; "error-desc"?: string };
      if (info.status === "completed") {
        await connected;
        await withDeadline(received!, deadline, "writing the VM state did not finish in time");
        await compact(raw, target.statePath);
        return;
      }
      if (info.status === "failed" || info.status === "cancelled") {
        throw new PyroError(ErrorCode.bootFailed, `saving the VM state failed: ${info["error-desc"] ?? info.status}`);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new PyroError(ErrorCode.bootTimeout, "saving the VM state did not finish in time");
  } finally {
    qmp.close();
    server.close();
    await rm(target.socketPath, { force: true });
    await rm(raw, { force: true });
  }
}

/** The saved stream without records of all-zero pages (see stream.ts); the stream as it is when pyro cannot read it. */
async function compact(raw: string, statePath: string): Promise<void> {
  try {
    const { dropped, kept } = await dropZeroPages(raw, statePath);
    debug("snapshot", `saved ${kept} pages of RAM, left out ${dropped} zero pages`);
    await rm(raw, { force: true });
  } catch (error) {
    if (!(error instanceof UnknownStreamError)) throw error;
    debug("snapshot", `keeping the stream as QEMU wrote it: ${error.message}`);
    await rm(statePath, { force: true });
    await rename(raw, statePath);
  }
}

async function withDeadline<T>(promise: Promise<T>, deadline: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new PyroError(ErrorCode.bootTimeout, message)), Math.max(0, deadline - Date.now()));
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
