// The Vercel AI SDK with pyro's vm_run tool: generateText runs the tool loop.
// Pass any AI SDK language model; without one, this script calls the tool's
// execute directly, the way generateText would.
//   npx tsx examples/ai_sdk_vm_run.ts
import { generateText, stepCountIs, type LanguageModel } from "ai";
import { Pyro } from "pyro-mcp";
import { pyroAiSdkTools } from "pyro-mcp/ai-sdk";

export async function runAgent(model: LanguageModel, pyro: Pyro, prompt: string): Promise<string> {
  const result = await generateText({ model, tools: pyroAiSdkTools(pyro), prompt, stopWhen: stepCountIs(5) });
  return result.text;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const tools = pyroAiSdkTools(new Pyro());
  const result = (await tools.vm_run!.execute!({ environment: "debian:12", command: "uname -r" }, { toolCallId: "direct", messages: [] })) as {
    exit_code: number;
    stdout: string;
  };
  console.log(`vm_run → exit ${result.exit_code}: guest kernel ${result.stdout.trim()}`);
}
