import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import { BaseChatModel } from "@langchain/core/language_models/chat_models";
import { AIMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import type { ChatResult } from "@langchain/core/outputs";
import type { LanguageModelV3CallOptions, LanguageModelV3GenerateResult } from "@ai-sdk/provider";
import { MockLanguageModelV3 } from "ai/test";
import OpenAI from "openai";
import { Pyro } from "pyro-mcp";
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
