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
let joining: RunningPod;
let computing: RunningPod;
let half: RunningPod;

before(async () => {
  aggregated = await startPod({ model: MODEL, parallel: 1 });
  prefill = await startPod({ model: MODEL, role: "prefill", parallel: 1 });
  decode = await startPod({ model: MODEL, role: "decode", parallel: 1 });
  router = await listen(createRouterApp({ prefill: [prefill.url], decode: [decode.url], metrics: createEngineMetrics("router") }));
  // Joins every document (nothing recomputed but the prompt), and the same pod that joins none.
  joining = await startPod({ model: MODEL, parallel: 2, kvUnified: true, ragRecompute: 0 });
  computing = await startPod({ model: MODEL, parallel: 2, kvUnified: true, ragCacheBytes: 0 });
  half = await startPod({ model: MODEL, parallel: 2, kvUnified: true, ragRecompute: 0.5 });
});
after(async () => {
  for (const r of [router, decode, prefill, aggregated, joining, computing, half]) await r?.[Symbol.asyncDispose]();
});

async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(text)?.[1] ?? NaN);
}

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

test("a document computed alone and joined at position 1 is exactly its prefill: the same answer as computing it in place", async () => {
  const body = { prompt: "and so", documents: [A], max_tokens: 12 };
  assert.equal((await complete(joining.url, body)).text, (await complete(computing.url, body)).text);
  assert.ok((await metric(joining.url, "llmfleet_rag_joined_tokens_total")) > 0, "the document was joined");
  assert.equal(await metric(computing.url, "llmfleet_rag_joined_tokens_total"), 0);
});

test("documents in a new order are joined from their own KV, moved to their new positions", async () => {
  const { runtime } = joining.pod.service;
  const lead = runtime.tokenize("").length;
  const alone = (d: string): number => runtime.tokenize(`${d}${DOCUMENT_SEPARATOR}`).length - lead;
  await complete(joining.url, { prompt: "first", documents: [B, C] });
  const before = await metric(joining.url, "llmfleet_rag_joined_tokens_total");
  // A series is absent until its first count.
  const outcome = async (o: string): Promise<number> => (await metric(joining.url, `llmfleet_rag_documents_total\\{[^}]*outcome="${o}"[^}]*\\}`)) || 0;
  const [cached, computed] = [await outcome("cached"), await outcome("computed")];
  const { usage, text } = await complete(joining.url, { prompt: "second", documents: [C, B] });
  const joined = (await metric(joining.url, "llmfleet_rag_joined_tokens_total")) - before;
  assert.equal(joined, alone(C) + alone(B), "both documents came from their own KV");
  assert.equal((await outcome("cached")) - cached, 2, "both from the document cache (llmfleet_rag_documents_total)");
  assert.equal((await outcome("computed")) - computed, 0);
  assert.ok((await metric(joining.url, "llmfleet_rag_cache_bytes")) > 0);
  assert.ok(usage.prompt_tokens_details.cached_tokens >= joined, `cached_tokens ${usage.prompt_tokens_details.cached_tokens} counts the joined tokens`);
  assert.ok(text.length > 0);
  // The KV holds exactly the sequence's tokens afterwards: nothing of the documents' scratch work is left.
  assert.equal(await joining.pod.service.runtime.kvStrayTokens?.(), 0);
});

test("with half recomputed, documents are joined up to the last half of the document tokens, the one cut there in part", async () => {
  const { runtime } = half.pod.service;
  const lead = runtime.tokenize("").length;
  const alone = (d: string): number => runtime.tokenize(`${d}${DOCUMENT_SEPARATOR}`).length - lead;
  const docs = [C, A, B];
  const docTokens = docs.reduce((n, d) => n + alone(d), 0);
  const tailStart = lead + docTokens - Math.ceil(0.5 * docTokens);
  await complete(half.url, { prompt: "warm", documents: [A, B, C] });
  const before = await metric(half.url, "llmfleet_rag_joined_tokens_total");
  const { text } = await complete(half.url, { prompt: "cut", documents: docs });
  assert.equal((await metric(half.url, "llmfleet_rag_joined_tokens_total")) - before, tailStart - lead, "joined up to the tail, C whole and A in part");
  assert.ok(tailStart - lead > alone(C), "the cut falls inside the second document");
  assert.ok(text.length > 0);
  assert.equal(await half.pod.service.runtime.kvStrayTokens?.(), 0);
});

test("requests joining new documents at once share the scratch sequence one at a time: both answer, no KV left astray", async () => {
  const fresh = (tag: string): string => `fresh ${tag}: ${words(tag, 40)}`;
  const before = await metric(joining.url, "llmfleet_rag_joined_tokens_total");
  const [x, y] = await Promise.all([
    complete(joining.url, { prompt: "one", documents: [fresh("p"), fresh("q")] }),
    complete(joining.url, { prompt: "two", documents: [fresh("r"), fresh("s"), fresh("t")] }),
  ]);
  assert.ok(x.text.length > 0 && y.text.length > 0);
  const joined = (await metric(joining.url, "llmfleet_rag_joined_tokens_total")) - before;
  const cached = x.usage.prompt_tokens_details.cached_tokens + y.usage.prompt_tokens_details.cached_tokens;
  // cached_tokens = the tokens joined + the prefix each request reused (at least the BOS).
  assert.ok(joined > 0 && joined < cached && cached - joined <= 8, `joined ${joined}, cached ${cached}`);
  assert.equal(await joining.pod.service.runtime.kvStrayTokens?.(), 0);
});

test("POST /v1/contexts {documents} keeps each document's own KV: a request then joins them without computing any", async () => {
  const { runtime, rag } = joining.pod.service;
  const lead = runtime.tokenize("").length;
  const alone = (d: string): number => runtime.tokenize(`${d}${DOCUMENT_SEPARATOR}`).length - lead;
  const D = `pre-warmed D: ${words("d", 30)}`;
  const E = `pre-warmed E: ${words("e", 20)}`;
  const first = await postJson(`${joining.url}/v1/contexts`, { documents: [D, { text: E }] });
  assert.equal(first.status, 200, JSON.stringify(first.json));
  assert.deepEqual(first.json.documents, [
    { tokens: alone(D), cached: false },
    { tokens: alone(E), cached: false },
  ]);
  assert.equal(first.json.computed_tokens, alone(D) + alone(E) + 2 * lead);
  const again = await postJson(`${joining.url}/v1/contexts`, { documents: [D] });
  assert.deepEqual(again.json.documents, [{ tokens: alone(D), cached: true }]);
  assert.equal(again.json.computed_tokens, 0);
  const misses = rag!.chunks.misses;
  const before = await metric(joining.url, "llmfleet_rag_joined_tokens_total");
  await complete(joining.url, { prompt: "pre-warmed", documents: [E, D] });
  assert.equal(rag!.chunks.misses, misses, "no document was computed for the request");
  assert.equal((await metric(joining.url, "llmfleet_rag_joined_tokens_total")) - before, alone(D) + alone(E));
});

test("POST /v1/contexts {documents} on a pod that does not join them, or with a bad document, is a 400 naming why", async () => {
  const off = await postJson(`${computing.url}/v1/contexts`, { documents: [A] });
  assert.equal(off.status, 400);
  assert.match((off.json.error as { message: string }).message, /does not join documents/);
  const bad = await postJson(`${joining.url}/v1/contexts`, { documents: [A, ""] });
  assert.equal(bad.status, 400);
  assert.equal((bad.json.error as { param: string }).param, "documents[1]");
  const text = await postJson(`${joining.url}/v1/contexts`, { text: "no KV store here" });
  assert.equal(text.status, 400);
  assert.match((text.json.error as { message: string }).message, /no KV store/);
});
