/**
 * Model-dependent HTTP tests of pods started with --backend native (engine/native on CPU, built on
 * first use): the OpenAI endpoints, and the P/D path (router + native prefill + native decode)
 * against an aggregated native pod. The prompts give one greedy output whatever the KV cache
 * layout (see runtime/native-runtime.test.ts): the decode pod's sequence holds its cells
 * elsewhere than the aggregated pod's.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { parseEngineOptions, type EngineOptions } from "./cli/options.ts";
import { createEngineMetrics } from "./metrics/engine-metrics.ts";
import { ensureDefaultModel } from "./model/fetch.ts";
import { createRouterApp } from "./router/router-app.ts";
import { NativeRuntime } from "./runtime/native-runtime.ts";
import { completionText, listen, postJson, startPod, type Running, type RunningPod } from "../testing/engine.ts";

let aggregated: RunningPod;
let prefill: RunningPod;
let decode: RunningPod;
let router: Running;

/** Pod options as the engine's command line gives them. */
function native(...args: string[]): Pick<EngineOptions, "backend" | "gpuLayers" | "decodeLookahead"> {
  const { backend, gpuLayers, decodeLookahead } = parseEngineOptions(["--backend", "native", ...args]) as EngineOptions;
  return { backend, gpuLayers, decodeLookahead };
}

before(async () => {
  const model = await ensureDefaultModel();
  aggregated = await startPod({ model, parallel: 2, ...native("--decode-lookahead", "4") });
  prefill = await startPod({ model, role: "prefill", parallel: 1, ...native() });
  decode = await startPod({ model, role: "decode", parallel: 2, ...native() });
  router = await listen(createRouterApp({ prefill: [prefill.url], decode: [decode.url], metrics: createEngineMetrics("router"), policy: "prefix-aware" }));
});
after(async () => {
  for (const r of [router, prefill, decode, aggregated]) await r?.[Symbol.asyncDispose]();
});

test("--backend native pods run the native runtime with the flags given", () => {
  for (const pod of [aggregated, prefill, decode]) assert.ok(pod.pod.service.runtime instanceof NativeRuntime);
  assert.equal((aggregated.pod.service.runtime as NativeRuntime).lookahead, 4);
  assert.equal((decode.pod.service.runtime as NativeRuntime).lookahead, 1);
  assert.equal((aggregated.pod.service.runtime as NativeRuntime).gpu, false);
});

test("a native pod answers /v1/completions in OpenAI's shape", async () => {
  const { status, json } = await postJson(`${aggregated.url}/v1/completions`, {
    prompt: "The capital of France is the city of",
    max_tokens: 4,
    temperature: 0,
  });
  assert.equal(status, 200);
  assert.equal(json.object, "text_completion");
  const choice = (json.choices as { text: string; finish_reason: string; index: number }[])[0]!;
  assert.match(choice.text, /^ Paris/);
  assert.equal(choice.finish_reason, "length");
  assert.deepEqual(json.usage, { prompt_tokens: 9, completion_tokens: 4, total_tokens: 13, prompt_tokens_details: { cached_tokens: 0 } });
});

test("a native pod answers /v1/chat/completions with the GGUF's chat template", async () => {
  const body = { messages: [{ role: "user", content: "What is the capital of France? Answer in one word." }], max_tokens: 8, temperature: 0 };
  const { status, json } = await postJson(`${aggregated.url}/v1/chat/completions`, body);
  assert.equal(status, 200);
  assert.equal(json.object, "chat.completion");
  const { message } = (json.choices as { message: { role: string; content: string } }[])[0]!;
  assert.equal(message.role, "assistant");
  assert.ok(message.content.length > 0);
  assert.ok((json.usage as { prompt_tokens: number }).prompt_tokens > 10, "the chat template wraps the message");
});

test("router + native prefill + native decode give the aggregated native pod's greedy text", async () => {
  const prompts = ["The capital of Germany is Berlin. The capital of Italy is Rome. The capital of Spain is", "January, February, March, April,"];
  for (const prompt of prompts) {
    const body = { prompt, max_tokens: 24 };
    assert.equal(await completionText(router.url, body), await completionText(aggregated.url, body), prompt);
  }
});

test("a held prompt plus a short question reaches its first token in one native step, with the P/D path's greedy text", async () => {
  const context = "The capital of Germany is Berlin. The capital of Italy is Rome. The capital of Portugal is Lisbon.";
  const question = " The capital of Spain is";
  await postJson(`${aggregated.url}/v1/completions`, { prompt: context, max_tokens: 1, temperature: 0 });
  const stats = (aggregated.pod.service.runtime as NativeRuntime).scheduler.stats;
  const before = stats.calls;
  const { json } = await postJson(`${aggregated.url}/v1/completions`, { prompt: context + question, max_tokens: 1, temperature: 0 });
  // The question's tokens and the prompt's last one are evaluated in the step that samples: one
  // native call, where evaluating the question first and then the last token took two.
  assert.equal(stats.calls - before, 1);
  const cached = (json.usage as { prompt_tokens_details: { cached_tokens: number } }).prompt_tokens_details.cached_tokens;
  assert.ok(cached >= 15, `the held context was reused (${cached} cached tokens)`);
  const body = { prompt: context + question, max_tokens: 12 };
  assert.equal(await completionText(aggregated.url, body), await completionText(router.url, body));
});
