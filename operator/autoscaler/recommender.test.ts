import { test } from "node:test";
import assert from "node:assert/strict";
import { recommendReplicas } from "./recommender.ts";
import { arrivalDispersion, arrivalTrend, forecastRate, learnedCapacity, learnedRunningCapacity } from "./signals.ts";
import type { PoolObservation, RecommenderSpec } from "./types.ts";

/** A pool observed every 15 s; `at` counts from 0. */
function series(n: number, f: (i: number) => Partial<PoolObservation>): PoolObservation[] {
  return Array.from({ length: n }, (_, i) => ({ at: i * 15, readyReplicas: 2, arrivalRate: 0, throughput: 0, queueDepth: 0, ...f(i) }));
}

function prefill(over: Partial<RecommenderSpec> = {}): RecommenderSpec {
  return {
    role: "prefill",
    min: 1,
    max: 10,
    current: 2,
    sloSeconds: 0.5,
    maxQueuePerReplica: 4,
    scaleDownStabilizationSeconds: 300,
    leadTimeSeconds: 0,
    priorCapacityPerReplica: 10000,
    ...over,
  };
}

function decode(over: Partial<RecommenderSpec> = {}): RecommenderSpec {
  return { ...prefill(over), role: "decode", sloSeconds: 0.05, maxRunningPerReplica: 16, maxKVUtilizationPercent: 85, ...over };
}

interface Case {
  name: string;
  history: PoolObservation[];
  spec: RecommenderSpec;
  desired: number;
  reason: RegExp;
}

// Served up to 6k per replica so far: below the 10k prior, which therefore holds.
const steady = (rate: number): PoolObservation[] => series(10, () => ({ arrivalRate: rate, throughput: Math.min(rate, 12000) }));
// Around `mean` tokens/s, ±2k alternating every 15 s: 60k-token swings between intervals, an index
// of dispersion of about 6k tokens at a 20k mean (see the arrivalDispersion test).
const bursty = (mean: number): PoolObservation[] =>
  series(10, (i) => ({ arrivalRate: mean + (i % 2 === 0 ? 2000 : -2000), throughput: Math.min(mean, 12000) }));

const cases: Case[] = [
  { name: "no history holds current", history: [], spec: prefill({ current: 3 }), desired: 3, reason: /no observations/ },
  { name: "no history raises to min", history: [], spec: prefill({ current: 0, min: 1 }), desired: 1, reason: /raised to min/ },
  // A steady load has no bursts to absorb: 12k tokens/s on 2 × 10k holds.
  { name: "load inside band holds", history: steady(12000), spec: prefill(), desired: 2, reason: /hold/ },
  // Steady 40k tokens/s needs 4 replicas of 10k, and no spare for bursts.
  { name: "arrival rate scales up", history: steady(40000), spec: prefill(), desired: 4, reason: /scale up: arrival-rate needs 4/ },
  // Without the burst model (burstQuantile 0), a fixed 75% utilisation: 40k / 7.5k → 6.
  {
    name: "burstQuantile 0 plans for targetUtilization",
    history: steady(40000),
    spec: prefill({ burstQuantile: 0 }),
    desired: 6,
    reason: /scale up: arrival-rate needs 6/,
  },
  // Bursty 20k: spare √(6.07k × 20k / 0.5 s) = 15.6k tokens/s on top → (20k + 15.6k) / 10k → 4.
  { name: "bursts ask for spare replicas", history: bursty(20000), spec: prefill(), desired: 4, reason: /arrival-rate needs 4/ },
  // The same bursts at a tighter quantile: 20k + 2 × 15.6k → 6.
  { name: "a higher burst quantile asks for more", history: bursty(20000), spec: prefill({ burstQuantile: 2 }), desired: 6, reason: /arrival-rate needs 6/ },
  { name: "queue scales up", history: series(3, () => ({ queueDepth: 12 })), spec: prefill(), desired: 3, reason: /scale up: queue needs 3/ },
  {
    name: "a deep queue at most doubles the ready replicas per step",
    history: series(3, () => ({ queueDepth: 200 })),
    spec: prefill(),
    desired: 4,
    reason: /queue needs 4/,
  },
  {
    name: "a history shorter than the stabilisation window never scales down (restart)",
    history: series(3, () => ({ arrivalRate: 1000, throughput: 1000 })),
    spec: prefill({ current: 6 }),
    desired: 6,
    reason: /stabilising: 6/,
  },
  {
    name: "TTFT over SLO scales up proportionally, at most 2x",
    history: series(3, () => ({ ttftP90: 0.75, arrivalRate: 1000, throughput: 1000 })),
    spec: prefill(),
    desired: 3,
    reason: /ttft needs 3/,
  },
  { name: "max clamps", history: steady(400000), spec: prefill(), desired: 10, reason: /clamped to max 10/ },
  {
    name: "scale down waits for the stabilisation window",
    history: [
      ...series(5, () => ({ arrivalRate: 40000, throughput: 40000, recommendation: 6 })),
      ...series(3, (i) => ({ at: 75 + i * 15, arrivalRate: 1000, throughput: 1000 })),
    ],
    spec: prefill({ current: 6 }),
    desired: 6,
    reason: /stabilising: 6/,
  },
  {
    name: "scale down after the window",
    history: [
      // Long enough for the burst to leave the 600 s the burstiness is learned from.
      ...series(2, () => ({ arrivalRate: 40000, recommendation: 6 })),
      ...series(50, (i) => ({ at: 30 + i * 15, arrivalRate: 1000, throughput: 1000, recommendation: 1 })),
    ],
    spec: prefill({ current: 6 }),
    desired: 1,
    reason: /scale down: arrival-rate/,
  },
  {
    name: "scale to zero when min is 0 and idle for the window",
    history: series(25, () => ({})),
    spec: prefill({ min: 0, current: 1 }),
    desired: 0,
    reason: /scale to zero/,
  },
  { name: "no scale to zero while min is 1", history: series(25, () => ({})), spec: prefill({ current: 1 }), desired: 1, reason: /min 1/ },
  {
    name: "scale from zero on a queued request",
    history: series(2, () => ({ readyReplicas: 0, queueDepth: 1 })),
    spec: prefill({ min: 0, current: 0 }),
    desired: 1,
    reason: /queue/,
  },
  {
    name: "rising trend scales ahead over the lead time",
    // +50 tokens/s per second: 10k now, 180 s ahead 19k, plus √(572 × 19k / 0.5 s) = 4.7k spare → 3, not 2.
    history: series(9, (i) => ({ arrivalRate: 4000 + 750 * i, throughput: 4000 })),
    spec: prefill({ leadTimeSeconds: 180, maxForecastGrowth: 2 }),
    desired: 3,
    reason: /arrival-rate needs 3/,
  },
  {
    name: "same trend without lead time waits",
    history: series(9, (i) => ({ arrivalRate: 4000 + 750 * i, throughput: 4000 })),
    spec: prefill({ leadTimeSeconds: 0, maxForecastGrowth: 2 }),
    desired: 2,
    reason: /hold/,
  },
  {
    name: "capacity learned from a saturated pool overrides the prior",
    // A request waiting per replica: the pool delivers 5k per replica, so a steady 15k needs 3 (the 10k prior would say 2).
    history: series(5, () => ({ arrivalRate: 15000, throughput: 10000, queueDepth: 2 })),
    spec: prefill(),
    desired: 3,
    reason: /arrival-rate needs 3/,
  },
  {
    name: "decode: running sequences over the per-replica limit",
    history: series(3, () => ({ running: 50, arrivalRate: 2, throughput: 2 })),
    spec: decode(),
    desired: 4,
    reason: /running-sequences needs 4/,
  },
  {
    name: "decode: KV memory over its limit",
    history: series(3, () => ({ running: 10, kvUtilizationPercent: 95, arrivalRate: 1, throughput: 1 })),
    spec: decode(),
    desired: 3,
    reason: /kv-memory needs 3/,
  },
  {
    name: "decode: ITL breach lowers the learned sequences per replica",
    // 16 per replica at 100 ms against 50 ms → 8 per replica → 32 running need 4.
    history: series(3, () => ({ running: 32, itlP90: 0.1, arrivalRate: 1, throughput: 1 })),
    spec: decode(),
    desired: 4,
    reason: /needs 4/,
  },
  {
    name: "decode: quiet pool holds inside the band",
    history: series(3, () => ({ running: 28, arrivalRate: 1, throughput: 1 })),
    spec: decode(),
    desired: 2,
    reason: /hold/,
  },
];

for (const c of cases) {
  test(`recommendReplicas: ${c.name}`, () => {
    const d = recommendReplicas(c.history, c.spec);
    assert.equal(d.desired, c.desired, d.reason);
    assert.match(d.reason, c.reason);
    assert.equal(d.inputs.current, c.spec.current);
  });
}

test("every decision records its inputs", () => {
  const d = recommendReplicas(steady(40000), prefill());
  assert.equal(d.inputs.arrivalRate, 40000);
  assert.equal(d.inputs.capacityPerReplica, 10000);
  assert.equal(d.inputs.capacitySource, "prior");
  assert.deepEqual(d.inputs.signals, { "arrival-rate": 4, queue: 0, ttft: 0 });
  assert.equal(d.inputs.raw, 4);
});

test("arrivalTrend fits a line; forecastRate never projects a fall and caps growth", () => {
  const rising = series(5, (i) => ({ arrivalRate: 100 + 15 * i }));
  assert.deepEqual(arrivalTrend(rising), { fitted: 160, slope: 1 });
  assert.equal(forecastRate(rising, 60).rate, 220);
  assert.equal(forecastRate(rising, 6000).rate, 320, "capped at twice the fitted rate");
  const falling = series(5, (i) => ({ arrivalRate: 500 - 50 * i }));
  assert.equal(forecastRate(falling, 600).rate, 300);
  const noisy = series(8, (i) => ({ arrivalRate: [100, 300, 120, 280, 90, 310, 110, 290][i] ?? 0 }));
  assert.equal(arrivalTrend(noisy).slope, 0, "a slope inside the noise is no trend");
  assert.equal(forecastRate(noisy, 600).rate, 290);
});

test("learnedCapacity: a high quantile of saturated samples, else the prior raised to what was served", () => {
  // Saturated (2 waiting on 2 replicas) at 5k, 6k, 7k per replica: each a lower bound, the highest wins.
  assert.deepEqual(
    learnedCapacity(
      series(3, (i) => ({ throughput: 10000 + 2000 * i, queueDepth: 2 })),
      9000,
    ),
    { perReplica: 7000, source: "saturated" },
  );
  // One request waiting on two replicas is a burst, not saturation: the prior holds.
  assert.deepEqual(
    learnedCapacity(
      series(3, () => ({ throughput: 10000, queueDepth: 1 })),
      9000,
    ),
    { perReplica: 9000, source: "prior" },
  );
  assert.deepEqual(
    learnedCapacity(
      series(3, () => ({ throughput: 24000 })),
      9000,
    ),
    { perReplica: 12000, source: "observed-lower-bound" },
  );
  assert.deepEqual(learnedCapacity([], 9000), { perReplica: 9000, source: "prior" });
  assert.equal(
    learnedRunningCapacity(
      series(1, () => ({ running: 40, itlP90: 0.2 })),
      16,
      0.05,
    ),
    5,
  );
  assert.equal(
    learnedRunningCapacity(
      series(1, () => ({ running: 40, itlP90: 0.01 })),
      16,
      0.05,
    ),
    16,
  );
});

test("arrivalDispersion: burstiness from interval-to-interval swings, not from a moving rate", () => {
  // Swings of 4k tokens/s × 15 s = 60k tokens: (60k)² / 2 per pair, over the work of the nine later intervals.
  const work = bursty(20000)
    .slice(1)
    .reduce((sum, o) => sum + o.arrivalRate * 15, 0);
  assert.equal(arrivalDispersion(bursty(20000)), (9 * (4000 * 15) ** 2) / 2 / work);
  assert.equal(arrivalDispersion(steady(40000)), 0, "a steady rate has no bursts");
  const ramp = series(9, (i) => ({ arrivalRate: 4000 + 750 * i }));
  assert.ok((arrivalDispersion(ramp) ?? Infinity) < 1000, "a ramp moves the rate but is barely bursty");
  assert.equal(arrivalDispersion(series(3, () => ({ arrivalRate: 100 }))), undefined, "too short to tell");
});

test("square-root staffing: a bigger pool runs hotter at the same burstiness", () => {
  const need = (mean: number): number => recommendReplicas(bursty(mean), prefill({ max: 100, priorCapacityPerReplica: 10000 })).desired;
  const small = 20000 / (need(20000) * 10000);
  const big = 200000 / (need(200000) * 10000);
  assert.ok(big > small + 0.2, `utilisation ${small.toFixed(2)} at 20k, ${big.toFixed(2)} at 200k`);
});
