import { test } from "node:test";
import assert from "node:assert/strict";
import { createEngineMetrics } from "../../engine/metrics/engine-metrics.ts";
import { observation } from "./observe.ts";
import { emptyScrape, parseExposition, quantileBetween } from "./scrape.ts";

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
