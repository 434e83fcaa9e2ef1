/**
 * The local path of a P/D hand-off (local-handoff.ts): a decode pod on the same machine lends a
 * region, the prefill pod exports the state's rows into it and stages the headers alone. On this
 * CPU the regions are POSIX shared memory (a GPU pod's are device memory, CUDA IPC). Real pods on
 * the tiny synthetic GGUF (real llama.cpp): every answer through the router is the aggregated
 * pod's, the metrics say which path each hand-off took, and a decode pod with no memory to lend
 * gets its hand-offs over the network.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { rm } from "node:fs/promises";
import { completionText, completionWithReuse, listen, postJson, sseEvents, startPdFleet, startPod, type PdFleet } from "../../testing/engine.ts";
import { createKvStorePod } from "../kvstore-pod.ts";
import { nodeIdentity } from "./local-regions.ts";
import type { NativeEngine } from "../native/binding.ts";

let fleet: PdFleet;

// One KV layout on both sides (the local path moves rows where they were written): the unified KV,
// a GPU pod's default, on both pods here.
const SAME = { prefill: { kvUnified: true }, decode: { kvUnified: true } };

before(async () => {
  fleet = await startPdFleet("synthetic://tiny", SAME);
});
after(() => fleet?.[Symbol.asyncDispose]());

async function counter(url: string, name: string, label: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(name) && l.includes(label));
  return line ? Number(line.split(" ").pop()) : 0;
}

const localHandoffs = (f: PdFleet): Promise<number> => counter(f.prefill.url, "llmfleet_kv_handoffs_total", 'path="local"');

test("a decode pod says it lends memory to pods on its machine; the hand-offs take the local path and every answer is the aggregated pod's", async () => {
  const info = (await (await fetch(`${fleet.decode.url}/internal/kv-transport`)).json()) as { local?: { node: string; device: boolean; probe: string } };
  assert.equal(info.local?.node, nodeIdentity());
  assert.equal(info.local?.device, false, "shared memory on a CPU pod");
  assert.match(info.local?.probe ?? "", /^shm:\/llmfleet-kv-\d+-\d+-[0-9a-f]+-\d+$/);
  const before = await localHandoffs(fleet);
  const prefillEngine = (fleet.prefill.pod.service.runtime as unknown as { engine: NativeEngine }).engine;
  const exportsBefore = prefillEngine.exportStats().exports;
  for (const body of [
    { prompt: "the capital of France is", max_tokens: 6 },
    { prompt: "a b c d e f g h i j k", max_tokens: 20, stop: [" "] },
    { prompt: "one", max_tokens: 1 },
    { prompt: "once upon a time", max_tokens: 8, temperature: 0.8, seed: 7 },
  ]) {
    assert.equal(await completionText(fleet.router.url, body), await completionText(fleet.aggregated.url, body), JSON.stringify(body));
  }
  const body = { prompt: "one two three four five", max_tokens: 12, temperature: 0, stream: true };
  const res = await fetch(`${fleet.router.url}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const texts = (await sseEvents(res)).slice(0, -1).map((e) => (JSON.parse(e) as { choices: { text: string }[] }).choices[0]!.text);
  assert.equal(texts.join(""), await completionText(fleet.aggregated.url, { ...body, stream: false }));
  assert.equal((await localHandoffs(fleet)) - before, 5, "all five went the local way");
  assert.equal(prefillEngine.exportStats().exports - exportsBefore, 5, "the exports into regions are counted as exports");
  assert.equal(await counter(fleet.prefill.url, "llmfleet_kv_handoffs_total", 'path="tcp"'), 0, "none over TCP");
});

test("the prefill answer names the local path, the state's size and the staging pod; the staged state is of the prompt", async () => {
  const request = { prompt: "the capital of France is", max_tokens: 4, temperature: 0 };
  const p = await postJson(`${fleet.prefill.url}/internal/prefill`, { request, kind: "completion", handoffId: randomUUID(), decodeUrl: fleet.decode.url });
  assert.equal(p.status, 200, JSON.stringify(p.json));
  assert.equal(p.json.path, "local");
  assert.equal(p.json.decodeUrl, fleet.decode.url);
  assert.ok((p.json.stateBytes as number) > 0);
  // Its first token went ahead of the stage call (the rows are in the decode pod's memory already).
  assert.equal(p.json.early, true);
  const g = await postJson(`${fleet.decode.url}/internal/generate/${String(p.json.handoffId)}`, { request, kind: "completion", firstToken: p.json.firstToken, awaitState: true });
  assert.equal(g.status, 200, JSON.stringify(g.json));
  assert.equal((g.json.choices as { text: string }[])[0]!.text, await completionText(fleet.aggregated.url, request));
  // Taken once: its region went back to the pod's free ones.
  const again = await postJson(`${fleet.decode.url}/internal/generate/${String(p.json.handoffId)}`, { request, kind: "completion", firstToken: p.json.firstToken });
  assert.equal(again.status, 404);
  assert.equal(await counter(fleet.decode.url, "llmfleet_kv_handoff_failures_total", "await_"), 0, "no generate call computed the prompt itself");
});

test("the decode pod refuses a stage call that names a region it did not lend, and a reserve of no bytes, with errors naming them", async () => {
  const stage = await postJson(`${fleet.decode.url}/internal/kv-local/x`, { model: "tiny", tokens: [1], region: "shm:/nope", size: 64, meta: "", rows: [] });
  assert.ok([404, 409].includes(stage.status), JSON.stringify(stage.json));
  const reserve = await postJson(`${fleet.decode.url}/internal/kv-local/reserve`, { bytes: 0 });
  assert.equal(reserve.status, 400);
  assert.match(JSON.stringify(reserve.json), /bytes must be a positive integer/);
});

test("a decode pod with no memory to lend gets its hand-offs over the network, with the same answers", async () => {
  process.env.LLMFLEET_KV_LOCAL_BYTES = "1024"; // smaller than any state: every reserve is refused
  let small: PdFleet;
  try {
    small = await startPdFleet("synthetic://tiny", SAME);
  } finally {
    delete process.env.LLMFLEET_KV_LOCAL_BYTES;
  }
  await using f = small;
  const body = { prompt: "the capital of France is", max_tokens: 6 };
  assert.equal(await completionText(f.router.url, body), await completionText(f.aggregated.url, body));
  assert.equal(await localHandoffs(f), 0);
  assert.equal(await counter(f.prefill.url, "llmfleet_kv_handoffs_total", 'path="tcp",outcome="ok"'), 1, "over TCP instead");
});

test("a decode pod whose KV layout differs gets its hand-offs over the network (the state is rewritten there), with the same answers", async () => {
  await using f = await startPdFleet("synthetic://tiny"); // the prefill pod's one KV stream, the decode pod's two
  const body = { prompt: "the capital of France is", max_tokens: 6 };
  assert.equal(await completionText(f.router.url, body), await completionText(f.aggregated.url, body));
  assert.equal(await localHandoffs(f), 0);
});

test("a decode pod whose memory this pod cannot map (its probe region gone: no shared IPC namespace) gets its hand-offs over the network", async () => {
  await using f = await startPdFleet("synthetic://tiny", SAME);
  const info = (await (await fetch(`${f.decode.url}/internal/kv-transport`)).json()) as { local: { probe: string } };
  await rm(`/dev/shm${info.local.probe.slice("shm:".length)}`); // as another pod's /dev/shm looks from here
  const body = { prompt: "the capital of France is", max_tokens: 6 };
  assert.equal(await completionText(f.router.url, body), await completionText(f.aggregated.url, body));
  assert.equal(await completionText(f.router.url, body), await completionText(f.aggregated.url, body));
  assert.equal(await localHandoffs(f), 0);
  assert.equal(await counter(f.prefill.url, "llmfleet_kv_handoffs_total", 'path="tcp",outcome="ok"'), 2);
});

test("a prefill pod with a KV store writes the prompt back on the local path too: another pod of the store loads it", async () => {
  await using store = await createKvStorePod({ blockTokens: 16, codec: "lossless", tenantSalt: "local", tiers: [] });
  await using storeHttp = await listen(store.app);
  await using f = await startPdFleet("synthetic://tiny", { prefill: { kvUnified: true, kvStore: storeHttp.url }, decode: { kvUnified: true } });
  const prompt = `${Array.from({ length: 60 }, (_, i) => `w${i % 23}`).join(" ")} on the local path`;
  const body = { prompt, max_tokens: 6 };
  assert.equal(await completionText(f.router.url, body), await completionText(f.aggregated.url, body));
  assert.equal(await localHandoffs(f), 1, "the hand-off went the local way");
  await f.prefill.pod.kvCache!.settled();
  assert.ok(store.store.tiers[0]!.stats().blocks > 0, "the prompt's blocks are in the store");
  await using other = await startPod({ model: "synthetic://tiny", kvStore: storeHttp.url });
  const loaded = await completionWithReuse(other.url, prompt, 6);
  assert.ok(loaded.cached >= 16, `another pod of the store reused ${loaded.cached} tokens`);
  assert.equal(loaded.text, await completionText(f.aggregated.url, body));
});
