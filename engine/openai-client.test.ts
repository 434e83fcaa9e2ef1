/**
 * Standalone compatibility test: the official `openai` npm client drives a fleet (router →
 * prefill → decode, tiny synthetic GGUF, real llama.cpp) through every feature of docs/api.md:
 * streamed usage, logprobs, a JSON-schema answer that parses and validates, a tool call round
 * trip (required and named; auto by its mechanics), SDK message shapes, and a 400 naming each
 * invalid or unsupported parameter. The real model's version is openai-client.model.test.ts.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { createEngineMetrics } from "./metrics/engine-metrics.ts";
import { createRouterApp } from "./router/router-app.ts";
import { listen, startPod, type Running, type RunningPod } from "../testing/engine.ts";

const MODEL = "synthetic://tiny";
let prefill: RunningPod;
let decode: RunningPod;
let router: Running;
let client: OpenAI;

before(async () => {
  decode = await startPod({ model: MODEL, role: "decode", parallel: 2, ctxSize: 1024 });
  prefill = await startPod({ model: MODEL, role: "prefill", parallel: 1, ctxSize: 1024 });
  router = await listen(createRouterApp({ prefill: [prefill.url], decode: [decode.url], metrics: createEngineMetrics("router") }));
  client = new OpenAI({ baseURL: `${router.url}/v1`, apiKey: "unused", maxRetries: 0 });
});
after(async () => {
  for (const r of [router, prefill, decode]) await r?.[Symbol.asyncDispose]();
});

const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [
  { role: "developer", content: "Answer briefly." },
  { role: "user", content: [{ type: "text", text: "What is the weather in Paris?" }], name: "ann" },
];

test("streamed usage arrives (stream_options.include_usage), for chat and completions", async () => {
  const stream = await client.chat.completions.create({ model: "default", messages, max_tokens: 5, temperature: 0, stream: true, stream_options: { include_usage: true } });
  let usage: OpenAI.CompletionUsage | undefined | null;
  let text = "";
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta.content ?? "";
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(usage?.completion_tokens, 5);
  assert.ok((usage?.prompt_tokens ?? 0) > 0);
  assert.equal(typeof text, "string");
  // Greedy: sampled at temperature 1 the tiny model ends "hello" early about 1 time in 100 (an end
  // token drawn; aggregated pods alike), and the 3 below failed a clean-clone CI run.
  const completions = await client.completions.create({ model: "default", prompt: "hello", max_tokens: 3, temperature: 0, stream: true, stream_options: { include_usage: true } });
  let completionUsage: OpenAI.CompletionUsage | undefined;
  for await (const chunk of completions) if (chunk.usage) completionUsage = chunk.usage;
  assert.equal(completionUsage?.completion_tokens, 3);
});

test("logprobs come back (chat top_logprobs; completions logprobs)", async () => {
  const res = await client.chat.completions.create({ model: "default", messages, max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 2 });
  const content = res.choices[0]!.logprobs!.content!;
  assert.equal(content.length, res.usage!.completion_tokens);
  assert.ok(content.every((t) => t.logprob <= 0 && t.top_logprobs.length === 2));
  const c = await client.completions.create({ model: "default", prompt: "hello", max_tokens: 3, temperature: 0, logprobs: 1 });
  assert.equal(c.choices[0]!.logprobs!.token_logprobs!.length, 3);
});

test("a JSON-schema response parses and validates", async () => {
  const schema = {
    type: "object",
    properties: { city: { enum: ["Paris", "Rome"] }, sunny: { type: "boolean" } },
    required: ["city", "sunny"],
    additionalProperties: false,
  };
  const res = await client.chat.completions.create({
    model: "default",
    messages,
    max_tokens: 100,
    temperature: 0,
    response_format: { type: "json_schema", json_schema: { name: "weather", schema, strict: true } },
  });
  const value = JSON.parse(res.choices[0]!.message.content!) as { city: string; sunny: unknown };
  assert.deepEqual(Object.keys(value), ["city", "sunny"]);
  assert.ok(["Paris", "Rome"].includes(value.city));
  assert.equal(typeof value.sunny, "boolean");
});

const tools: OpenAI.Chat.ChatCompletionTool[] = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "Current weather of a city",
      parameters: { type: "object", properties: { city: { enum: ["Paris", "Rome"] } }, required: ["city"] },
    },
  },
];

test("a tool call round-trips (required, named, streamed); auto answers", async () => {
  const first = await client.chat.completions.create({ model: "default", messages, tools, tool_choice: "required", max_tokens: 200, temperature: 0 });
  assert.equal(first.choices[0]!.finish_reason, "tool_calls");
  const call = first.choices[0]!.message.tool_calls![0]! as OpenAI.Chat.ChatCompletionMessageFunctionToolCall;
  assert.equal(call.function.name, "get_weather");
  assert.ok(["Paris", "Rome"].includes((JSON.parse(call.function.arguments) as { city: string }).city));
  const named = await client.chat.completions.create({
    model: "default",
    messages,
    tools,
    tool_choice: { type: "function", function: { name: "get_weather" } },
    max_tokens: 200,
    temperature: 0,
    stream: true,
  });
  const streamed: string[] = [];
  for await (const chunk of named) for (const c of chunk.choices[0]?.delta.tool_calls ?? []) streamed.push(c.function?.name ?? "");
  assert.deepEqual(streamed.slice(0, 1), ["get_weather"]);
  const next = await client.chat.completions.create({
    model: "default",
    messages: [...messages, first.choices[0]!.message, { role: "tool", tool_call_id: call.id, content: '{"sunny": true}' }],
    tools,
    tool_choice: "auto",
    max_tokens: 5,
    temperature: 0,
  });
  assert.ok(["stop", "length", "tool_calls"].includes(next.choices[0]!.finish_reason));
});

test("every invalid or unsupported parameter gets a 400 naming it", async () => {
  const rows: [string, Record<string, unknown>][] = [
    ["presence_penalty", { presence_penalty: 5 }],
    ["logprobs", { logprobs: "x" }],
    ["tools", { tools: 5 }],
    ["response_format.type", { response_format: { type: "nope" } }],
    ["n", { n: 2 }],
    ["audio", { audio: { voice: "alloy", format: "wav" } }],
    ["frobnicate", { frobnicate: 1 }],
    ["response_format.json_schema.schema.pattern", { response_format: { type: "json_schema", json_schema: { name: "s", schema: { type: "string", pattern: "x" } } } }],
  ];
  for (const [param, extra] of rows) {
    await assert.rejects(
      client.chat.completions.create({ model: "default", messages, max_tokens: 2, ...extra } as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming),
      (err: unknown) => {
        assert.ok(err instanceof OpenAI.BadRequestError, `${param}: ${String(err)}`);
        assert.equal(err.param, param);
        return true;
      },
    );
  }
  await assert.rejects(client.completions.create({ model: "default", prompt: "x", suffix: "y" }), (err: unknown) => err instanceof OpenAI.BadRequestError && err.param === "suffix");
  await assert.rejects(client.chat.completions.create({ model: "nope", messages }), (err: unknown) => err instanceof OpenAI.NotFoundError);
});
