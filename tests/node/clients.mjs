// Node clients of memproxy's Responses API, as apps use them: openai-node's
// responses.create (plain and streamed) and the Vercel AI SDK's default OpenAI provider
// (openai("model") speaks the Responses API). Prints one JSON object with what each got.
// Usage: node clients.mjs <baseURL ending in /v1> <model> <user> <question>
import OpenAI from "openai";
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, streamText } from "ai";

const [baseURL, model, user, question] = process.argv.slice(2);
const headers = { "x-user-id": user };
const client = new OpenAI({ baseURL, apiKey: "sk-node", maxRetries: 0, defaultHeaders: headers });

const { data: created, response } = await client.responses
  .create({ model, input: question })
  .withResponse();

const streamed = await client.responses.create({ model, input: question, stream: true });
const types = [];
let deltas = "";
for await (const event of streamed) {
  types.push(event.type);
  if (event.type === "response.output_text.delta") deltas += event.delta;
}

const provider = createOpenAI({ baseURL, apiKey: "sk-node", headers });
const generated = await generateText({ model: provider(model), prompt: question, maxRetries: 0 });
const live = streamText({ model: provider(model), prompt: question, maxRetries: 0 });
let aiStreamed = "";
for await (const piece of live.textStream) aiStreamed += piece;

console.log(
  JSON.stringify({
    openaiCreate: created.output_text,
    openaiRecalled: response.headers.get("x-memory-recalled"),
    openaiStream: deltas,
    openaiStreamTypes: [types[0], types[types.length - 1]],
    aiGenerate: generated.text,
    aiStream: aiStreamed,
  }),
);
