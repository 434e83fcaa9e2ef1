/**
 * A hand-off in parts (--kv-part-tokens): the prefill pod sends each part of the prompt's KV while
 * it computes the next, the decode pod joins the parts into one sequence (the unified KV shares
 * cells, no copy). Real llama.cpp on a tiny synthetic GGUF: greedy output equals the aggregated
 * output, the parts are really several, and a decode pod that cannot join parts gets the whole
 * state instead.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createEngineMetrics } from "../metrics/engine-metrics.ts";
import { createRouterApp } from "../router/router-app.ts";
import { completionText, listen, postJson, startPod, type Running, type RunningPod } from "../../testing/engine.ts";
import type { PrefillResponse } from "./handoff-routes.ts";

const MODEL = "synthetic://tiny";
let aggregated: RunningPod;
let decode: RunningPod;
let wholeDecode: RunningPod;
let prefill: RunningPod;
let router: Running;

before(async () => {
  aggregated = await startPod({ model: MODEL, parallel: 2 });
  decode = await startPod({ model: MODEL, role: "decode", parallel: 3, kvUnified: true });
  wholeDecode = await startPod({ model: MODEL, role: "decode", parallel: 2, kvUnified: false });
  prefill = await startPod({ model: MODEL, role: "prefill", parallel: 2, kvUnified: true, kvPartTokens: 8, kvTransport: "tcp" });
  router = await listen(createRouterApp({ prefill: [prefill.url], decode: [decode.url], metrics: createEngineMetrics("router") }));
});
after(async () => {
  for (const r of [router, prefill, wholeDecode, decode, aggregated]) await r?.[Symbol.asyncDispose]();
});

const words = (n: number, tag: string): string => Array.from({ length: n }, (_, i) => `${tag}${i}`).join(" ");

/** The prefill pod's answer for `prompt` handed to `decodeUrl`, then the decode pod's greedy text. */
async function handOff(decodeUrl: string, prompt: string, maxTokens = 16): Promise<{ prefilled: PrefillResponse; text: string; cached: number }> {
  const request = { prompt, max_tokens: maxTokens, temperature: 0 };
  const p = await postJson(`${prefill.url}/internal/prefill`, { request, kind: "completion", decodeUrl });
  assert.equal(p.status, 200, JSON.stringify(p.json));
  const prefilled = p.json as unknown as PrefillResponse;
  // A whole state may come with the first token, sampled on the prefill pod (serving/first-token.ts).
  const first = prefilled.firstToken === undefined ? {} : { firstToken: prefilled.firstToken };
  const g = await postJson(`${prefilled.decodeUrl}/internal/generate/${prefilled.handoffId}`, { request, kind: "completion", ...first });
  assert.equal(g.status, 200, JSON.stringify(g.json));
  const usage = g.json.usage as { prompt_tokens_details?: { cached_tokens: number } };
  return { prefilled, text: (g.json.choices as { text: string }[])[0]!.text, cached: usage.prompt_tokens_details?.cached_tokens ?? 0 };
}

test("a prompt's KV goes in parts, and the decode pod's greedy output equals the aggregated output", async () => {
  for (const [n, tag] of [
    [9, "a"], // two parts, the last one short
    [40, "b"],
    [63, "c"],
  ] as const) {
    const prompt = words(n, tag);
    const { prefilled, text } = await handOff(decode.url, prompt);
    assert.ok(prefilled.parts >= 2, `${n} words: ${prefilled.parts} parts`);
    assert.equal(prefilled.path, "tcp");
    assert.equal(text, await completionText(aggregated.url, { prompt, max_tokens: 16 }), prompt);
  }
  const debug = (await (await fetch(`${decode.url}/internal/kv-debug`)).json()) as { tcp: { staged: number } };
  assert.equal(debug.tcp.staged, 0, "every part was taken by its generate call");
});

test("through the router too; the prefill pod reports the hand-off's tail (what is left once the prompt is computed)", async () => {
  const prompt = words(50, "r");
  const body = { prompt, max_tokens: 12 };
  assert.equal(await completionText(router.url, body), await completionText(aggregated.url, body));
  const metrics = await (await fetch(`${prefill.url}/metrics`)).text();
  assert.match(metrics, /llmfleet_kv_handoff_seconds_count\{[^}]*stage="tail"[^}]*\} [1-9]/);
});

test("a repeated prompt reuses the prefill pod's KV part by part and reports it as cached tokens", async () => {
  const prompt = words(48, "again");
  const first = await handOff(decode.url, prompt);
  const again = await handOff(decode.url, `${prompt} more`);
  assert.ok(again.prefilled.parts >= 2);
  assert.ok(again.prefilled.prefixHitTokens > 20, `reused ${again.prefilled.prefixHitTokens} tokens`);
  assert.equal(again.cached, again.prefilled.prefixHitTokens);
  assert.equal(first.text, await completionText(aggregated.url, { prompt, max_tokens: 16 }));
  assert.equal(again.text, await completionText(aggregated.url, { prompt: `${prompt} more`, max_tokens: 16 }));
});

test("a decode pod that cannot join parts (no unified KV) says so and gets the whole state", async () => {
  const info = (await (await fetch(`${wholeDecode.url}/internal/kv-transport`)).json()) as { parts?: boolean };
  assert.equal(info.parts, undefined);
  const prompt = words(30, "w");
  const { prefilled, text } = await handOff(wholeDecode.url, prompt);
  assert.equal(prefilled.parts, 1);
  assert.equal(text, await completionText(aggregated.url, { prompt, max_tokens: 16 }));
});
