/**
 * Aliases: a prompt sharing only the first k blocks of a stored prompt loads those k blocks from
 * the longer entry. The store side (index, eviction, TTL, restart of the disk tier, tenant keys)
 * on fake entries; then real pods (tiny synthetic GGUF, real llama.cpp, lossless codec) check
 * that exactly k blocks load and the answer equals a fresh computation, that an entry gone
 * behind an alias is a clean recompute, and that another tenant's keys never hit.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import express from "express";
import { listen, metricValue, postJson, startPod, type Running, type RunningPod, completionWithReuse } from "../../testing/engine.ts";
import { commonPrefixLength } from "../runtime/runtime.ts";
import { kvBlockHashes } from "./block-keys.ts";
import { encodeKvEntry } from "./kv-entry.ts";
import { createKvStorePod, type KvStorePod } from "../kvstore-pod.ts";
import { createKvStoreApp } from "../http/kvstore-app.ts";
import { parseTierSpec } from "./tier-spec.ts";

const MODEL = "synthetic://tiny";
const BLOCK = 16;

// ---- store side, fake entries (blocks of 256 tokens) ----

const chain = (seed: number, blocks: number, tenant = "t"): string[] =>
  kvBlockHashes(
    Array.from({ length: blocks * 256 }, (_, i) => i * seed + seed),
    256,
    { model: "m", tenant },
  );
const entryFor = (keys: string[], bytes = 1000): Buffer =>
  encodeKvEntry({ model: "m", tokens: keys.length * 256, codec: "none", stateBytes: bytes, prefixKeys: keys }, Buffer.alloc(bytes, keys.length));

test("lookup answers the longest prefix through a longer entry's alias, only when asked to", async () => {
  await using pod = await createKvStorePod({ blockTokens: 256, codec: "none", tenantSalt: "t", tiers: [] });
  await using http = await listen(pod.app);
  const long = chain(7, 5);
  await pod.store.put(long.at(-1)!, entryFor(long));
  const asked = [...long.slice(0, 3), ...chain(9, 4).slice(3)];
  const found = await postJson(`${http.url}/v1/kv/lookup`, { keys: asked, aliases: true });
  assert.deepEqual(found.json, { index: 2, key: long[2], tier: "ram", entryKey: long[4], entryBlocks: 5 });
  const old = await postJson(`${http.url}/v1/kv/lookup`, { keys: asked });
  assert.equal(old.json.index, -1, "a client that does not ask for aliases gets whole entries only");
  const whole = await postJson(`${http.url}/v1/kv/lookup`, { keys: long, aliases: true });
  assert.deepEqual(whole.json, { index: 4, key: long[4], tier: "ram", entryKey: long[4], entryBlocks: 5 });
  // A shorter whole entry at the same key wins over the alias (less to fetch, nothing to cut).
  await pod.store.put(long[2]!, entryFor(long.slice(0, 3)));
  assert.equal((await postJson(`${http.url}/v1/kv/lookup`, { keys: asked, aliases: true })).json.entryKey, long[2]);
  // Another tenant's keys for the same tokens never match.
  assert.equal((await pod.store.longest(chain(7, 3, "other"), true)).index, -1);
  assert.match(await (await fetch(`${http.url}/metrics`)).text(), /llmfleet_kv_alias_hits_total\{[^}]*\} 1/);
  assert.match(await (await fetch(`${http.url}/metrics`)).text(), /llmfleet_kv_alias_pairs\{[^}]*\} 6/);
});

test("aliases go with their entry: eviction from the last tier, delete, TTL, a bad chain; the index is bounded", async (t) => {
  await using pod = await createKvStorePod({
    blockTokens: 256,
    codec: "none",
    tenantSalt: "t",
    tiers: [parseTierSpec("name=ram,medium=memory,capacity=3000")],
  });
  const [a, b, c] = [chain(3, 4), chain(5, 4), chain(11, 4)];
  for (const keys of [a, b, c]) await pod.store.put(keys.at(-1)!, entryFor(keys));
  assert.equal((await pod.store.longest(a.slice(0, 2), true)).index, -1, "a was evicted, its aliases with it");
  assert.equal(pod.store.aliases.pairs, 6);
  await pod.store.delete(b.at(-1)!);
  assert.equal(pod.store.aliases.pairs, 3);
  await pod.store.tiers[0]!.delete(c.at(-1)!); // gone behind the store's back (like an expiry)
  assert.equal((await pod.store.longest(c.slice(0, 2), true)).index, -1);
  assert.equal(pod.store.aliases.pairs, 0, "a stale alias is dropped when its entry is found gone");
  const bogus = [...chain(13, 3).slice(0, 2), c.at(-1)!];
  await pod.store.put(c.at(-1)!, encodeKvEntry({ model: "m", tokens: 4 * 256, codec: "none", stateBytes: 1, prefixKeys: bogus }, Buffer.alloc(1)));
  assert.equal(pod.store.aliases.pairs, 0, "a chain whose length does not match the tokens is not indexed");
  await using ttl = await createKvStorePod({
    blockTokens: 256,
    codec: "none",
    tenantSalt: "t",
    tiers: [parseTierSpec("name=ram,medium=memory,capacity=1Mi,ttl=60s")],
  });
  t.mock.timers.enable({ apis: ["Date"], now: 1_000_000 });
  await ttl.store.put(a.at(-1)!, entryFor(a));
  assert.equal((await ttl.store.longest(a.slice(0, 2), true)).entry?.key, a.at(-1), "found through its alias while fresh");
  t.mock.timers.tick(60_001);
  assert.equal((await ttl.store.longest(a.slice(0, 2), true)).index, -1);
  await using small = await createKvStorePod({ blockTokens: 256, codec: "none", tenantSalt: "t", tiers: [], maxAliasPairs: 5 });
  for (const keys of [a, b]) await small.store.put(keys.at(-1)!, entryFor(keys));
  assert.equal(small.store.aliases.pairs, 3, "the oldest entry's aliases are forgotten past the bound");
  assert.equal((await small.store.longest(b.slice(0, 2), true)).entry?.key, b.at(-1));
});

test("the disk tier's aliases are rebuilt from its entries on restart", async () => {
  const dir = await mkdtemp(join(tmpdir(), "llmfleet-alias-"));
  try {
    const tiers = [parseTierSpec(`name=ssd,medium=disk,capacity=1Mi,path=${dir}`)];
    const keys = chain(17, 6);
    {
      await using pod = await createKvStorePod({ blockTokens: 256, codec: "none", tenantSalt: "t", tiers });
      await pod.store.put(keys.at(-1)!, entryFor(keys));
    }
    await using again = await createKvStorePod({ blockTokens: 256, codec: "none", tenantSalt: "t", tiers });
    assert.equal(again.store.aliases.pairs, 5);
    assert.deepEqual(await again.store.longest(keys.slice(0, 4), true), { index: 3, tier: "ssd", entry: { key: keys.at(-1), blocks: 6 } });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// ---- real pods ----

let store: KvStorePod;
let storeHttp: Running;
let plain: RunningPod;

before(async () => {
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

const words = (n: number, salt: string): string => Array.from({ length: n }, (_, i) => `${salt}${i % 29}`).join(" ");

/** Stores `long` through the pre-warm API; returns its blocks and the full blocks `other` shares with it. */
async function storeAndShare(url: string, long: string, other: string): Promise<{ blocks: number; shared: number }> {
  await using a = await startPod({ model: MODEL, kvStore: url });
  const warm = await postJson(`${a.url}/v1/contexts`, { text: long });
  assert.equal(warm.status, 200, JSON.stringify(warm.json));
  const tokenize = (t: string): number[] => plain.pod.service.runtime.tokenize(t);
  const stored = tokenize(long).slice(0, warm.json.stored_tokens as number);
  const shared = Math.floor(commonPrefixLength(stored, tokenize(other).slice(0, -1)) / BLOCK);
  return { blocks: stored.length / BLOCK, shared };
}

test("a prompt sharing the first k of n stored blocks loads exactly k blocks, and answers as a fresh computation", async () => {
  const doc = words(70, "w");
  const other = `${words(28, "w")} and now something else entirely`;
  const { blocks, shared } = await storeAndShare(storeHttp.url, `${doc} end`, other);
  assert.ok(shared >= 1 && shared < blocks, `shared ${shared} of ${blocks} blocks`);
  await using b = await startPod({ model: MODEL, kvStore: storeHttp.url, flashAttention: true });
  const got = await complete(b.url, other);
  assert.equal(got.cached, shared * BLOCK);
  assert.equal(got.text, (await complete(plain.url, other)).text);
  assert.equal(await metricValue(b.url, "llmfleet_kv_store_reused_tokens_total"), shared * BLOCK);
  await b.pod.kvCache!.settled();
  // The longer prompt's own entry was written back: a third pod loads all of its full blocks.
  await using c = await startPod({ model: MODEL, kvStore: storeHttp.url });
  const again = await complete(c.url, other);
  assert.ok(again.cached > shared * BLOCK, `cached ${again.cached}`);
  assert.equal(again.text, got.text);
});

test("an entry gone behind an alias (evicted between lookup and fetch, or before) is a clean recompute", async () => {
  const doc = words(70, "v");
  const other = `${words(30, "v")} but then a different question`;
  const { shared } = await storeAndShare(storeHttp.url, `${doc} fin`, other);
  assert.ok(shared >= 1);
  const racy = express();
  racy.get("/v1/kv/:key", (req, _res, next) => void store.store.tiers[0]!.delete(String(req.params.key)).then(() => next()));
  racy.put("/v1/kv/:key", (_req, res) => void res.status(503).end()); // no write-back: the second pod must find nothing
  racy.use(store.app);
  await using racyHttp = await listen(racy);
  await using b = await startPod({ model: MODEL, kvStore: racyHttp.url });
  const expected = (await complete(plain.url, other)).text;
  const got = await complete(b.url, other);
  assert.deepEqual(got, { text: expected, cached: 0 });
  assert.match(await (await fetch(`${b.url}/metrics`)).text(), /llmfleet_kv_store_loads_total\{[^}]*outcome="miss"[^}]*\} 1/);
  // The entry is gone now; the alias left behind is dropped at the next lookup, again a miss.
  await using c = await startPod({ model: MODEL, kvStore: racyHttp.url });
  assert.deepEqual(await complete(c.url, other), { text: expected, cached: 0 });
  assert.match(await (await fetch(`${c.url}/metrics`)).text(), /llmfleet_kv_store_loads_total\{[^}]*outcome="miss"[^}]*\} 1/);
});

test("aliases keep the tenant salt: another tenant's pod on the same tiers never loads them", async () => {
  const doc = words(70, "u");
  const other = `${words(28, "u")} with a twist at the end`;
  const { shared } = await storeAndShare(storeHttp.url, `${doc} stop`, other);
  assert.ok(shared >= 1);
  const config = { blockTokens: BLOCK, codec: "lossless", tenantSalt: "t2" };
  await using t2 = await listen(createKvStoreApp({ store: store.store, metrics: store.metrics, config }));
  await using b = await startPod({ model: MODEL, kvStore: t2.url });
  const got = await complete(b.url, other);
  assert.equal(got.cached, 0);
  assert.equal(got.text, (await complete(plain.url, other)).text);
  await using c = await startPod({ model: MODEL, kvStore: storeHttp.url });
  assert.equal((await complete(c.url, other)).cached, shared * BLOCK);
});
