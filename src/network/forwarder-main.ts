// The published-port forwarder's process (see forwarder.ts): started detached by pyro, one per service.
import { runForwarder, type ForwarderConfig } from "./forwarder.js";

const config = JSON.parse(process.argv[2] ?? "{}") as ForwarderConfig;
await runForwarder(config, 3);
