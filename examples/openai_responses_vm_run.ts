// The OpenAI Responses API with pyro's vm_run as a function tool: the model
// asks for commands, pyro runs them in fresh microVMs, the outputs go back.
//   OPENAI_API_KEY=... npx tsx examples/openai_responses_vm_run.ts
import OpenAI from "openai";
import { Pyro } from "pyro-mcp";
import { openaiTools, runFunctionCalls } from "pyro-mcp/openai";

/** The tool loop: call the model until it answers without asking for a tool. */
export async function runAgent(client: OpenAI, pyro: Pyro, prompt: string, model = "gpt-4.1-mini"): Promise<string> {
  const tools = openaiTools({ profile: "vm-run" });
  const input: OpenAI.Responses.ResponseInput = [{ role: "user", content: prompt }];
  for (let turn = 0; turn < 8; turn++) {
    const response = await client.responses.create({ model, input, tools });
    const outputs = await runFunctionCalls(pyro, response.output, { profile: "vm-run" });
    if (outputs.length === 0) return response.output_text;
    input.push(...(response.output as OpenAI.Responses.ResponseInputItem[]), ...outputs);
  }
  throw new Error("the model kept calling tools");
}

if (import.meta.url === `file://${process.argv[1]}`) {
  if (!process.env.OPENAI_API_KEY) {
    console.log("set OPENAI_API_KEY to run this example against the OpenAI API");
  } else {
    console.log(await runAgent(new OpenAI(), new Pyro(), "Which Linux kernel and git version does a debian:12 microVM have? Use vm_run."));
  }
}
