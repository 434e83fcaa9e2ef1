/**
 * A KV store load imported block by block as the blocks arrive (part-sink.ts, block-parts.ts) into a
 * pod whose KV cache is unified (the GPU default; on here on CPU): the same greedy output as
 * recomputing, over TCP and HTTP, from an entry written by a pod of the other layout (one KV stream
 * per sequence: each part normalised); a prefix of a longer entry takes only its blocks; a corrupt
 * block leaves the sequence empty and the prompt recomputed; LLMFLEET_KV_LOAD_PARTS=0 assembles the
 * whole state as before.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { listen, postJson, startPod, completionWithReuse, type Running, type RunningPod } from "../../testing/engine.ts";
import { createKvStorePod, type KvStorePod } from "../kvstore-pod.ts";
import { decodeManifest } from "./kv-blocks.ts";

const MODEL = "synthetic://tiny";
const BLOCK = 16;
let store: KvStorePod;
let storeHttp: Running;
let plain: RunningPod;
let writer: RunningPod;

const doc = Array.from({ length: 70 }, (_, i) => `p${i % 19}`).join(" ");

before(async () => {
  store = await createKvStorePod({ blockTokens: BLOCK, codec: "none", tenantSalt: "parts", tiers: [], kvTransport: "auto", kvPort: 0 });
  storeHttp = await listen(store.app);
  plain = await startPod({ model: MODEL });
  writer = await startPod({ model: MODEL, kvStore: storeHttp.url }); // one KV stream per sequence (the CPU default)
});
after(async () => {
  await writer?.[Symbol.asyncDispose]();
  await plain?.[Symbol.asyncDispose]();
  await storeHttp?.[Symbol.asyncDispose]();
  await store?.[Symbol.asyncDispose]();
});

const unified = (extra: Record<string, unknown> = {}): Promise<RunningPod> => startPod({ model: MODEL, kvStore: storeHttp.url, kvUnified: true, ...extra });
const metrics = async (url: string): Promise<string> => (await fetch(`${url}/metrics`)).text();
const stage = (text: string, name: string): number =>
  Number(new RegExp(`llmfleet_kv_store_stage_seconds_total\\{[^}]*op="load",stage="${name}"[^}]*\\} (\\S+)`).exec(text)?.[1] ?? 0);
const loads = (text: string, outcome: string): number => Number(new RegExp(`llmfleet_kv_store_loads_total\\{[^}]*outcome="${outcome}"[^}]*\\} (\\d+)`).exec(text)?.[1] ?? 0);

async function written(text: string): Promise<{ key: string; tokens: number; blocks: number }> {
  const key = (await postJson(`${writer.url}/v1/contexts`, { text })).json.key as string;
  const hit = await store.store.get(key);
  assert.ok(hit, "the writer stored the entry");
  const m = decodeManifest(hit.value);
  return { key, tokens: m.tokens, blocks: m.blocks.length - 1 };
}

for (const transport of ["tcp", "http"] as const) {
  test(`over ${transport}, each block is imported as it arrives, with the same greedy output as recomputing`, async () => {
    await using b = await unified({ kvTransport: transport });
    const p = `parts ${transport} ${doc}`;
    const entry = await written(p);
    assert.ok(entry.blocks >= 4, `an entry of several blocks (${entry.blocks})`);
    const got = await completionWithReuse(b.url, `${p} question`);
    assert.equal(got.text, (await completionWithReuse(plain.url, `${p} question`)).text);
    assert.equal(got.cached, entry.tokens);
    const text = await metrics(b.url);
    assert.equal(loads(text, "hit"), 1);
    assert.ok(stage(text, "import_parts") > 0, "the blocks were imported as parts");
    // And the pod goes on from there: the same prompt again reuses what it holds.
    assert.equal((await completionWithReuse(b.url, `${p} question`)).text, got.text);
  });
}

test("a prefix of a longer entry imports only its own blocks", async () => {
  await using b = await unified();
  const long = `prefix of ${doc} ${doc}`;
  const entry = await written(long);
  // The first half of the entry's text: its blocks are a prefix of the entry's (the store's alias).
  const words = long.split(" ");
  const shorter = words.slice(0, Math.floor(words.length * 0.6)).join(" ");
  const got = await completionWithReuse(b.url, `${shorter} next`);
  assert.equal(got.text, (await completionWithReuse(plain.url, `${shorter} next`)).text);
  assert.ok(got.cached > 0 && got.cached < entry.tokens && got.cached % BLOCK === 0, `a block-aligned prefix (${got.cached} of ${entry.tokens})`);
  assert.ok(stage(await metrics(b.url), "import_parts") > 0);
});

test("a corrupt block fails the load with the sequence left empty, and the prompt is recomputed", async () => {
  await using b = await unified();
  const p = `corrupt parts ${doc}`;
  const entry = await written(p);
  const m = decodeManifest((await store.store.get(entry.key))!.value);
  const victim = m.blocks.at(-1)!; // the last: earlier blocks are imported before it fails
  const ram = store.store.tiers[0]!;
  const bad = Buffer.from((await ram.get(victim.key))!);
  bad.writeUInt8(bad[bad.length >> 1]! ^ 0xff, bad.length >> 1);
  await ram.put(victim.key, bad);
  const got = await completionWithReuse(b.url, `${p} question`);
  assert.equal(got.text, (await completionWithReuse(plain.url, `${p} question`)).text);
  assert.equal(got.cached, 0, "nothing of the failed load is counted as reused");
  assert.equal(loads(await metrics(b.url), "corrupt"), 1);
});

test("LLMFLEET_KV_LOAD_PARTS=0: the whole state is assembled and imported, as before", async () => {
  process.env.LLMFLEET_KV_LOAD_PARTS = "0";
  try {
    await using b = await unified();
    const p = `whole ${doc}`;
    const entry = await written(p);
    const got = await completionWithReuse(b.url, `${p} question`);
    assert.equal(got.text, (await completionWithReuse(plain.url, `${p} question`)).text);
    assert.equal(got.cached, entry.tokens);
    assert.equal(stage(await metrics(b.url), "import_parts"), 0);
  } finally {
    delete process.env.LLMFLEET_KV_LOAD_PARTS;
  }
});
