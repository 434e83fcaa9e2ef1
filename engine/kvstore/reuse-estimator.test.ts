import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type AddressInfo, type Socket } from "node:net";
import { Registry } from "prom-client";
import { ReuseEstimator } from "./reuse-estimator.ts";
import { KvPrefixCache } from "./prefix-cache.ts";
import { createKvClientMetrics } from "./client-metrics.ts";

test("loads until both rates are known (that is how the load rate is learned)", () => {
  const e = new ReuseEstimator();
  assert.equal(e.decide(8192, 8192).choice, "load");
  e.observePrefill(4096, 200);
  assert.equal(e.decide(8192, 8192).choice, "load");
});

test("recomputes when loading the entry is expected to be slower, loads when it is faster", () => {
  const e = new ReuseEstimator();
  e.observePrefill(8192, 440); // GPU: 0.054 ms a token
  e.observeLoad(8192, 5316); //   a load through JavaScript HTTP: 0.65 ms a token
  const slow = e.decide(8192, 8192);
  assert.equal(slow.choice, "recompute");
  assert.ok(slow.loadMs! > slow.recomputeMs!);
  // CPU: recompute is 12.7 s for 8K; the same load wins.
  const cpu = new ReuseEstimator();
  cpu.observePrefill(8192, 12_700);
  cpu.observeLoad(8192, 300);
  assert.equal(cpu.decide(8192, 8192).choice, "load");
});

test("the estimate weighs the whole entry fetched against only the tokens a load would spare", () => {
  const e = new ReuseEstimator();
  e.observePrefill(1000, 1000); // 1 ms a token
  e.observeLoad(1000, 100); //    0.1 ms a token
  assert.equal(e.decide(8192, 8192).choice, "load");
  // The sequence already holds most of the prefix: 256 tokens to spare cost 256 ms to recompute,
  // the 8192-token entry 819 ms to load.
  assert.equal(e.decide(8192, 256).choice, "recompute");
});

test("every exploreEvery-th decision against loading loads anyway, so a faster store is noticed", () => {
  const e = new ReuseEstimator({ exploreEvery: 5 });
  e.observePrefill(1000, 100);
  e.observeLoad(1000, 1000);
  const choices = Array.from({ length: 10 }, () => e.decide(1000, 1000).choice);
  assert.deepEqual(choices, ["recompute", "recompute", "recompute", "recompute", "load", "recompute", "recompute", "recompute", "recompute", "load"]);
  // The store got faster: a few loads move the average and loading wins again.
  for (let i = 0; i < 10; i++) e.observeLoad(1000, 10);
  assert.equal(e.decide(1000, 1000).choice, "load");
});

test("samples of few tokens are ignored: they say little about a rate", () => {
  const e = new ReuseEstimator();
  e.observePrefill(4, 100);
  e.observeLoad(4, 1);
  assert.deepEqual(e.rates(), { loadMsPerToken: undefined, prefillMsPerToken: undefined });
});

test("write-backs are skipped while requests wait, and past the budget of bytes in flight until those are done", async () => {
  const registry = new Registry();
  const metrics = createKvClientMetrics(registry);
  // A store that accepts and never answers: the write times out after the state is exported, which frees its budget.
  const sockets: Socket[] = [];
  const silent = createServer((s) => void sockets.push(s));
  await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
  const cache = new KvPrefixCache({
    url: `http://127.0.0.1:${(silent.address() as AddressInfo).port}`,
    timeoutMs: 300,
    model: "m",
    layout: { streams: 1, vTransposed: false },
    metrics,
    writeBackBudgetBytes: 1_000,
    log: () => undefined,
  });
  const context = Array.from({ length: 100 }, (_, i) => i);
  assert.equal(cache.admitWriteBack(100, true), false, "requests are waiting");
  assert.equal(cache.admitWriteBack(100, false), true);
  let exported!: (b: Buffer) => void;
  cache.writeBack(context, 100, new Promise<Buffer>((resolve) => (exported = resolve)));
  exported(Buffer.alloc(800)); // 8 bytes a token
  await new Promise((r) => setImmediate(r));
  assert.equal(cache.admitWriteBack(100, false), false, "800 bytes in flight + ~800 more > 1000");
  await cache.settled();
  assert.equal(cache.admitWriteBack(100, false), true, "the failed write freed its budget");
  for (const s of sockets) s.destroy();
  silent.close();
  const text = await registry.metrics();
  assert.match(text, /llmfleet_kv_store_writes_total\{outcome="skipped_busy"\} 1/);
  assert.match(text, /llmfleet_kv_store_writes_total\{outcome="skipped_budget"\} 1/);
});
