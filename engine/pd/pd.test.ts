/**
 * Standalone P/D: router + prefill + decode on a tiny synthetic GGUF (real llama.cpp).
 * The prefill pod has 1 sequence and flash attention on; the decode pod has 3 sequences and
 * flash attention off, so the KV state must be normalised in transit (stream count, V layout).
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createEngineMetrics } from "../metrics/engine-metrics.ts";
import { createRouterApp } from "../router/router-app.ts";
import { completionText, listen, postJson, sseEvents, startPod, type Running, type RunningPod } from "../../testing/engine.ts";

const MODEL = "synthetic://tiny";
let aggregated: RunningPod;
let prefill: RunningPod;
let decode: RunningPod;
let router: Running;
let brokenRouter: Running;

before(async () => {
  aggregated = await startPod({ model: MODEL, parallel: 2 });
  decode = await startPod({ model: MODEL, role: "decode", parallel: 3 });
  prefill = await startPod({ model: MODEL, role: "prefill", parallel: 1, flashAttention: true });
  router = await listen(createRouterApp({ prefill: [prefill.url], decode: [decode.url], metrics: createEngineMetrics("router") }));
  // a decode pod that is gone: nothing listens on port 9 of loopback
  brokenRouter = await listen(createRouterApp({ prefill: [prefill.url], decode: ["http://127.0.0.1:9"], metrics: createEngineMetrics("router") }));
});
after(async () => {
  for (const r of [brokenRouter, router, prefill, decode, aggregated]) await r[Symbol.asyncDispose]();
});

const prompts = ["hello world", "the capital of France is", "a b c d e f g h i j k l m n o p q r s t u v w x y z"];

test("greedy output through router+prefill+decode equals the aggregated output", async () => {
  for (const prompt of prompts) {
    const body = { prompt, max_tokens: 24 };
    assert.equal(await completionText(router.url, body), await completionText(aggregated.url, body), prompt);
  }
});

test("streaming through the router carries the same text and the router records TTFT", async () => {
  const body = { prompt: prompts[1], max_tokens: 10, temperature: 0, stream: true };
  const res = await fetch(`${router.url}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const events = await sseEvents(res);
  assert.equal(events.at(-1), "[DONE]");
  const text = events
    .slice(0, -1)
    .map((e) => (JSON.parse(e) as { choices: { text: string }[] }).choices[0]!.text)
    .join("");
  assert.equal(text, await completionText(aggregated.url, { prompt: prompts[1], max_tokens: 10 }));
  const metrics = await (await fetch(`${router.url}/metrics`)).text();
  assert.match(metrics, /llmfleet_ttft_seconds_count\{role="router"\} [1-9]/);
});

test("validation errors from the prefill pod reach the client unchanged", async () => {
  const r = await postJson(`${router.url}/v1/completions`, { model: "nope", prompt: "x" });
  assert.equal(r.status, 404);
  const bad = await fetch(`${router.url}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: "{" });
  assert.equal(bad.status, 400);
});

test("a dead decode pod fails the request with a clear error instead of hanging", async () => {
  const r = await postJson(`${brokenRouter.url}/v1/completions`, { prompt: "hello", max_tokens: 4 });
  assert.equal(r.status, 502);
  assert.match((r.json.error as { message: string }).message, /hand-off to http:\/\/127\.0\.0\.1:9/);
});
