/**
 * KV reuse across pods through one kvstore (tiny synthetic GGUF, real llama.cpp): a prompt
 * prefilled on one pod is loaded on another with identical greedy output; the pre-warm API;
 * the prefill role; and the faults that must degrade to recompute (store down, corrupt entry,
 * slow store).
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import express from "express";
import { listen, postJson, startPod, type Running, type RunningPod, completionWithReuse } from "../../testing/engine.ts";
import { createKvStorePod, type KvStorePod } from "../kvstore-pod.ts";

const MODEL = "synthetic://tiny";
const BLOCK = 16;
let store: KvStorePod;
let storeHttp: Running;
let plain: RunningPod;

const doc = Array.from({ length: 60 }, (_, i) => `w${i % 23}`).join(" ");
const prompt = `${doc} question one`;

before(async () => {
  // Lossless, so "same greedy output" checks the transport and import exactly; the lossy codecs'
  // loadability is tested in kvcodec/codec.test.ts.
  store = await createKvStorePod({ blockTokens: BLOCK, codec: "lossless", tenantSalt: "t1", tiers: [] });
  storeHttp = await listen(store.app);
  plain = await startPod({ model: MODEL });
});
after(async () => {
  await plain?.[Symbol.asyncDispose]();
  await storeHttp?.[Symbol.asyncDispose]();
  await store?.[Symbol.asyncDispose]();
});

const complete = (url: string, p: string): Promise<{ text: string; cached: number }> => completionWithReuse(url, p);

const withStore = (url: string, extra: Record<string, unknown> = {}): Promise<RunningPod> => startPod({ model: MODEL, kvStore: url, ...extra });

test("a prompt prefilled on one pod is loaded on another, with the same greedy output", async () => {
  await using a = await withStore(storeHttp.url);
  await using b = await withStore(storeHttp.url, { flashAttention: true, parallel: 3 });
  const expected = await complete(plain.url, prompt);
  const first = await complete(a.url, prompt);
  assert.equal(first.text, expected.text);
  assert.equal(first.cached, 0);
  await a.pod.kvCache!.settled();
  assert.equal(store.store.tiers[0]!.stats().blocks, 1);
  const second = await complete(b.url, prompt);
  assert.equal(second.text, expected.text);
  assert.ok(second.cached >= BLOCK && second.cached % BLOCK === 0, `cached ${second.cached}`);
  const metrics = await (await fetch(`${b.url}/metrics`)).text();
  assert.match(metrics, /llmfleet_kv_store_loads_total\{[^}]*outcome="hit"[^}]*\} 1/);
});

test("POST /v1/contexts stores a context once; a question after it reuses it on another pod", async () => {
  await using a = await withStore(storeHttp.url);
  await using b = await withStore(storeHttp.url);
  const context = `${doc} ${doc} appendix`;
  const warm = await postJson(`${a.url}/v1/contexts`, { text: context });
  assert.equal(warm.status, 200, JSON.stringify(warm.json));
  const stored = warm.json.stored_tokens as number;
  assert.ok(stored >= 2 * BLOCK && stored % BLOCK === 0);
  // The context starts with `doc`, which an earlier prompt stored: those blocks may load through an alias.
  assert.equal(warm.json.computed_tokens, stored - (warm.json.reused_tokens as number));
  const again = await postJson(`${b.url}/v1/contexts`, { text: context });
  assert.equal(again.json.reused_tokens, stored);
  assert.equal(again.json.computed_tokens, 0);
  const q = `${context} and then?`;
  const answer = await complete(b.url, q);
  assert.ok(answer.cached >= stored, `cached ${answer.cached} < ${stored}`);
  assert.equal(answer.text, (await complete(plain.url, q)).text);
});

test("a prefill pod loads cached prefixes and reports them as prefix hits", async () => {
  await using decode = await startPod({ model: MODEL, role: "decode" });
  await using prefill = await startPod({ model: MODEL, role: "prefill", kvStore: storeHttp.url });
  const p = `${doc} prefill role`;
  await using warm = await withStore(storeHttp.url);
  await postJson(`${warm.url}/v1/contexts`, { text: p });
  const r = await postJson(`${prefill.url}/internal/prefill`, { request: { prompt: p, max_tokens: 4 }, kind: "completion", decodeUrl: decode.url });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  assert.ok((r.json.prefixHitTokens as number) >= BLOCK);
});

test("store down: the answer is recomputed, counted and logged", async () => {
  await using a = await withStore("http://127.0.0.1:9");
  assert.equal((await complete(a.url, prompt)).text, (await complete(plain.url, prompt)).text);
  const metrics = await (await fetch(`${a.url}/metrics`)).text();
  assert.match(metrics, /llmfleet_kv_store_loads_total\{[^}]*outcome="error"[^}]*\} 1/);
});

test("a corrupt entry fails its checksum and the prompt is recomputed", async () => {
  const p = `${doc} corrupt case`;
  await using a = await withStore(storeHttp.url);
  const key = (await postJson(`${a.url}/v1/contexts`, { text: p })).json.key as string;
  const ram = store.store.tiers[0]!;
  const good = (await ram.get(key))!;
  const bad = Buffer.from(good);
  bad[bad.length >> 1] = bad[bad.length >> 1]! ^ 0xff;
  await ram.put(key, bad);
  await using b = await withStore(storeHttp.url);
  const got = await complete(b.url, p);
  assert.equal(got.cached, 0);
  assert.equal(got.text, (await complete(plain.url, p)).text);
  assert.match(await (await fetch(`${b.url}/metrics`)).text(), /llmfleet_kv_store_loads_total\{[^}]*outcome="corrupt"[^}]*\} 1/);
});

test("a slow store is waited for only up to the timeout, then the prompt is recomputed", async () => {
  const slow = express();
  slow.use((_req, _res, next) => void setTimeout(next, 2000));
  slow.use(store.app);
  await using slowHttp = await listen(slow);
  await using a = await withStore(slowHttp.url, { kvStoreTimeoutMs: 300 });
  const t0 = performance.now();
  const got = await complete(a.url, `${doc} slow case`);
  assert.ok(performance.now() - t0 < 1800, `took ${performance.now() - t0} ms`);
  assert.equal(got.text, (await complete(plain.url, `${doc} slow case`)).text);
  assert.match(await (await fetch(`${a.url}/metrics`)).text(), /llmfleet_kv_store_loads_total\{[^}]*outcome="timeout"[^}]*\} 1/);
});
