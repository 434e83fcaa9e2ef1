/**
 * A pod's write-backs wait while it loads (load-gate.ts): the gate alone, then a real kvstore pod
 * over HTTP with one block client loading an entry while a write-back of another begins — none of
 * the write's blocks reaches the store before the load has ended, the wait is counted, and both
 * entries load afterwards byte for byte.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Registry } from "prom-client";
import { listen, type Running } from "../../testing/engine.ts";
import { syntheticSeqState } from "../../testing/kv-state.ts";
import { createKvStorePod, type KvStorePod } from "../kvstore-pod.ts";
import { KvBlockClient, type BlockWriteTarget } from "./block-client.ts";
import { createKvClientMetrics } from "./client-metrics.ts";
import { LoadGate } from "./load-gate.ts";

test("the gate: idle at once without loads, when the last load leaves, or after its longest wait", async () => {
  const gate = new LoadGate(50);
  await gate.idle();
  const a = gate.enter();
  const b = gate.enter();
  let idle = false;
  const waiting = gate.idle().then(() => (idle = true));
  a();
  a(); // a second leave of the same load counts once
  await new Promise((r) => setTimeout(r, 5));
  assert.equal(idle, false, "one load still under way");
  assert.equal(gate.busy, true);
  b();
  await waiting;
  assert.equal(gate.busy, false);
  const stuck = gate.enter();
  const t0 = performance.now();
  await gate.idle();
  assert.ok(performance.now() - t0 >= 45, "waited for the load up to its longest wait");
  stuck();
});

const B = 32;
let store: KvStorePod;
let http: Running;

before(async () => {
  store = await createKvStorePod({ blockTokens: B, codec: "none", tenantSalt: "g", tiers: [], kvTransport: "http" });
  http = await listen(store.app);
});
after(async () => {
  await http?.[Symbol.asyncDispose]();
  await store?.[Symbol.asyncDispose]();
});

const chain = (name: string, n: number): string[] => Array.from({ length: n }, (_, i) => createHash("sha256").update(`${name}/${i}`).digest("hex"));
const config = { blockTokens: B, formats: ["v2"], blockCodecs: ["none"] };
const target = (keys: string[]): BlockWriteTarget => ({ keys, config, codec: "none", kvNamespace: "", signal: AbortSignal.timeout(20_000) });

async function blockBytesIn(): Promise<number> {
  const m = await store.metrics.blockBytes.get();
  return m.values.filter((v) => v.labels.direction === "in").reduce((n, v) => n + v.value, 0);
}

async function yielded(registry: Registry): Promise<number> {
  const m = await registry.getSingleMetric("llmfleet_kv_store_stage_seconds_total")!.get();
  return m.values.find((v) => v.labels.op === "write" && v.labels.stage === "yield")?.value ?? 0;
}

for (const writesYieldToLoads of [true, false]) {
  test(`a write-back begun during a load of the same pod ${writesYieldToLoads ? "sends nothing before the load ends" : "goes at once (writesYieldToLoads: false)"}`, async () => {
    const registry = new Registry();
    const client = new KvBlockClient({
      url: http.url,
      headers: () => ({}),
      model: "m",
      metrics: createKvClientMetrics(registry),
      transport: "http",
      timeoutMs: 20_000,
      writesYieldToLoads,
    });
    const tag = String(writesYieldToLoads);
    const first = syntheticSeqState({ tokens: 16 * B, seed: 11 });
    const second = syntheticSeqState({ tokens: 16 * B, seed: 12 });
    const firstKeys = chain(`first-${tag}`, 16);
    const secondKeys = chain(`second-${tag}`, 16);
    await client.write(first, target(firstKeys));
    const frame = (await store.store.get(firstKeys.at(-1)!))!.value;

    const inBefore = await blockBytesIn();
    const loading = client.load(frame, firstKeys.at(-1)!, { tokens: 16 * B, kvNamespace: "" }, AbortSignal.timeout(20_000));
    const writing = client.write(second, target(secondKeys));
    const loaded = await loading;
    const inDuring = (await blockBytesIn()) - inBefore; // block bytes the store took while the load ran
    await writing;
    assert.ok((await blockBytesIn()) - inBefore >= second.length / 2, "the write-back's blocks reached the store");
    assert.ok(loaded.state.equals(first), "the load gave the first state back");
    if (writesYieldToLoads) {
      assert.equal(inDuring, 0, "no block of the write-back reached the store during the load");
      assert.ok((await yielded(registry)) > 0, "the wait is counted as the write's yield stage");
    } else {
      assert.equal(await yielded(registry), 0);
    }
    const again = await client.load((await store.store.get(secondKeys.at(-1)!))!.value, secondKeys.at(-1)!, { tokens: 16 * B, kvNamespace: "" }, AbortSignal.timeout(20_000));
    assert.ok(again.state.equals(second), "the write-back stored its state whole");
  });
}
