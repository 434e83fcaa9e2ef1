/**
 * RAG documents through the KV store (issue 26): a pod that computes a document's own KV writes its
 * whole blocks to the store (the entry a prompt starting with that document writes), and another
 * pod of the fleet then joins the document from there — only its last partial block computed —
 * with the answer it would have given computing everything. Real llama.cpp on a tiny synthetic
 * GGUF, a real kvstore pod.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { listen, postJson, startPod, type Running, type RunningPod } from "../../testing/engine.ts";
import { eventually } from "../../testing/eventually.ts";
import { createKvStorePod, type KvStorePod } from "../kvstore-pod.ts";

const MODEL = "synthetic://tiny";
let store: KvStorePod;
let storeHttp: Running;
let joining: RunningPod;

before(async () => {
  store = await createKvStorePod({ blockTokens: 16, codec: "none", tenantSalt: "t-docs", tiers: [], kvTransport: "auto", kvPort: 0 });
  storeHttp = await listen(store.app);
  // The reference: the same join, each document computed alone on the pod itself (no store).
  joining = await startPod({ model: MODEL, parallel: 2, kvUnified: true, ragRecompute: 0 });
});
after(async () => {
  await joining?.[Symbol.asyncDispose]();
  await storeHttp?.[Symbol.asyncDispose]();
  await store?.[Symbol.asyncDispose]();
});

const words = (tag: string, n: number): string => Array.from({ length: n }, (_, i) => `${tag}${i % 17}`).join(" ");
const F = `document F: ${words("f", 50)}`;
const G = `document G: ${words("g", 40)}`;

async function outcomes(url: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^llmfleet_rag_documents_total\{[^}]*outcome="(\w+)"[^}]*\} (\S+)$/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

async function answer(url: string, documents: string[]): Promise<string> {
  const res = await postJson(`${url}/v1/completions`, { prompt: "which document?", documents, max_tokens: 8, temperature: 0 });
  assert.equal(res.status, 200, JSON.stringify(res.json));
  return (res.json.choices as { text: string }[])[0]!.text;
}

test("a document one pod computed is joined by another from the KV store, with the same answer", async () => {
  await using a = await startPod({ model: MODEL, parallel: 2, kvUnified: true, ragRecompute: 0, kvStore: storeHttp.url });
  await using b = await startPod({ model: MODEL, parallel: 2, kvUnified: true, ragRecompute: 0, kvStore: storeHttp.url });
  const warmed = await postJson(`${a.url}/v1/contexts`, { documents: [F, G] });
  assert.equal(warmed.status, 200, JSON.stringify(warmed.json));
  // A's write-backs of both documents' whole blocks land in the store.
  await eventually(async () => {
    const text = await (await fetch(`${a.url}/metrics`)).text();
    assert.match(text, /llmfleet_kv_store_writes_total\{[^}]*outcome="stored"[^}]*\} 2/);
  });
  const got = await answer(b.url, [G, F]);
  assert.deepEqual(await outcomes(b.url), { stored: 2 }, "B computed neither document whole: both came from the store");
  assert.equal(got, await answer(joining.url, [G, F]), "the answer of a pod that computed both documents alone itself");
  assert.deepEqual(await outcomes(joining.url), { computed: 2 });
  // The same documents again: B's own document cache now.
  await answer(b.url, [F, G]);
  assert.deepEqual(await outcomes(b.url), { stored: 2, cached: 2 });
});
