import { randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import { mkdir, rm } from "node:fs/promises";
import type { Server as HttpServer, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { networkInterfaces } from "node:os";
import { dirname, join } from "node:path";
import express, { type NextFunction, type Request, type Response } from "express";
import { InvalidTokenError } from "@modelcontextprotocol/sdk/server/auth/errors.js";
import { requireBearerAuth } from "@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js";
import type { OAuthTokenVerifier } from "@modelcontextprotocol/sdk/server/auth/provider.js";
import type { AuthInfo } from "@modelcontextprotocol/sdk/server/auth/types.js";
import { hostHeaderValidation } from "@modelcontextprotocol/sdk/server/middleware/hostHeaderValidation.js";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { CallToolRequestSchema, type CallToolResult, type JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import { ErrorCode, PyroError } from "../errors.js";
import { writeFileAtomic } from "../util/fs.js";
import type { Pyro } from "../sdk/pyro.js";
import { defaultToolPolicy, toolsFor, type ProfileName, type ToolPolicy } from "../tools/catalog.js";
import { callTool, type ToolOutcome } from "../tools/call.js";
import { toolErrorDocument } from "../tools/vocabulary.js";
import type { RenderedError } from "../vocabulary.js";

export interface McpServerOptions {
  profile: ProfileName;
  /** The operator's decisions: host-compat and the host directories a model may name. Default: defaultToolPolicy(). */
  policy?: ToolPolicy;
  /** Version reported to clients. */
  version: string;
  /** Where diagnostics go (never stdout: on stdio, stdout carries only MCP messages). */
  log?: (line: string) => void;
}

/** Minimum gap between progress notifications of one call; the latest message wins. */
const PROGRESS_INTERVAL_MS = 200;

/**
 * Tool calls in flight, so a shutdown can cancel them and wait for their VMs
 * to be cleaned up before the process exits.
 */
class InFlight {
  private readonly calls = new Map<AbortController, Promise<unknown>>();

  track<T>(signal: AbortSignal, run: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const controller = new AbortController();
    const forward = () => controller.abort(signal.reason);
    if (signal.aborted) forward();
    else signal.addEventListener("abort", forward, { once: true });
    const promise = run(controller.signal).finally(() => {
      signal.removeEventListener("abort", forward);
      this.calls.delete(controller);
    });
    this.calls.set(controller, promise.catch(() => undefined));
    return promise;
  }

  /** Cancels every call and waits (bounded) for their cleanup. */
  async cancelAll(timeoutMs = 30_000): Promise<void> {
    for (const controller of this.calls.keys()) controller.abort(new Error("the server is shutting down"));
    await Promise.race([Promise.all(this.calls.values()), new Promise((r) => setTimeout(r, timeoutMs).unref())]);
  }
}

/**
 * Turns a tool's result or failure into an MCP result: pyro's failures are
 * results with isError, never protocol errors. A failure carries its
 * `{error: {code, message, hint}}` as text only: structured content must
 * match the tool's output schema, and clients (the official one among them)
 * reject a result whose structured content does not.
 */
function errorResult(error: RenderedError): CallToolResult {
  return { isError: true, content: [{ type: "text", text: JSON.stringify({ error }, null, 2) }] };
}

/** A tool's outcome as an MCP result; a success carries its structured content, checked by callTool against the output schema. */
function mcpResult(outcome: ToolOutcome): CallToolResult {
  if ("error" in outcome) return errorResult(outcome.error);
  return { content: [{ type: "text", text: JSON.stringify(outcome.result, null, 2) }], structuredContent: outcome.result };
}

/** An MCP server with the tools of one profile, each a thin adapter over the SDK. */
export function createMcpServer(pyro: Pyro, options: McpServerOptions, inFlight = new InFlight()): McpServer {
  const policy = options.policy ?? defaultToolPolicy();
  const server = new McpServer(
    { name: "pyro", version: options.version },
    {
      instructions:
        "pyro runs commands in disposable Linux microVMs. Use vm_run for one-shot commands (chain steps with &&). " +
        "Use workspace_create (with seed_path) + workspace_exec only when several commands must share files; workspace_sync_push sends later host changes; delete workspaces when done.",
    },
  );
  const tools = new Map(toolsFor(options.profile).map((tool) => [tool.name, tool]));
  for (const tool of tools.values()) {
    // Registered for the listing (names, JSON schemas, annotations); calls go through the handler below.
    server.registerTool(
      tool.name,
      { title: tool.annotations.title, description: tool.description, inputSchema: tool.input, outputSchema: tool.output, annotations: tool.annotations },
      () => Promise.reject(new Error("calls are served by pyro's own handler")),
    );
  }
  // pyro's own tools/call handler: arguments that fail a tool's input schema come back as pyro's
  // invalid_argument naming the argument, as every other refusal does, not as the SDK's protocol text.
  server.server.setRequestHandler(CallToolRequestSchema, async (request, extra) => {
    const tool = tools.get(request.params.name);
    if (!tool) {
      const named = JSON.stringify(request.params.name.length > 80 ? `${request.params.name.slice(0, 80)}...` : request.params.name);
      const unknown = new PyroError(ErrorCode.invalidArgument, `no tool named ${named} in profile ${options.profile}`, {
        hint: `call one of ${[...tools.keys()].join(", ")} (tools/list shows them)`,
      });
      return errorResult(toolErrorDocument(unknown).error);
    }
    const token = extra._meta?.progressToken;
    let onProgress: ((message: string) => void) | undefined;
    if (token !== undefined) {
      let progress = 0;
      let last = 0;
      let pending: NodeJS.Timeout | undefined;
      let latest = "";
      const send = () => {
        pending = undefined;
        last = Date.now();
        progress += 1;
        extra.sendNotification({ method: "notifications/progress", params: { progressToken: token, progress, message: latest } }).catch(() => undefined);
      };
      onProgress = (message) => {
        latest = message;
        if (pending) return;
        const wait = PROGRESS_INTERVAL_MS - (Date.now() - last);
        if (wait <= 0) send();
        else pending = setTimeout(send, wait);
      };
    }
    return inFlight.track(extra.signal, async (signal) => mcpResult(await callTool(pyro, tool, request.params.arguments, { signal, onProgress, policy })));
  });
  return server;
}

/**
 * Serves MCP on stdin/stdout until stdin closes or `signal` aborts (SIGTERM,
 * Ctrl-C). Lines that are not JSON-RPC get a parse error reply; on the way
 * out, running tools are cancelled and their VMs cleaned up before this
 * resolves.
 */
export async function serveStdio(pyro: Pyro, options: McpServerOptions & { signal?: AbortSignal }): Promise<void> {
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const inFlight = new InFlight();
  const server = createMcpServer(pyro, options, inFlight);
  const transport = new StdioServerTransport();
  const closed = new Promise<void>((resolvePromise) => {
    transport.onclose = () => resolvePromise();
  });
  await server.connect(transport);
  server.server.onerror = (error) => {
    log(`pyro mcp: protocol error: ${error.message}`);
    if (error instanceof SyntaxError || /JSON/i.test(error.message)) {
      const reply = { jsonrpc: "2.0", id: null, error: { code: -32700, message: `Parse error: ${error.message}` } };
      transport.send(reply as unknown as JSONRPCMessage).catch(() => undefined);
    }
  };
  const onEnd = () => {
    void transport.close();
  };
  process.stdin.once("end", onEnd);
  process.stdin.once("close", onEnd);
  if (options.signal?.aborted) onEnd();
  options.signal?.addEventListener("abort", onEnd, { once: true });
  log(`pyro mcp: serving profile ${options.profile} on stdio`);
  await closed;
  await inFlight.cancelAll();
  await server.close().catch(() => undefined);
}

export interface HttpServeOptions extends McpServerOptions {
  host: string;
  port: number;
  /** Required on every request, loopback included. Default: generated, printed on stderr and written to `tokenFile`. */
  token?: string;
  /** Where the token is written (mode 0600) for local clients to read. Default: `<stateDir>/mcp/http-<port>.token`. */
  tokenFile?: string;
}

export interface HttpServeHandle {
  url: string;
  token: string;
  /** The 0600 file holding the token while the server runs. */
  tokenFile: string;
  close: () => Promise<void>;
  server: HttpServer;
}

const LOOPBACK = new Set(["127.0.0.1", "::1", "localhost"]);

export function isLoopback(host: string): boolean {
  return LOOPBACK.has(host) || host.startsWith("127.");
}

/** Largest JSON-RPC request body accepted: a command is at most 256 KiB, with room for JSON escaping. */
const MAX_BODY = "4mb";

/**
 * The bearer token check of the MCP SDK's auth middleware, against the one
 * token this server has. Compared in constant time.
 */
function tokenVerifier(expected: string): OAuthTokenVerifier {
  const want = Buffer.from(expected);
  return {
    verifyAccessToken: (given: string): Promise<AuthInfo> => {
      const got = Buffer.from(given);
      if (got.length !== want.length || !timingSafeEqual(got, want)) {
        return Promise.reject(new InvalidTokenError("unauthorized: send Authorization: Bearer <token> (PYRO_MCP_TOKEN, or the token file the server printed)"));
      }
      // The SDK requires an expiry; this token lives as long as the server.
      return Promise.resolve({ token: given, clientId: "pyro", scopes: [], expiresAt: Math.floor(Date.now() / 1000) + 24 * 3600 });
    },
  };
}

/**
 * Serves Streamable HTTP on /mcp. Every request must carry the bearer token,
 * on loopback too: a guest with network, or another local user, also reaches
 * loopback. The Host header must name this server (the MCP SDK's DNS
 * rebinding protection).
 */
export async function serveHttp(pyro: Pyro, options: HttpServeOptions): Promise<HttpServeHandle> {
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const token = options.token ?? randomBytes(24).toString("base64url");
  const inFlight = new InFlight();
  const sessions = new Map<string, { transport: StreamableHTTPServerTransport; server: McpServer }>();

  const deny = (res: ServerResponse, status: number, message: string) => {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: -32000, message } }));
  };

  const handle = async (req: Request, res: Response) => {
    const sessionId = req.headers["mcp-session-id"];
    const existing = typeof sessionId === "string" ? sessions.get(sessionId) : undefined;
    if (existing) return existing.transport.handleRequest(req, res, req.body);
    if (typeof sessionId === "string") return deny(res, 404, "unknown or expired MCP session");
    if (req.method !== "POST") return deny(res, 400, "start a session with an initialize POST");
    const server = createMcpServer(pyro, options, inFlight);
    const transport: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (id) => {
        sessions.set(id, { transport, server });
      },
      onsessionclosed: (id) => {
        sessions.delete(id);
      },
    });
    transport.onclose = () => {
      if (transport.sessionId) sessions.delete(transport.sessionId);
    };
    await server.connect(transport);
    await transport.handleRequest(req, res, req.body);
  };

  const wildcard = options.host === "0.0.0.0" || options.host === "::";
  // A wildcard bind answers on every local address; those (and only those) are this server's names.
  const local = Object.values(networkInterfaces())
    .flat()
    .map((info) => (info?.family === "IPv6" ? `[${info.address}]` : info?.address))
    .filter((name): name is string => Boolean(name));
  const bracketed = options.host.includes(":") && !options.host.startsWith("[") ? `[${options.host}]` : options.host;
  const hostnames = isLoopback(options.host) ? ["127.0.0.1", "localhost", "[::1]"] : wildcard ? [...local, "localhost"] : [bracketed];

  const app = express();
  app.disable("x-powered-by");
  app.use(hostHeaderValidation(hostnames));
  app.use(requireBearerAuth({ verifier: tokenVerifier(token) }));
  app.use(express.json({ limit: MAX_BODY }));
  app.all("/mcp", (req, res) => {
    handle(req, res).catch((error: unknown) => {
      log(`pyro mcp: ${String(error)}`);
      if (!res.headersSent) deny(res, 500, "internal error");
    });
  });
  app.use((req: Request, res: Response) => deny(res, 404, "not found: the MCP endpoint is /mcp"));
  // A body that is not JSON, or too large, is the client's error, not a crash.
  app.use((error: Error & { status?: number }, _req: Request, res: Response, _next: NextFunction) => {
    deny(res, error.status && error.status >= 400 && error.status < 500 ? error.status : 500, error.message);
  });

  const http = await new Promise<HttpServer>((resolvePromise, reject) => {
    const listening = app.listen(options.port, options.host, (error?: Error) => (error ? reject(error) : resolvePromise(listening)));
    listening.once("error", reject);
  });
  const address = http.address() as AddressInfo;
  const hostPart = address.family === "IPv6" ? `[${address.address}]` : address.address;
  const url = `http://${hostPart}:${address.port}/mcp`;
  const tokenFile = options.tokenFile ?? join(pyro.paths.stateDir, "mcp", `http-${address.port}.token`);
  await mkdir(dirname(tokenFile), { recursive: true, mode: 0o700 });
  await writeFileAtomic(tokenFile, `${token}\n`, 0o600);
  // The token first: the "serving" line is the last one, so whoever waits for it has everything.
  if (options.token === undefined) log(`pyro mcp: bearer token (send as Authorization: Bearer <token>): ${token}`);
  log(`pyro mcp: token file ${tokenFile}`);
  log(`pyro mcp: serving profile ${options.profile} on ${url}`);
  return {
    url,
    token,
    tokenFile,
    server: http,
    close: async () => {
      await inFlight.cancelAll();
      for (const { transport, server } of sessions.values()) {
        await transport.close().catch(() => undefined);
        await server.close().catch(() => undefined);
      }
      await new Promise<void>((r) => http.close(() => r()));
      await rm(tokenFile, { force: true });
    },
  };
}
