import type { Socket } from "node:net";
import { connectUnix } from "../../agent/client.js";
import { ErrorCode, PyroError } from "../../errors.js";

interface QmpResponse {
  id?: number;
  return?: unknown;
  error?: { class: string; desc: string };
  event?: string;
  data?: unknown;
  QMP?: unknown;
}

const MAX_LINE = 4 * 1024 * 1024;

/** A minimal client for QEMU's machine protocol (one JSON object per line). */
export class QmpClient {
  private buffer = "";
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();
  private readonly eventListeners = new Set<(event: string, data: unknown) => void>();
  private greeted: Promise<void>;
  private closed: Error | undefined;

  private constructor(private readonly socket: Socket) {
    let onGreeting: () => void = () => undefined;
    this.greeted = new Promise((resolvePromise) => {
      onGreeting = resolvePromise;
    });
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      this.buffer += chunk;
      if (this.buffer.length > MAX_LINE) {
        this.fail(new Error("QMP line too long"));
        return;
      }
      let newline: number;
      while ((newline = this.buffer.indexOf("\n")) >= 0) {
        const line = this.buffer.slice(0, newline).trim();
        this.buffer = this.buffer.slice(newline + 1);
        if (!line) continue;
        let message: QmpResponse;
        try {
          message = JSON.parse(line) as QmpResponse;
        } catch {
          continue;
        }
        if (message.QMP !== undefined) onGreeting();
        else if (message.event !== undefined) for (const listener of this.eventListeners) listener(message.event, message.data);
        else if (message.id !== undefined) {
          const waiter = this.waiting.get(message.id);
          this.waiting.delete(message.id);
          if (!waiter) continue;
          if (message.error) waiter.reject(new Error(`${message.error.class}: ${message.error.desc}`));
          else waiter.resolve(message.return);
        }
      }
    });
    const onEnd = () => this.fail(new Error("QMP connection closed"));
    socket.on("close", onEnd);
    socket.on("error", onEnd);
  }

  static async connect(path: string, deadline: number): Promise<QmpClient> {
    const socket = await connectUnix(path, deadline);
    const client = new QmpClient(socket);
    await withDeadline(client.greeted, deadline, "QMP greeting");
    await client.execute("qmp_capabilities", undefined, deadline);
    return client;
  }

  private fail(error: Error): void {
    if (this.closed) return;
    this.closed = error;
    for (const waiter of this.waiting.values()) waiter.reject(error);
    this.waiting.clear();
  }

  onEvent(listener: (event: string, data: unknown) => void): () => void {
    this.eventListeners.add(listener);
    return () => this.eventListeners.delete(listener);
  }

  execute(command: string, args?: Record<string, unknown>, deadline = Date.now() + 10_000): Promise<unknown> {
    if (this.closed) return Promise.reject(this.closed);
    const id = this.nextId++;
    const promise = new Promise<unknown>((resolvePromise, reject) => {
      this.waiting.set(id, { resolve: resolvePromise, reject });
    });
    this.socket.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id })}\n`);
    return withDeadline(promise, deadline, `QMP ${command}`);
  }

  close(): void {
    this.fail(new Error("QMP client closed"));
    this.socket.destroy();
  }
}

async function withDeadline<T>(promise: Promise<T>, deadline: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new PyroError(ErrorCode.bootFailed, `${what} timed out`)), Math.max(0, deadline - Date.now()));
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
