/**
 * Model-dependent tests on the real default model (Gemma 3 270M Q4_K_M, fetched once into the
 * cache by the same code as `npm run model:fetch`). Gemma 3 270M is a base model: plain
 * "The capital of France is" continues " the capital of the country of France...", so the
 * Paris checks use prompts a base model completes with the fact.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createEngineMetrics } from "./metrics/engine-metrics.ts";
import { ensureDefaultModel } from "./model/fetch.ts";
import { createRouterApp } from "./router/router-app.ts";
import { NativeRuntime } from "./runtime/native-runtime.ts";
import { completionText, listen, sseEvents, startPod, type Running, type RunningPod } from "../testing/engine.ts";

let aggregated: RunningPod;
let prefill: RunningPod;
let decode: RunningPod;
let router: Running;
let aggregatedRouter: Running;

before(async () => {
  const model = await ensureDefaultModel();
  aggregated = await startPod({ model, parallel: 2 });
  prefill = await startPod({ model, role: "prefill", parallel: 1 });
  decode = await startPod({ model, role: "decode", parallel: 2 });
  router = await listen(createRouterApp({ prefill: [prefill.url], decode: [decode.url], metrics: createEngineMetrics("router"), policy: "prefix-aware" }));
  aggregatedRouter = await listen(createRouterApp({ prefill: [], decode: [], aggregated: ["http://127.0.0.1:9", aggregated.url], metrics: createEngineMetrics("router") }));
});
after(async () => {
  for (const r of [router, aggregatedRouter, prefill, decode, aggregated]) await r[Symbol.asyncDispose]();
});

test("pods started without a backend run the default one, native", () => {
  for (const pod of [aggregated, prefill, decode]) assert.ok(pod.pod.service.runtime instanceof NativeRuntime);
});

test("the model knows Paris", async () => {
  assert.match(await completionText(aggregated.url, { prompt: "The capital of France is the city of", max_tokens: 4 }), /^ Paris/);
  assert.match(await completionText(aggregated.url, { prompt: "Q: What is the capital of France?\nA:", max_tokens: 8 }), /Paris/);
});

test("aggregated and disaggregated greedy outputs are identical", async () => {
  for (const prompt of ["The capital of Germany is Berlin. The capital of France is", "Once upon a time, in a small village,"]) {
    const body = { prompt, max_tokens: 32 };
    assert.equal(await completionText(router.url, body), await completionText(aggregated.url, body), prompt);
  }
});

test("a router over aggregated pods relays requests, skipping a pod that does not answer", async () => {
  const body = { prompt: "The capital of France is the city of", max_tokens: 8 };
  for (let i = 0; i < 2; i++) assert.equal(await completionText(aggregatedRouter.url, body), await completionText(aggregated.url, body));
  const bad = await fetch(`${aggregatedRouter.url}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ prompt: "x", max_tokens: -1 }) });
  assert.equal(bad.status, 400, "a 400 from the pod reaches the client as it is");
  assert.equal(((await bad.json()) as { error: { type: string } }).error.type, "invalid_request_error");
});

test("chat streams through the router with the GGUF's chat template", async () => {
  const res = await fetch(`${router.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ messages: [{ role: "user", content: "Say hello." }], max_tokens: 6, temperature: 0, stream: true }),
  });
  const events = await sseEvents(res);
  assert.equal(events.at(-1), "[DONE]");
  assert.ok(events.length >= 3);
});
