import { randomBytes } from "node:crypto";
import { connect, type Socket } from "node:net";
import { ErrorCode, InvalidArgumentError, PyroError } from "../errors.js";
import { debug } from "../util/log.js";
import { encodeFrame, FrameDecoder, type Frame, type FrameHeader } from "./frame.js";

export interface HelloOptions {
  /** Sent so a restored or freshly booted guest runs on the host's clock. */
  timeUnixMs?: number;
  /** Fresh random bytes mixed into the guest's kernel pool. */
  entropy?: Buffer;
  hostname?: string;
  machineId?: string;
}

export interface HelloReply {
  agentVersion: string;
  bootId: string;
  pid1: boolean;
}

export interface ExecRequest {
  /** A shell line: `bash -c` under the guest's login environment (captured once; `sh -lc` without bash). */
  shell?: string;
  argv?: string[];
  cwd?: string;
  env?: Record<string, string>;
  timeoutMs: number;
  maxOutputBytes: number;
  /** Flush the guest's filesystems before reporting the end, so what the command wrote survives a crash. */
  sync?: boolean;
  /** Environment variables set from the guest's secrets: { ENV_NAME: SECRET_NAME }. */
  secretEnv?: Record<string, string>;
}

export interface ExecOutcome {
  exitCode: number;
  signal: string | null;
  timedOut: boolean;
  /** As measured by the agent, from start to exit. */
  durationMs: number;
  stdout: Buffer;
  stderr: Buffer;
  stdoutBytes: number;
  stderrBytes: number;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
}

export interface ExecHooks {
  onStarted?: (pid: number) => void;
  onOutput?: (stream: "stdout" | "stderr", chunk: Buffer) => void;
  /** Aborting kills the command's process group in the guest. */
  signal?: AbortSignal;
}

export interface PutTarReply {
  files: number;
  dirs: number;
  symlinks: number;
  bytes: number;
}

/** How long a closing session may take to hand the guest the frames it has queued. */
const CLOSE_FLUSH_MS = 2000;

const HANDSHAKE_TIMEOUT = "the guest agent did not answer the handshake in time";
/** First wait before a hello is sent again on the same connection; it doubles up to the cap. */
const HELLO_RESEND_MS = 250;
const HELLO_RESEND_MAX_MS = 2000;
/** How long the ping that confirms a new session may take before the hello is said again; it doubles up to HELLO_RESEND_MAX_MS. */
const CONFIRM_MS = 500;

/** Whether opening a session failed only because the agent did not answer its hello in time. */
export function isHandshakeTimeout(error: unknown): boolean {
  return error instanceof PyroError && error.details?.handshakeTimedOut === true;
}

/** Extra time the host allows beyond a command's own timeout for the agent to kill and report. */
export const EXEC_GRACE_MS = 15_000;

type Pending = {
  onFrame: (frame: Frame) => void;
  onClose: (error: PyroError) => void;
};

function agentError(message: string, hint?: string, cause?: unknown): PyroError {
  return new PyroError(ErrorCode.agentError, message, { hint, cause });
}

/**
 * One session with the guest agent over one port (a QEMU chardev unix socket,
 * or the agent's own socket off-VM). Requests are multiplexed by id.
 */
export class AgentSession {
  private readonly decoder = new FrameDecoder();
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closedError: PyroError | undefined;
  hello: HelloReply | undefined;

  private constructor(private readonly socket: Socket) {}

  /**
   * Connects and performs the hello handshake. Until `deadline` (epoch ms) it
   * keeps waiting for the agent, which covers a guest that is still booting.
   */
  static async open(socketPath: string, options: { deadline: number; hello?: HelloOptions; signal?: AbortSignal }): Promise<AgentSession> {
    const socket = await connectUnix(socketPath, options.deadline, options.signal);
    const session = new AgentSession(socket);
    session.listen();
    try {
      for (let wait = CONFIRM_MS; ; wait = Math.min(wait * 2, HELLO_RESEND_MAX_MS)) {
        session.hello = await session.handshake(options.hello ?? {}, options.deadline, options.signal);
        if (await session.confirmed(Math.min(options.deadline, Date.now() + wait), options.deadline)) break;
        debug("agent", "the guest ended the session its hello began (it saw the previous connection close only then); saying hello again");
      }
    } catch (error) {
      session.close();
      throw error;
    }
    return session;
  }

  /** Frames of an earlier session can arrive first; nothing counts before the first hello_ok with our nonce. */
  private synced = false;
  private helloId = 0;
  private helloNonce = "";

  private listen(): void {
    this.socket.on("data", (chunk: Buffer) => {
      for (const frame of this.decoder.push(chunk)) {
        if (!this.synced) {
          const ours = frame.header.id === this.helloId;
          if (ours && frame.header.type === "hello_ok" && frame.header.nonce === this.helloNonce) this.synced = true;
          else if (!(ours && frame.header.type === "error")) continue;
        }
        this.pending.get(frame.header.id)?.onFrame(frame);
      }
    });
    const onEnd = (cause?: unknown) => this.failAll(agentError("the connection to the guest agent closed", undefined, cause));
    this.socket.on("error", onEnd);
    this.socket.on("close", () => onEnd());
  }

  /**
   * Whether the session the hello began is still there: a port just
   * reconnected can hand the guest the new connection's hello before the old
   * connection's close, which then ends the new session too. A ping tells: its
   * reply comes back only from a live session (refused, or dropped with the
   * session, otherwise). Until `wait` passes; false means "say hello again".
   */
  private async confirmed(wait: number, deadline: number): Promise<boolean> {
    try {
      await this.simple("ping", {}, wait);
      return true;
    } catch (error) {
      if (this.closedError || Date.now() >= deadline) throw error;
      return false;
    }
  }

  private async handshake(options: HelloOptions, deadline: number, signal: AbortSignal | undefined): Promise<HelloReply> {
    const nonce = randomBytes(16).toString("hex");
    const id = this.nextId++;
    if (!this.synced) {
      this.helloId = id;
      this.helloNonce = nonce;
    }
    let stopResending = () => undefined as void;
    const replied = new Promise<FrameHeader>((resolvePromise, reject) => {
      const timer = setTimeout(() => finish(new PyroError(ErrorCode.agentError, HANDSHAKE_TIMEOUT, { details: { handshakeTimedOut: true } })), Math.max(0, deadline - Date.now()));
      const onAbort = () => finish(new PyroError(ErrorCode.cancelled, "cancelled while waiting for the guest agent"));
      signal?.addEventListener("abort", onAbort, { once: true });
      const finish = (result: PyroError | FrameHeader) => {
        clearTimeout(timer);
        stopResending();
        signal?.removeEventListener("abort", onAbort);
        this.pending.delete(id);
        if (result instanceof PyroError) reject(result);
        else resolvePromise(result);
      };
      this.pending.set(id, {
        onFrame: (frame) => {
          if (frame.header.type === "hello_ok" && frame.header.nonce === nonce) finish(frame.header);
          else if (frame.header.type === "error") finish(agentError(`the guest agent refused the handshake: ${String(frame.header.message)}`));
        },
        onClose: (error) => finish(error),
      });
      const header: FrameHeader = { type: "hello", id, nonce };
      if (options.timeUnixMs !== undefined) header.time_unix_ms = options.timeUnixMs;
      if (options.hostname !== undefined) header.hostname = options.hostname;
      if (options.machineId !== undefined) header.machine_id = options.machineId;
      const sentAt = Date.now();
      const send = (entropy: Buffer) => {
        try {
          this.send(header, entropy);
        } catch (error) {
          finish(error instanceof PyroError ? error : agentError(String(error)));
        }
      };
      send(options.entropy ?? Buffer.alloc(0));
      // A hello can be lost on a port just reconnected: the guest may take in the new
      // connection's first bytes before it processes the old one's close, and then drop
      // them with the old session. The same hello is sent again on this connection
      // (sooner than a new connection would be tried), each time with fresh entropy
      // and the clock as it is then; the first hello_ok ends the wait.
      let wait = HELLO_RESEND_MS;
      const resend = () => {
        if (this.closedError) return;
        debug("agent", `no hello_ok after ${Date.now() - sentAt} ms; sending the hello again`);
        if (options.timeUnixMs !== undefined) header.time_unix_ms = options.timeUnixMs + (Date.now() - sentAt);
        send(options.entropy ? randomBytes(options.entropy.length) : Buffer.alloc(0));
        wait = Math.min(wait * 2, HELLO_RESEND_MAX_MS);
        resendTimer = setTimeout(resend, wait);
      };
      let resendTimer = setTimeout(resend, wait);
      stopResending = () => clearTimeout(resendTimer);
    });
    let reply: FrameHeader;
    try {
      reply = await replied;
    } finally {
      stopResending();
    }
    return {
      agentVersion: typeof reply.agent_version === "string" ? reply.agent_version : "unknown",
      bootId: typeof reply.boot_id === "string" ? reply.boot_id : "",
      pid1: reply.pid1 === true,
    };
  }

  private failAll(error: PyroError): void {
    if (this.closedError) return;
    this.closedError = error;
    for (const pending of [...this.pending.values()]) pending.onClose(error);
    this.pending.clear();
  }

  private send(header: FrameHeader, payload?: Buffer): void {
    if (this.closedError) throw this.closedError;
    this.socket.write(encodeFrame(header, payload));
  }

  /** A request answered by one `ok` (or `error`) frame. */
  private simple(type: string, fields: Record<string, unknown>, deadline: number): Promise<FrameHeader> {
    const id = this.nextId++;
    return new Promise((resolvePromise, reject) => {
      const timer = setTimeout(() => done(agentError(`the guest agent did not answer ${type} in time`)), Math.max(0, deadline - Date.now()));
      const done = (result: PyroError | FrameHeader) => {
        clearTimeout(timer);
        this.pending.delete(id);
        if (result instanceof PyroError) reject(result);
        else resolvePromise(result);
      };
      this.pending.set(id, {
        onFrame: (frame) => {
          if (frame.header.type === "error") done(agentError(`${type} failed in the guest: ${String(frame.header.message)}`));
          else done(frame.header);
        },
        onClose: done,
      });
      try {
        this.send({ ...fields, type, id });
      } catch (error) {
        done(error instanceof PyroError ? error : agentError(String(error)));
      }
    });
  }

  /**
   * A request answered by any number of `dataType` frames (handed to
   * `onData` as they come) and then one `ok`, whose header and payload are
   * returned. An agent `error` rejects with what `onError` makes of it.
   * Aborting `signal` ends the wait (the caller then closes the session,
   * which ends the request in the guest).
   */
  request(
    type: string,
    fields: Record<string, unknown>,
    options: {
      payload?: Buffer;
      deadline: number;
      signal?: AbortSignal;
      dataType?: string;
      onData?: (payload: Buffer) => void;
      onError: (code: string, message: string) => PyroError;
    },
  ): Promise<Frame> {
    const id = this.nextId++;
    return new Promise((resolvePromise, reject) => {
      const timer = setTimeout(() => done(agentError(`the guest agent did not finish ${type} in time`)), Math.max(0, options.deadline - Date.now()));
      const onAbort = () => done(new PyroError(ErrorCode.cancelled, `${type} was cancelled`));
      const done = (result: PyroError | Frame) => {
        clearTimeout(timer);
        options.signal?.removeEventListener("abort", onAbort);
        if (!this.pending.delete(id)) return;
        if (result instanceof PyroError) reject(result);
        else resolvePromise(result);
      };
      this.pending.set(id, {
        onFrame: (frame) => {
          const { header } = frame;
          if (header.type === "ok") return done(frame);
          if (header.type === "error") return done(options.onError(String(header.code), String(header.message).slice(0, 2000)));
          if (options.dataType !== undefined && header.type === options.dataType) {
            try {
              options.onData?.(frame.payload);
            } catch (error) {
              done(error instanceof PyroError ? error : agentError(String(error)));
            }
          }
        },
        onClose: done,
      });
      if (options.signal?.aborted) return onAbort();
      options.signal?.addEventListener("abort", onAbort, { once: true });
      try {
        this.send({ ...fields, type, id }, options.payload);
      } catch (error) {
        done(error instanceof PyroError ? error : agentError(String(error)));
      }
    });
  }

  /**
   * A long-lived exchange under one id (a forwarded connection): `onFrame`
   * gets every frame the agent sends for it, `onClose` the session's end.
   * The returned `send` writes further frames that name it as `target`;
   * it reports false when the socket is backed up.
   */
  channel(type: string, fields: Record<string, unknown>, handlers: { onFrame: (frame: Frame) => void; onClose: (error: PyroError) => void }): { id: number; send: (type: string, payload?: Buffer) => boolean; end: () => void } {
    const id = this.nextId++;
    this.pending.set(id, handlers);
    this.send({ ...fields, type, id });
    return {
      id,
      send: (frameType, payload) => {
        if (this.closedError) return true;
        return this.socket.write(encodeFrame({ type: frameType, id: this.nextId++, target: id }, payload));
      },
      end: () => {
        this.pending.delete(id);
      },
    };
  }

  /** Resolves once the socket has room again (or the session ended). */
  whenWritable(): Promise<void> {
    if (this.closedError || !this.socket.writableNeedDrain) return Promise.resolve();
    return new Promise((resolvePromise) => {
      const done = () => {
        this.socket.off("drain", done);
        this.socket.off("close", done);
        resolvePromise();
      };
      this.socket.once("drain", done);
      this.socket.once("close", done);
    });
  }

  /** Whether the connection to the agent has ended. */
  get closed(): boolean {
    return this.closedError !== undefined;
  }

  /** Flushes every filesystem in the guest to its disk. */
  async sync(deadline = Date.now() + 60_000): Promise<void> {
    await this.simple("sync", {}, deadline);
  }

  async ping(deadline = Date.now() + 5000): Promise<void> {
    await this.simple("ping", {}, deadline);
  }

  async kill(target: number, signal: "SIGKILL" | "SIGTERM" | "SIGINT" = "SIGKILL", deadline = Date.now() + 5000): Promise<void> {
    await this.simple("kill", { target, signal }, deadline);
  }

  async poweroff(deadline = Date.now() + 5000): Promise<void> {
    await this.simple("poweroff", {}, deadline);
  }

  /**
   * Streams a tar archive into `dest` in the guest (put_tar). The agent
   * stages and checks everything before moving it into place, so a refused or
   * interrupted transfer leaves `dest` as it was.
   */
  async putTar(
    dest: string,
    archive: AsyncIterable<Buffer | Uint8Array> | Iterable<Buffer | Uint8Array>,
    options: { maxBytes: number; maxEntries: number; deadline: number; signal?: AbortSignal },
  ): Promise<PutTarReply> {
    const id = this.nextId++;
    let settled = false;
    let rejectEarly: (error: PyroError) => void = () => undefined;
    const reply = new Promise<PutTarReply>((resolvePromise, reject) => {
      rejectEarly = reject;
      const timer = setTimeout(() => finish(agentError("the guest agent did not finish receiving files in time")), Math.max(0, options.deadline - Date.now()));
      const finish = (result: PyroError | PutTarReply) => {
        clearTimeout(timer);
        settled = true;
        this.pending.delete(id);
        if (result instanceof PyroError) reject(result);
        else resolvePromise(result);
      };
      this.pending.set(id, {
        onFrame: ({ header }) => {
          if (header.type === "ok") {
            const n = (v: unknown) => (typeof v === "number" && Number.isSafeInteger(v) && v >= 0 ? v : 0);
            finish({ files: n(header.files), dirs: n(header.dirs), symlinks: n(header.symlinks), bytes: n(header.bytes) });
          } else if (header.type === "error") {
            const message = String(header.message).slice(0, 2000);
            if (header.code === "bad_request") {
              // The agent refuses a destination it cannot use (a file, or a symlink, in the way).
              finish(new InvalidArgumentError("dest", message, "push to a directory under /workspace"));
              return;
            }
            const code = header.code === "bad_archive" ? ErrorCode.sourceRefused : header.code === "too_large" ? ErrorCode.sourceTooLarge : ErrorCode.agentError;
            finish(new PyroError(code, code === ErrorCode.agentError ? `copying files into the guest failed: ${message}` : message, { details: { agentCode: header.code } }));
          }
        },
        onClose: finish,
      });
    });
    reply.catch(() => undefined);
    const chunkBytes = 256 * 1024;
    let buffered: Buffer[] = [];
    let size = 0;
    let first = true;
    const flush = async (type: "put_tar_data" | "put_tar_end") => {
      const payload = Buffer.concat(buffered);
      buffered = [];
      size = 0;
      const header: FrameHeader = first ? { type: "put_tar", id, dest, max_bytes: options.maxBytes, max_entries: options.maxEntries } : { type, id };
      first = false;
      if (!this.socket.write(encodeFrame(header, payload))) await this.drained(options.deadline, options.signal);
    };
    try {
      for await (const chunk of archive) {
        if (settled) break;
        let data = Buffer.from(chunk);
        while (data.length > 0) {
          const take = Math.min(chunkBytes - size, data.length);
          buffered.push(data.subarray(0, take));
          size += take;
          data = data.subarray(take);
          if (size >= chunkBytes) await flush("put_tar_data");
        }
      }
      if (!settled) {
        if (first || size > 0) await flush("put_tar_data");
        if (!settled) await flush("put_tar_end");
      }
    } catch (error) {
      // The local side failed (unreadable file, a recheck refusal). Ending the
      // session makes the agent abandon the transfer and remove its staging;
      // a put_tar_end could instead commit an archive cut at an entry boundary.
      if (!settled) {
        rejectEarly(error instanceof PyroError ? error : agentError(`reading the files to copy failed: ${String(error)}`));
        this.close();
      }
    }
    return reply;
  }

  /**
   * Waits until the socket takes more data. A guest that stops reading must
   * not hold the caller (and the port's lock) past its deadline or a cancel.
   */
  private drained(deadline: number, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolvePromise, reject) => {
      const cleanup = () => {
        clearTimeout(timer);
        this.socket.off("drain", onDrain);
        this.socket.off("close", onClose);
        signal?.removeEventListener("abort", onAbort);
      };
      const onDrain = () => {
        cleanup();
        resolvePromise();
      };
      const onClose = () => {
        cleanup();
        reject(agentError("the connection to the guest agent closed while sending files"));
      };
      const onAbort = () => {
        cleanup();
        reject(new PyroError(ErrorCode.cancelled, "cancelled while sending files to the guest"));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(agentError("the guest agent stopped taking files before the deadline", "retry; a guest that stops reading is busy or broken"));
      }, Math.max(0, deadline - Date.now()));
      if (signal?.aborted) return onAbort();
      this.socket.once("drain", onDrain);
      this.socket.once("close", onClose);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /**
   * Runs one command. Output beyond `maxOutputBytes` per stream is not kept,
   * whatever the guest sends, and is flagged as truncated.
   */
  exec(request: ExecRequest, hooks: ExecHooks = {}): Promise<ExecOutcome> {
    const id = this.nextId++;
    const kept = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
    const keptBytes = { stdout: 0, stderr: 0 };
    const seenBytes = { stdout: 0, stderr: 0 };
    return new Promise((resolvePromise, reject) => {
      let cancelled = false;
      const timer = setTimeout(
        () => done(agentError(`the guest agent did not report the command's end within ${Math.round((request.timeoutMs + EXEC_GRACE_MS) / 1000)} s`)),
        request.timeoutMs + EXEC_GRACE_MS,
      );
      const onAbort = () => {
        cancelled = true;
        this.kill(id).catch(() => undefined);
        // If the agent cannot report the kill promptly, give up on it.
        setTimeout(() => done(new PyroError(ErrorCode.cancelled, "the command was cancelled")), 5000).unref();
      };
      hooks.signal?.addEventListener("abort", onAbort, { once: true });
      const done = (result: PyroError | ExecOutcome) => {
        clearTimeout(timer);
        hooks.signal?.removeEventListener("abort", onAbort);
        if (!this.pending.delete(id)) return;
        if (result instanceof PyroError) reject(result);
        else if (cancelled) reject(new PyroError(ErrorCode.cancelled, "the command was cancelled"));
        else resolvePromise(result);
      };
      this.pending.set(id, {
        onFrame: ({ header, payload }) => {
          switch (header.type) {
            case "started":
              if (typeof header.pid === "number") hooks.onStarted?.(header.pid);
              return;
            case "output": {
              const stream = header.stream === "stderr" ? "stderr" : header.stream === "stdout" ? "stdout" : undefined;
              if (!stream) return done(agentError("the guest agent sent output for an unknown stream"));
              seenBytes[stream] += payload.length;
              const room = request.maxOutputBytes - keptBytes[stream];
              if (room > 0) {
                const slice = payload.length > room ? payload.subarray(0, room) : payload;
                kept[stream].push(slice);
                keptBytes[stream] += slice.length;
                hooks.onOutput?.(stream, slice);
              }
              return;
            }
            case "exit":
              return done(parseExit(header, kept, keptBytes, seenBytes));
            case "error":
              return done(
                new PyroError(ErrorCode.agentError, `the command could not start in the guest: ${String(header.message)}`, {
                  hint: "check the command, and the working directory if one was given",
                  details: { agentCode: header.code },
                }),
              );
            default:
              return;
          }
        },
        onClose: done,
      });
      const header: FrameHeader = { type: "exec", id, timeout_ms: request.timeoutMs, max_output_bytes: request.maxOutputBytes };
      if (request.shell !== undefined) header.shell = request.shell;
      if (request.argv !== undefined) header.argv = request.argv;
      if (request.cwd !== undefined) header.cwd = request.cwd;
      if (request.env !== undefined) header.env = request.env;
      if (request.secretEnv !== undefined) header.secret_env = request.secretEnv;
      if (request.sync) header.sync = true;
      try {
        this.send(header);
      } catch (error) {
        done(error instanceof PyroError ? error : agentError(String(error)));
      }
      if (hooks.signal?.aborted) onAbort();
    });
  }

  /**
   * Whether this session alone may keep the process alive. A parked session
   * (kept for the next command after a boot) must not: a script that starts
   * a VM and returns exits on its own.
   */
  holdProcess(hold: boolean): void {
    if (hold) this.socket.ref();
    else this.socket.unref();
  }

  /**
   * Ends the session. Frames already queued are still delivered whole (a
   * frame cut in the middle would make the agent read the next session's
   * hello as the rest of it); if the guest does not take them within two
   * seconds, the connection is cut anyway.
   */
  close(): void {
    this.failAll(agentError("the session was closed"));
    if (this.socket.destroyed) return;
    if (this.socket.writableLength === 0) {
      this.socket.destroy();
      return;
    }
    this.socket.end();
    setTimeout(() => this.socket.destroy(), CLOSE_FLUSH_MS).unref();
  }
}

function parseExit(
  header: FrameHeader,
  kept: { stdout: Buffer[]; stderr: Buffer[] },
  keptBytes: { stdout: number; stderr: number },
  seenBytes: { stdout: number; stderr: number },
): ExecOutcome | PyroError {
  const int = (value: unknown) => (typeof value === "number" && Number.isSafeInteger(value) ? value : undefined);
  const exitCode = int(header.exit_code);
  if (exitCode === undefined || exitCode < 0 || exitCode > 255) return agentError("the guest agent sent a malformed exit report");
  const reported = (value: unknown, seen: number) => Math.max(int(value) ?? 0, seen);
  const stdoutBytes = reported(header.stdout_bytes, seenBytes.stdout);
  const stderrBytes = reported(header.stderr_bytes, seenBytes.stderr);
  return {
    exitCode,
    signal: typeof header.signal === "string" ? header.signal.slice(0, 32) : null,
    timedOut: header.timed_out === true,
    durationMs: Math.max(0, int(header.duration_ms) ?? 0),
    stdout: Buffer.concat(kept.stdout),
    stderr: Buffer.concat(kept.stderr),
    stdoutBytes,
    stderrBytes,
    stdoutTruncated: header.stdout_truncated === true || stdoutBytes > keptBytes.stdout,
    stderrTruncated: header.stderr_truncated === true || stderrBytes > keptBytes.stderr,
  };
}

/** Connects to a unix socket, retrying while it does not exist yet or refuses, until the deadline. */
export async function connectUnix(path: string, deadline: number, signal?: AbortSignal): Promise<Socket> {
  let lastError: unknown;
  while (Date.now() < deadline) {
    if (signal?.aborted) throw new PyroError(ErrorCode.cancelled, "cancelled while connecting to the guest");
    try {
      return await new Promise<Socket>((resolvePromise, reject) => {
        const socket = connect(path);
        socket.once("connect", () => {
          socket.removeListener("error", reject);
          resolvePromise(socket);
        });
        socket.once("error", reject);
      });
    } catch (error) {
      lastError = error;
      // QEMU creates its sockets within tens of milliseconds of starting; poll briskly.
      await new Promise((r) => setTimeout(r, 3));
    }
  }
  throw agentError(`could not connect to ${path}`, undefined, lastError);
}
