import { isSameProcessAlive, killAndWait } from "../util/proc.js";
import type { PublishedPort, VmRecord } from "./store.js";

/**
 * Ends the host processes that serve a VM while it runs: the network helper
 * and the forwarders of published ports. Called wherever the VM stops,
 * fails or is deleted, so no host port outlives its VM.
 */
export async function killHelpers(record: Pick<VmRecord, "netd" | "published">): Promise<void> {
  if (record.netd) await killAndWait(record.netd.pid, record.netd.startTime);
  const forwarders = new Map((record.published ?? []).map((port) => [`${port.forwarder.pid}:${port.forwarder.startTime}`, port.forwarder]));
  await Promise.all([...forwarders.values()].map((forwarder) => killAndWait(forwarder.pid, forwarder.startTime)));
}

/** The published ports whose forwarder still runs (one killed from outside has released its port). */
export async function livePublished(record: Pick<VmRecord, "published" | "state">): Promise<PublishedPort[]> {
  if (record.state !== "started") return [];
  const live: PublishedPort[] = [];
  for (const port of record.published ?? []) if (await isSameProcessAlive(port.forwarder.pid, port.forwarder.startTime)) live.push(port);
  return live;
}
