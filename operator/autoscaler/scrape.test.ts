import { test } from "node:test";
import assert from "node:assert/strict";
import { createEngineMetrics } from "../../engine/metrics/engine-metrics.ts";
import { observation } from "./observe.ts";
import { emptyScrape, pairScrapes, parseExposition, quantileBetween, rememberScrapes, type PodScrapes, type PoolScrape } from "./scrape.ts";

test("parseExposition reads the engine's own exposition and sums pods", async () => {
  const m = createEngineMetrics("prefill");
  m.queueDepth.set(3);
  m.runningSequences.set(2);
  m.promptTokens.inc(1000);
  m.requests.inc({ status: "200" }, 4);
  for (const s of [0.1, 0.2, 0.3, 0.4, 2]) m.ttft.observe(s);
  const text = await m.registry.metrics();
  const s = parseExposition(text, parseExposition(text, emptyScrape()));
  assert.equal(s.pods, 2);
  assert.equal(s.queueDepth, 6);
  assert.equal(s.running, 4);
  assert.equal(s.promptTokens, 2000);
  assert.equal(s.requests, 8);
  assert.equal(s.ttftBuckets.get(Infinity), 10);
});

test("the engines' prefill busy counters become the observation's prefill busy time, paired per pod", async () => {
  const exposition = (tokens: number, seconds: number): string =>
    `# TYPE llmfleet_engine_native_prefill_tokens_total counter\nllmfleet_engine_native_prefill_tokens_total{role="prefill"} ${tokens}\n` +
    `# TYPE llmfleet_engine_native_prefill_seconds_total counter\nllmfleet_engine_native_prefill_seconds_total{role="prefill"} ${seconds}\n`;
  const s = parseExposition(exposition(30000, 2), emptyScrape());
  assert.equal(s.prefillTokens, 30000);
  assert.equal(s.prefillSeconds, 2);
  const before: PodScrapes = new Map([["a", s]]);
  const now: PodScrapes = new Map([
    ["a", parseExposition(exposition(60000, 4), emptyScrape())],
    // New since the last pass: counts from zero.
    ["b", parseExposition(exposition(15000, 1), emptyScrape())],
  ]);
  const { prev, cur } = pairScrapes(before, now);
  const o = observation("prefill", { at: 0, scrape: prev }, { at: 15, scrape: cur }, 2);
  assert.equal(o.prefillBusyTokens, 45000);
  assert.equal(o.prefillBusySeconds, 3);
  assert.equal(observation("decode", { at: 0, scrape: prev }, { at: 15, scrape: cur }, 2).prefillBusySeconds, undefined);
});

test("quantileBetween takes the p90 of the interval's observations only", () => {
  const before = new Map([
    [0.5, 10],
    [1, 10],
    [Infinity, 10],
  ]);
  const after = new Map([
    [0.5, 10],
    [1, 20],
    [Infinity, 20],
  ]);
  assert.equal(quantileBetween(before, after, 0.9), 0.95);
  assert.equal(quantileBetween(after, after, 0.9), undefined);
});

test("observation rates counters over the interval; a counter reset counts from zero", () => {
  const a = { ...emptyScrape(), promptTokens: 1000 };
  const b = { ...emptyScrape(), promptTokens: 4000, queueDepth: 5 };
  const o = observation("prefill", { at: 0, scrape: a }, { at: 15, scrape: b }, 2);
  assert.equal(o.arrivalRate, 200);
  assert.equal(o.queueDepth, 5);
  assert.equal(observation("prefill", { at: 0, scrape: b }, { at: 10, scrape: a }, 2).arrivalRate, 100);
});

test("pairScrapes: a pod removed by a scale-down is no counter reset, and a new pod counts from zero", () => {
  const pod = (promptTokens: number, running = 0): PoolScrape => ({ ...emptyScrape(), pods: 1, promptTokens, running });
  // Three pods served 30,000 prompt tokens between them; then c is removed and nothing arrives.
  const before: PodScrapes = new Map([
    ["a", pod(10_000)],
    ["b", pod(12_000)],
    ["c", pod(8_000)],
  ]);
  const now: PodScrapes = new Map([
    ["a", pod(10_000)],
    ["b", pod(12_000)],
  ]);
  const { prev, cur } = pairScrapes(before, now);
  assert.equal(observation("prefill", { at: 0, scrape: prev }, { at: 2, scrape: cur }, 2).arrivalRate, 0, "idle stays idle");
  // The sums differenced as before would have read a reset and counted 22,000 tokens as new work.
  const naive = (s: PodScrapes): PoolScrape => [...s.values()].reduce((acc, p) => ({ ...acc, promptTokens: acc.promptTokens + p.promptTokens }), emptyScrape());
  assert.equal(observation("prefill", { at: 0, scrape: naive(before) }, { at: 2, scrape: naive(now) }, 2).arrivalRate, 11_000);
  // A pod new since the last pass: its whole counter is work of this interval; gauges sum over all pods now.
  const grown = pairScrapes(now, new Map([...now, ["d", pod(600, 3)]]));
  assert.equal(observation("prefill", { at: 0, scrape: grown.prev }, { at: 2, scrape: grown.cur }, 3).arrivalRate, 300);
  assert.equal(grown.cur.running, 3);
  assert.equal(grown.cur.pods, 3);
});

test("rememberScrapes keeps a target that missed one scrape and forgets pods no longer targeted", () => {
  const pod = (promptTokens: number): PoolScrape => ({ ...emptyScrape(), pods: 1, promptTokens });
  const before: PodScrapes = new Map([
    ["a", pod(100)],
    ["b", pod(200)],
    ["gone", pod(300)],
  ]);
  const kept = rememberScrapes(before, new Map([["a", pod(150)]]), ["a", "b"]);
  assert.deepEqual([...kept.keys()], ["a", "b"]);
  assert.equal(kept.get("a")?.promptTokens, 150);
  assert.equal(kept.get("b")?.promptTokens, 200, "b did not answer: what it read last");
  // b answers again with 260: 60 tokens of work, not 260.
  const { prev, cur } = pairScrapes(kept, new Map([["b", pod(260)]]));
  assert.equal(cur.promptTokens - prev.promptTokens, 60);
});
