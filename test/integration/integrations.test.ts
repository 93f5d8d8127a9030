import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import { BaseChatModel } from "@langchain/core/language_models/chat_models";
import { AIMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import type { ChatResult } from "@langchain/core/outputs";
import { convertToOpenAITool } from "@langchain/core/utils/function_calling";
import type { LanguageModelV3CallOptions, LanguageModelV3GenerateResult } from "@ai-sdk/provider";
import { generateText, stepCountIs } from "ai";
import { MockLanguageModelV3 } from "ai/test";
import OpenAI from "openai";
import { Pyro } from "pyro-mcp";
import { pyroAiSdkTools } from "pyro-mcp/ai-sdk";
import { pyroLangChainTools } from "pyro-mcp/langchain";
import { openaiTools, runFunctionCalls } from "pyro-mcp/openai";
import { runAgent as runAiSdkAgent } from "../../examples/ai_sdk_vm_run.js";
import { runAgent as runLangChainAgent } from "../../examples/langchain_vm_run.js";
import { runAgent as runOpenAIAgent } from "../../examples/openai_responses_vm_run.js";
import { assertNothingLeft, ensureEnvironment, removeDir, ROOT, tempStateDir } from "../helpers.js";

const stateDir = tempStateDir();
const pyro = new Pyro({ stateDir });
let guestKernel = "";

before(async () => {
  await ensureEnvironment();
  guestKernel = (await pyro.inspectEnvironment("debian:12")).kernelRelease ?? "";
  assert.ok(guestKernel);
});

afterEach(() => {
  assertNothingLeft(stateDir);
});

after(() => removeDir(stateDir));

describe("OpenAI Responses: the real openai client against a replay of the wire format", () => {
  test("a function_call for vm_run runs in a guest and its output goes back as function_call_output", async () => {
    const requests: Record<string, unknown>[] = [];
    const server = createServer((req, res) => {
      let body = "";
      req.on("data", (c: Buffer) => (body += c.toString()));
      req.on("end", () => {
        const request = JSON.parse(body) as Record<string, unknown>;
        requests.push(request);
        const base = { object: "response", created_at: 1_700_000_000, status: "completed", model: "gpt-test", parallel_tool_calls: true, tool_choice: "auto", tools: request.tools ?? [] };
        const reply =
          requests.length === 1
            ? {
                ...base,
                id: "resp_1",
                output: [
                  {
                    type: "function_call",
                    id: "fc_1",
                    call_id: "call_pyro_1",
                    name: "vm_run",
                    status: "completed",
                    arguments: JSON.stringify({ environment: "debian:12", command: "uname -r", vcpu_count: null, mem_mib: null, timeout_seconds: 60, ttl_seconds: null, network: null }),
                  },
                ],
              }
            : {
                ...base,
                id: "resp_2",
                output: [{ type: "message", id: "msg_1", role: "assistant", status: "completed", content: [{ type: "output_text", text: "The guest kernel is reported above.", annotations: [] }] }],
              };
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify(reply));
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const client = new OpenAI({ apiKey: "test-key", baseURL: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, maxRetries: 0 });
    try {
      const answer = await runOpenAIAgent(client, pyro, "What kernel does the guest run?", "gpt-test");
      assert.equal(answer, "The guest kernel is reported above.");
    } finally {
      server.close();
    }
    assert.equal(requests.length, 2);
    const [first, second] = requests as [{ tools: { type: string; name: string; strict: boolean; parameters: { required: string[]; additionalProperties: boolean; properties: Record<string, unknown> } }[]; model: string }, { input: { type?: string; call_id?: string; output?: string; role?: string }[] }];
    assert.equal(first.model, "gpt-test");
    assert.deepEqual(first.tools.map((t) => [t.type, t.name, t.strict]), [["function", "vm_run", true]]);
    const parameters = first.tools[0]!.parameters;
    assert.equal(parameters.additionalProperties, false);
    assert.deepEqual([...parameters.required].sort(), Object.keys(parameters.properties).sort(), "strict mode: every property required");
    const outputItem = second.input.find((item) => item.type === "function_call_output");
    assert.ok(outputItem, JSON.stringify(second.input));
    assert.equal(outputItem.call_id, "call_pyro_1");
    assert.ok(second.input.some((item) => item.type === "function_call" && item.call_id === "call_pyro_1"), "the call is echoed back before its output");
    const result = JSON.parse(outputItem.output ?? "{}") as { exit_code: number; stdout: string; execution_mode: string };
    assert.equal(result.exit_code, 0);
    assert.equal(result.stdout, `${guestKernel}\n`);
    assert.equal(result.execution_mode, "guest");
  });
});

function text(content: unknown): string {
  return typeof content === "string" ? content : JSON.stringify(content);
}

/** A chat model that asks for vm_run once, then answers from the ToolMessage it was given. */
class ScriptedChatModel extends BaseChatModel {
  readonly seen: BaseMessage[][] = [];
  _llmType(): string {
    return "scripted";
  }
  override bindTools(): this {
    return this;
  }
  // eslint-disable-next-line @typescript-eslint/require-await -- the interface is async
  async _generate(messages: BaseMessage[]): Promise<ChatResult> {
    this.seen.push([...messages]);
    const last = messages[messages.length - 1];
    const message =
      last instanceof ToolMessage
        ? new AIMessage(`guest says: ${(JSON.parse(text(last.content)) as { stdout: string }).stdout.trim()}`)
        : new AIMessage({ content: "", tool_calls: [{ id: "call_lc_1", name: "vm_run", args: { environment: "debian:12", command: "uname -r" }, type: "tool_call" }] });
    return { generations: [{ text: typeof message.content === "string" ? message.content : "", message }] };
  }
}

describe("LangChain.js: a tool-calling loop with a scripted chat model", () => {
  test("the vm_run tool runs in a guest and its ToolMessage reaches the model", async () => {
    const model = new ScriptedChatModel({});
    const answer = await runLangChainAgent(model, pyro, "What kernel does the guest run?");
    assert.equal(answer, `guest says: ${guestKernel}`);
    assert.equal(model.seen.length, 2);
    const toolMessage = model.seen[1]!.find((m) => m instanceof ToolMessage);
    assert.ok(toolMessage);
    assert.equal(toolMessage.tool_call_id, "call_lc_1");
    assert.equal((JSON.parse(text(toolMessage.content)) as { stdout: string }).stdout, `${guestKernel}\n`);
  });
});

describe("Vercel AI SDK: generateText with a mock model, two steps", () => {
  test("the tool runs in a guest and the model receives its output", async () => {
    const calls: LanguageModelV3CallOptions[] = [];
    const usage = { inputTokens: { total: 1, noCache: 1, cacheRead: 0, cacheWrite: 0 }, outputTokens: { total: 1, text: 1, reasoning: 0 } };
    const model = new MockLanguageModelV3({
      // eslint-disable-next-line @typescript-eslint/require-await -- the interface is async
      doGenerate: async (options): Promise<LanguageModelV3GenerateResult> => {
        calls.push(options);
        if (calls.length === 1) {
          return {
            content: [{ type: "tool-call", toolCallId: "call_ai_1", toolName: "vm_run", input: JSON.stringify({ environment: "debian:12", command: "uname -r" }) }],
            finishReason: { unified: "tool-calls", raw: "tool_calls" },
            usage,
            warnings: [],
          };
        }
        return { content: [{ type: "text", text: "done" }], finishReason: { unified: "stop", raw: "stop" }, usage, warnings: [] };
      },
    });
    assert.equal(await runAiSdkAgent(model, pyro, "What kernel does the guest run?"), "done");
    assert.equal(calls.length, 2);
    assert.deepEqual(calls[0]!.tools?.map((t) => t.name), ["vm_run"]);
    const toolMessage = calls[1]!.prompt.find((m) => m.role === "tool");
    assert.ok(toolMessage && toolMessage.role === "tool");
    const part = toolMessage.content.find((p) => p.type === "tool-result");
    assert.ok(part && part.type === "tool-result");
    assert.equal(part.toolCallId, "call_ai_1");
    const output = part.output as { type: string; value: { stdout: string; exit_code: number } };
    assert.equal(output.type, "json");
    assert.equal(output.value.exit_code, 0);
    assert.equal(output.value.stdout, `${guestKernel}\n`);
  });
});

/** What one adapter answered to one tool call, driven through its framework's own tool-calling path. */
interface Answer {
  document: Record<string, unknown>;
  /** The JSON Schema of the called tool's arguments, as the framework showed it to the model. */
  shownSchema: { properties: Record<string, Record<string, unknown>>; required?: string[] } | undefined;
}

type Call = (tools: string[], name: string, rawArguments: string) => Promise<Answer>;

/** The openai client reads a scripted response from a local server; runFunctionCalls dispatches its function_call. */
const viaOpenAI: Call = async (tools, name, rawArguments) => {
  const server = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      const output = [{ type: "function_call", id: "fc_bad", call_id: "call_bad", name, status: "completed", arguments: rawArguments }];
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ id: "resp_bad", object: "response", created_at: 1_700_000_000, status: "completed", model: "gpt-test", parallel_tool_calls: true, tool_choice: "auto", tools: [], output }));
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  try {
    const client = new OpenAI({ apiKey: "test-key", baseURL: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, maxRetries: 0 });
    const offered = openaiTools({ tools });
    const response = await client.responses.create({ model: "gpt-test", input: "go", tools: offered });
    const outputs = await runFunctionCalls(pyro, response.output, { tools });
    assert.equal(outputs.length, 1);
    assert.equal(outputs[0]!.call_id, "call_bad");
    return { document: JSON.parse(outputs[0]!.output) as Record<string, unknown>, shownSchema: undefined };
  } finally {
    server.close();
  }
};

/** A tool call as a chat model emits it, given to the tool's invoke as agent loops (ToolNode, createAgent) do. */
const viaLangChain: Call = async (tools, name, rawArguments) => {
  const tool = pyroLangChainTools(pyro, { tools }).find((t) => t.name === name);
  assert.ok(tool, `no LangChain tool ${name}`);
  const message: unknown = await tool.invoke({ type: "tool_call", id: "call_lc_bad", name, args: JSON.parse(rawArguments) as Record<string, unknown> });
  assert.ok(message instanceof ToolMessage, `not a ToolMessage: ${String(message)}`);
  assert.equal(message.tool_call_id, "call_lc_bad");
  const document = JSON.parse(text(message.content)) as Record<string, unknown>;
  assert.equal(message.status, "error" in document ? "error" : "success");
  const shown = convertToOpenAITool(tool).function.parameters as Answer["shownSchema"];
  return { document, shownSchema: shown };
};

/** generateText with a mock model that makes the call, then reads the tool result it is given back. */
const viaAiSdk: Call = async (tools, name, rawArguments) => {
  const calls: LanguageModelV3CallOptions[] = [];
  const usage = { inputTokens: { total: 1, noCache: 1, cacheRead: 0, cacheWrite: 0 }, outputTokens: { total: 1, text: 1, reasoning: 0 } };
  const model = new MockLanguageModelV3({
    // eslint-disable-next-line @typescript-eslint/require-await -- the interface is async
    doGenerate: async (options): Promise<LanguageModelV3GenerateResult> => {
      calls.push(options);
      return calls.length === 1
        ? { content: [{ type: "tool-call", toolCallId: "call_ai_bad", toolName: name, input: rawArguments }], finishReason: { unified: "tool-calls", raw: "tool_calls" }, usage, warnings: [] }
        : { content: [{ type: "text", text: "done" }], finishReason: { unified: "stop", raw: "stop" }, usage, warnings: [] };
    },
  });
  await generateText({ model, tools: pyroAiSdkTools(pyro, { tools }), prompt: "go", stopWhen: stepCountIs(3) });
  assert.equal(calls.length, 2);
  const toolMessage = calls[1]!.prompt.find((m) => m.role === "tool");
  assert.ok(toolMessage && toolMessage.role === "tool");
  const part = toolMessage.content.find((p) => p.type === "tool-result");
  assert.ok(part && part.type === "tool-result" && part.toolCallId === "call_ai_bad");
  assert.equal(part.output.type, "json", `the model was given ${JSON.stringify(part.output)}, not the tool's result`);
  const shown = calls[0]!.tools?.find((t) => t.name === name);
  assert.ok(shown && shown.type === "function");
  return { document: (part.output as { value: Record<string, unknown> }).value, shownSchema: shown.inputSchema as Answer["shownSchema"] };
};

describe("bad arguments and pyro's failures come back as the error document on every adapter, never thrown", () => {
  const adapters: [string, Call][] = [
    ["OpenAI", viaOpenAI],
    ["LangChain", viaLangChain],
    ["AI SDK", viaAiSdk],
  ];
  const offered = ["vm_run", "workspace_exec"];
  const cases: { what: string; name: string; args: unknown; code: string; message: RegExp }[] = [
    { what: "a wrong type", name: "vm_run", args: { environment: "debian:12", command: 42 }, code: "invalid_argument", message: /^command: must be a string, got 42/ },
    { what: "a value out of the schema's range", name: "vm_run", args: { environment: "debian:12", command: "true", timeout_seconds: 0 }, code: "invalid_argument", message: /^timeout_seconds: / },
    { what: "a value not in an enum", name: "vm_run", args: { environment: "debian:12", command: "true", network_policy: "everywhere" }, code: "invalid_argument", message: /^network_policy: / },
    { what: "a missing required argument", name: "vm_run", args: { environment: "debian:12" }, code: "invalid_argument", message: /^command: is required$/ },
    { what: "two bad arguments at once", name: "vm_run", args: { command: "", mem_mib: "lots" }, code: "invalid_argument", message: /^(?=.*environment: is required)(?=.*command: )(?=.*mem_mib: )/ },
    { what: "a malformed id", name: "workspace_exec", args: { workspace_id: "nope", command: "true" }, code: "invalid_argument", message: /^workspace_id: / },
    { what: "an unknown environment (pyro's own failure)", name: "vm_run", args: { environment: "nosuch:1", command: "true" }, code: "unknown_environment", message: /nosuch:1/ },
    { what: "an unknown workspace (pyro's own failure)", name: "workspace_exec", args: { workspace_id: "000000000000", command: "true" }, code: "workspace_not_found", message: /000000000000/ },
  ];
  // The schema allows up to 64 vCPUs, the SDK no more than the host's cores, and names the option vcpuCount.
  if (availableParallelism() < 64) {
    cases.push({ what: "a value the SDK refuses, named in snake_case", name: "vm_run", args: { environment: "debian:12", command: "true", vcpu_count: 64 }, code: "invalid_argument", message: /^vcpu_count: must be between 1 and \d+, got 64$/ });
  }
  for (const [adapter, call] of adapters) {
    for (const c of cases) {
      test(`${adapter}: ${c.what}`, async () => {
        const { document, shownSchema } = await call(offered, c.name, JSON.stringify(c.args));
        assert.deepEqual(Object.keys(document), ["error"], JSON.stringify(document));
        const error = document.error as { code: string; message: string; hint: string };
        assert.equal(error.code, c.code, error.message);
        assert.match(error.message, c.message);
        assert.doesNotMatch(`${error.message} ${error.hint}`, /\b[a-z]+[A-Z]\w*/, "a camelCase SDK name reached the model");
        assert.ok(typeof error.hint === "string" && error.hint.length > 0);
        if (shownSchema) {
          // The model is shown the real schema, constraints included; only the checking moved.
          assert.deepEqual([...(shownSchema.required ?? [])].sort(), Object.keys(c.name === "vm_run" ? { command: 1, environment: 1 } : { command: 1, workspace_id: 1 }).sort());
          assert.equal(shownSchema.properties.timeout_seconds?.minimum, 1);
          if (c.name === "vm_run") assert.deepEqual(shownSchema.properties.network_policy?.enum, ["off", "egress", "egress+published-ports"]);
        }
      });
    }
  }

  test("OpenAI: an unknown tool name and arguments that are not JSON", async () => {
    const unknown = (await viaOpenAI(offered, "vm_destroy_everything", "{}")).document.error as { code: string; message: string; hint: string };
    assert.equal(unknown.code, "invalid_argument");
    assert.match(unknown.message, /unknown tool "vm_destroy_everything"/);
    assert.equal(unknown.hint, "available: vm_run, workspace_exec");
    const garbled = (await viaOpenAI(offered, "vm_run", '{"environment": "debian:12", "comm')).document.error as { code: string };
    assert.equal(garbled.code, "invalid_argument");
  });
});

describe("the examples", () => {
  const run = (file: string, env: NodeJS.ProcessEnv = {}) => {
    const result = spawnSync(process.execPath, ["--import", "tsx", join(ROOT, "examples", file)], {
      cwd: ROOT,
      encoding: "utf8",
      env: { ...process.env, PYRO_STATE_DIR: stateDir, OPENAI_API_KEY: "", ...env },
      timeout: 300_000,
    });
    assert.equal(result.status, 0, `${file}: ${result.stderr}`);
    return result.stdout;
  };

  test("sdk_run.ts", () => {
    assert.match(run("sdk_run.ts"), new RegExp(`^exit 0 in \\d+ ms \\(guest, (kvm|tcg)\\)\\ngit version 2\\.[\\d.]+\\n${guestKernel.replace(/\./g, "\\.")}\\n$`));
  });
  test("sdk_lifecycle.ts", () => {
    assert.match(run("sdk_lifecycle.ts"), /^created [0-9a-f]{12} \(created\)\nstarted: started, boot (restore|cold), accel (kvm|tcg)\nstatus: started, expires .+\ndebian 12\.\d+; VM deleted: true\n$/);
  });
  test("sdk_workspace.ts", () => {
    assert.equal(run("sdk_workspace.ts"), "hello, seed\npushed 1 file(s) into /workspace\nhi again, push\nbuilt\n3 commands in the journal\n");
  });
  test("langchain_vm_run.ts", () => {
    assert.match(run("langchain_vm_run.ts"), /^vm_run → exit 0: git version 2\.[\d.]+\n$/);
  });
  test("ai_sdk_vm_run.ts", () => {
    assert.equal(run("ai_sdk_vm_run.ts"), `vm_run → exit 0: guest kernel ${guestKernel}\n`);
  });
  test("the OpenAI examples say what they need without a key", () => {
    assert.equal(run("openai_responses_vm_run.ts"), "set OPENAI_API_KEY to run this example against the OpenAI API\n");
    assert.equal(run("openai_responses_workspace.ts"), "set OPENAI_API_KEY to run this example against the OpenAI API\n");
  });
});

describe("the package without its optional peers", () => {
  test("installs without them; the core and the openai subpath work; the others name the package to install", () => {
    const dir = mkdtempSync(join(tmpdir(), "pyro-pack-"));
    try {
      const tarball = execFileSync("npm", ["pack", "--silent", "--pack-destination", dir], { cwd: ROOT, encoding: "utf8" }).trim().split("\n").pop()!;
      writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "consumer", version: "1.0.0", type: "module", private: true }));
      execFileSync("npm", ["install", "--no-audit", "--no-fund", "--ignore-scripts", "--omit=dev", join(dir, tarball)], { cwd: dir, stdio: "ignore", timeout: 300_000 });
      const installed = readdirSync(join(dir, "node_modules"));
      assert.ok(installed.includes("pyro-mcp"));
      for (const peer of ["ai", "openai"]) assert.ok(!installed.includes(peer), `${peer} was installed`);
      assert.ok(!existsSync(join(dir, "node_modules", "@langchain", "core")), "@langchain/core was installed");
      const load = (specifier: string) =>
        spawnSync(process.execPath, ["--input-type=module", "-e", `await import(${JSON.stringify(specifier)}); console.log("ok")`], { cwd: dir, encoding: "utf8" });
      assert.equal(load("pyro-mcp").stdout, "ok\n");
      assert.equal(load("pyro-mcp/openai").stdout, "ok\n");
      const langchain = load("pyro-mcp/langchain");
      assert.notEqual(langchain.status, 0);
      assert.match(langchain.stderr, /pyro-mcp\/langchain needs the optional package @langchain\/core; install it with: npm install @langchain\/core/);
      const aiSdk = load("pyro-mcp/ai-sdk");
      assert.notEqual(aiSdk.status, 0);
      assert.match(aiSdk.stderr, /pyro-mcp\/ai-sdk needs the optional package ai; install it with: npm install ai/);
      const cli = spawnSync(join(dir, "node_modules", ".bin", "pyro"), ["--version"], { encoding: "utf8" });
      assert.match(cli.stdout, /^\d+\.\d+\.\d+\n$/);
    } finally {
      removeDir(dir);
    }
  });
});
