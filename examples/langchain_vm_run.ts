// LangChain.js with pyro's vm_run tool. runAgent works with any chat model
// that supports tool calling (bindTools); without one, this script calls
// the tool directly, the way the model would.
//   npx tsx examples/langchain_vm_run.ts
import type { BaseChatModel } from "@langchain/core/language_models/chat_models";
import { HumanMessage, type AIMessage, type BaseMessage } from "@langchain/core/messages";
import { Pyro } from "pyro-mcp";
import { pyroLangChainTools } from "pyro-mcp/langchain";

export async function runAgent(model: BaseChatModel, pyro: Pyro, prompt: string): Promise<string> {
  const tools = pyroLangChainTools(pyro, { profile: "vm-run" });
  const bound = model.bindTools!(tools);
  const messages: BaseMessage[] = [new HumanMessage(prompt)];
  for (let turn = 0; turn < 8; turn++) {
    const reply = (await bound.invoke(messages)) as AIMessage;
    messages.push(reply);
    if (!reply.tool_calls?.length) return typeof reply.content === "string" ? reply.content : JSON.stringify(reply.content);
    for (const call of reply.tool_calls) {
      const tool = tools.find((t) => t.name === call.name);
      if (tool) messages.push((await tool.invoke(call)) as BaseMessage);
    }
  }
  throw new Error("the model kept calling tools");
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [vmRun] = pyroLangChainTools(new Pyro());
  const output: unknown = await vmRun!.invoke({ environment: "debian:12", command: "git --version" });
  const result = JSON.parse(String(output)) as { exit_code: number; stdout: string };
  console.log(`vm_run → exit ${result.exit_code}: ${result.stdout.trim()}`);
}
