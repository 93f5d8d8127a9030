// The OpenAI Responses API with pyro's workspace tools, for work that needs
// several commands in one place: the model creates a workspace from a host
// directory, runs commands in it, and deletes it when done.
//   OPENAI_API_KEY=... npx tsx examples/openai_responses_workspace.ts /path/to/project
import OpenAI from "openai";
import { Pyro } from "pyro-mcp";
import { openaiTools, runFunctionCalls } from "pyro-mcp/openai";

const TOOLS = ["vm_run", "workspace_create", "workspace_sync_push", "workspace_exec", "workspace_logs", "workspace_delete"];

export async function runWorkspaceAgent(client: OpenAI, pyro: Pyro, prompt: string, model = "gpt-4.1-mini"): Promise<string> {
  const tools = openaiTools({ tools: TOOLS });
  const input: OpenAI.Responses.ResponseInput = [{ role: "user", content: prompt }];
  for (let turn = 0; turn < 16; turn++) {
    const response = await client.responses.create({ model, input, tools });
    const outputs = await runFunctionCalls(pyro, response.output, { tools: TOOLS });
    if (outputs.length === 0) return response.output_text;
    input.push(...(response.output as OpenAI.Responses.ResponseInputItem[]), ...outputs);
  }
  throw new Error("the model kept calling tools");
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const project = process.argv[2] ?? process.cwd();
  if (!process.env.OPENAI_API_KEY) {
    console.log("set OPENAI_API_KEY to run this example against the OpenAI API");
  } else {
    const prompt =
      `Create a debian:12 workspace seeded from ${project}, list its files, ` +
      "count the lines of every text file, then delete the workspace and summarise.";
    console.log(await runWorkspaceAgent(new OpenAI(), new Pyro(), prompt));
  }
}
