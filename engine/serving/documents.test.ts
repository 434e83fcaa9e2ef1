/**
 * RAG documents (issue 26's first slice): a request's `documents` go before its prompt, each
 * tokenized alone; requests sharing their first document share a prefix, which the engine reuses;
 * the P/D path lays them out the same on both sides. Real llama.cpp on a tiny synthetic GGUF.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createEngineMetrics } from "../metrics/engine-metrics.ts";
import { createRouterApp } from "../router/router-app.ts";
import { listen, postJson, startPod, type Running, type RunningPod } from "../../testing/engine.ts";
import { DOCUMENT_SEPARATOR } from "./documents.ts";

const MODEL = "synthetic://tiny";
let aggregated: RunningPod;
let prefill: RunningPod;
let decode: RunningPod;
let router: Running;

before(async () => {
  aggregated = await startPod({ model: MODEL, parallel: 1 });
  prefill = await startPod({ model: MODEL, role: "prefill", parallel: 1 });
  decode = await startPod({ model: MODEL, role: "decode", parallel: 1 });
  router = await listen(createRouterApp({ prefill: [prefill.url], decode: [decode.url], metrics: createEngineMetrics("router") }));
});
after(async () => {
  for (const r of [router, decode, prefill, aggregated]) await r?.[Symbol.asyncDispose]();
});

const words = (tag: string, n: number): string => Array.from({ length: n }, (_, i) => `${tag}${i}`).join(" ");
const A = `document A: ${words("a", 60)}`;
const B = `document B: ${words("b", 30)}`;
const C = `document C: ${words("c", 30)}`;

type Usage = { prompt_tokens: number; prompt_tokens_details: { cached_tokens: number } };
async function complete(url: string, body: object): Promise<{ text: string; usage: Usage }> {
  const res = await postJson(`${url}/v1/completions`, { max_tokens: 8, temperature: 0, ...body });
  assert.equal(res.status, 200, JSON.stringify(res.json));
  return { text: (res.json.choices as { text: string }[])[0]!.text, usage: res.json.usage as Usage };
}

test("documents go before the prompt, each tokenized alone", async () => {
  const { runtime } = aggregated.pod.service;
  const lead = runtime.tokenize("").length;
  const alone = (s: string): number => runtime.tokenize(s).length - lead;
  const { usage } = await complete(aggregated.url, { prompt: "the question", documents: [A, { text: B }] });
  assert.equal(usage.prompt_tokens, lead + alone(`${A}${DOCUMENT_SEPARATOR}`) + alone(`${B}${DOCUMENT_SEPARATOR}`) + alone("the question"));
});

test("a request that shares the first document reuses its KV", async () => {
  const { runtime } = aggregated.pod.service;
  const first = runtime.tokenize(`${A}${DOCUMENT_SEPARATOR}`).length;
  await complete(aggregated.url, { prompt: "question one", documents: [A, B] });
  const { usage } = await complete(aggregated.url, { prompt: "question two", documents: [A, C] });
  assert.ok(usage.prompt_tokens_details.cached_tokens >= first, `cached_tokens ${usage.prompt_tokens_details.cached_tokens}, document A is ${first} tokens with the BOS`);
});

test("through the router, prefill and decode lay the documents out alike: the answer equals the aggregated one", async () => {
  for (const documents of [[A, B], [C, A, B]]) {
    const body = { prompt: "what do they say?", documents };
    assert.equal((await complete(router.url, body)).text, (await complete(aggregated.url, body)).text);
  }
});

test("a bad document is a 400 naming it, at the router and at the pod", async () => {
  for (const url of [router.url, aggregated.url]) {
    const res = await postJson(`${url}/v1/completions`, { prompt: "q", documents: ["fine", { text: "" }] });
    assert.equal(res.status, 400);
    assert.equal((res.json.error as { param: string }).param, "documents[1]");
  }
});
