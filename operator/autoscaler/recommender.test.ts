import { test } from "node:test";
import assert from "node:assert/strict";
import { recommendReplicas } from "./recommender.ts";
import { arrivalDispersion, dispersionUpperBound, arrivalTrend, erlangC, forecastRate, learnedCapacity, learnedRunningCapacity, prefillRate, rateSwing, waitBeyond } from "./signals.ts";
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
  // Steady 40k tokens/s: 4 replicas of 10k would run at 100 % and never catch up; with no bursts, 5 wait for nothing.
  { name: "arrival rate scales up", history: steady(40000), spec: prefill(), desired: 5, reason: /scale up: queueing-delay needs 5/ },
  // On the first observation (no swing between intervals yet), a fixed 75% utilisation: 40k / 7.5k → 6.
  {
    name: "first observation plans for targetUtilization",
    history: steady(40000).slice(0, 1),
    spec: prefill(),
    desired: 6,
    reason: /scale up: queueing-delay needs 6/,
  },
  // With a TTFT p90 of 1 s on the first observation, a request's own prefill (10k tokens at the
  // 10k prior) is the burstiness planned for: 0.67 % would wait over 0.5 s at 7 replicas, 0.108 %
  // at 8 (over the 0.1 % budget), 0.016 % at 9.
  {
    name: "first observation with a TTFT: its prefill work is the least burstiness",
    history: series(1, () => ({ arrivalRate: 40000, throughput: 20000, ttftP90: 1 })),
    spec: prefill({ missBudget: 0.001 }),
    desired: 9,
    reason: /scale up: queueing-delay needs 9/,
  },
  // Bursty 20k (index of dispersion 6.07k tokens): at 4 replicas a request waits with Erlang C
  // 0.17 and beyond 0.5 s with e^(−2 × 20k × 0.5 / 6.07k) = 0.037, 0.6 % > 0.1 %; at 5, 0.04 %.
  // (These bursty cases plan on the dispersion as learned, as over a full window: dispersionConfidence 0;
  // and on a 0.1 % miss budget, below the default 0.3 %, to show the arithmetic.)
  { name: "bursts ask for spare replicas", history: bursty(20000), spec: prefill({ dispersionConfidence: 0, missBudget: 0.001 }), desired: 5, reason: /queueing-delay needs 5/ },
  // The same 150 s of history as a new pool sees it: 9 intervals are few, so the upper 90 % bound
  // of the dispersion is planned on (× 9 / χ²₉(10 %) = 2.16: 13.1k tokens) → 6.
  { name: "a short history plans on the upper bound of its burstiness", history: bursty(20000), spec: prefill({ missBudget: 0.001 }), desired: 6, reason: /queueing-delay needs 6/ },
  // The same bursts with a 5 % miss budget: 4 replicas' 0.6 % is within it.
  { name: "a looser miss budget asks for fewer", history: bursty(20000), spec: prefill({ missBudget: 0.05, dispersionConfidence: 0 }), desired: 4, reason: /queueing-delay needs 4/ },
  // The same 20k in bursts ten times the size (dispersion 60.7k: prompts ten times as long): 8.
  {
    name: "bigger bursts of the same work ask for more",
    history: series(10, (i) => ({ arrivalRate: 20000 + (i % 2 === 0 ? 6325 : -6325), throughput: 12000 })),
    spec: prefill({ dispersionConfidence: 0, missBudget: 0.001 }),
    desired: 8,
    reason: /queueing-delay needs 8/,
  },
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
    // A 6k-token prompt takes 0.6 s on an idle replica: TTFT over the SLO is not fed back (that
    // would ask 2 × 0.6 / 0.5 → 3); it only sets the least burstiness, 6k tokens, for which 2 do.
    name: "TTFT over the SLO alone does not scale (it includes each request's own prefill)",
    history: series(3, () => ({ ttftP90: 0.6, arrivalRate: 1000, throughput: 1000 })),
    spec: prefill(),
    desired: 2,
    reason: /hold/,
  },
  {
    name: "queue wait over the SLO scales up proportionally, at most 2x",
    history: series(3, () => ({ queueWaitP90: 0.75, ttftP90: 0.6, arrivalRate: 1000, throughput: 1000 })),
    spec: prefill(),
    desired: 3,
    reason: /queue-wait needs 3/,
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
    reason: /scale down: queueing-delay/,
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
    // A burst learned into the swing would hold 3 replicas for the 15 minutes it stays in the
    // history; a pool with nothing at all to do for the whole window goes to its minimum.
    name: "idle for the window after a burst scales down to min",
    history: [
      ...series(4, (i) => ({ arrivalRate: i % 2 === 0 ? 30000 : 0, throughput: 12000, queueDepth: 4, recommendation: 3 })),
      ...series(21, (i) => ({ at: 60 + i * 15, recommendation: 3 })),
    ],
    spec: prefill({ current: 3 }),
    desired: 1,
    reason: /scale down to min 1: idle/,
  },
  {
    // ... and stays there: the swing must not scale it straight back up while nothing arrives.
    name: "idle at min after a burst holds min",
    history: [
      ...series(4, (i) => ({ arrivalRate: i % 2 === 0 ? 30000 : 0, throughput: 12000, queueDepth: 4, recommendation: 3 })),
      ...series(21, (i) => ({ at: 60 + i * 15, recommendation: 1 })),
    ],
    spec: prefill({ current: 1 }),
    desired: 1,
    reason: /hold at min 1: idle/,
  },
  {
    name: "scale from zero on a queued request",
    history: series(2, () => ({ readyReplicas: 0, queueDepth: 1 })),
    spec: prefill({ min: 0, current: 0 }),
    desired: 1,
    reason: /queue/,
  },
  {
    // +1k tokens/s every 15 s: the 60 s mean (13.5k now) moved by ~3.7k over each 60 s lead time,
    // so 17.2k is planned for → 3, where the same history without a lead time holds 2.
    name: "a rate that moved over one lead time plans that much headroom",
    history: series(12, (i) => ({ arrivalRate: 4000 + 1000 * i, throughput: 4000 })),
    spec: prefill({ leadTimeSeconds: 60, dispersionConfidence: 0 }),
    desired: 3,
    reason: /queueing-delay needs 3/,
  },
  {
    name: "same history without lead time holds",
    history: series(12, (i) => ({ arrivalRate: 4000 + 1000 * i, throughput: 4000 })),
    spec: prefill({ leadTimeSeconds: 0, dispersionConfidence: 0 }),
    desired: 2,
    reason: /hold/,
  },
  {
    name: "capacity learned from a saturated pool overrides the prior",
    // A request waiting per replica: the pool delivers 5k per replica, so a steady 15k needs 4 (the 10k prior would say 2).
    history: series(5, () => ({ arrivalRate: 15000, throughput: 10000, queueDepth: 2 })),
    spec: prefill(),
    desired: 4,
    reason: /queueing-delay needs 4/,
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
  assert.deepEqual(d.inputs.signals, { "queueing-delay": 5, queue: 0, "queue-wait": 0 });
  assert.equal(d.inputs.raw, 5);
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

test("prefillRate: prompt tokens over prefill busy seconds, summed over the window, once a second of busy time is seen", () => {
  // A pool at 20 % utilisation never queues, yet its engines' busy time gives the rate.
  const light = series(4, () => ({ throughput: 3000, queueDepth: 0, prefillBusySeconds: 6, prefillBusyTokens: 90000 }));
  assert.equal(prefillRate(light), 15000);
  // A ratio of sums: an idle interval's few tokens do not outvote a busy one.
  assert.equal(prefillRate(series(2, (i) => (i === 0 ? { prefillBusySeconds: 0.01, prefillBusyTokens: 10 } : { prefillBusySeconds: 9.99, prefillBusyTokens: 149990 }))), 15000);
  assert.equal(prefillRate(series(3, () => ({ prefillBusySeconds: 0.2, prefillBusyTokens: 3000 }))), undefined, "0.6 s of busy time is too little");
  assert.equal(prefillRate(series(3, () => ({}))), undefined, "engines that do not export it");
  // It outranks saturation and the prior in learnedCapacity.
  assert.deepEqual(learnedCapacity([...light, ...series(2, () => ({ throughput: 10000, queueDepth: 4 }))], 9000), { perReplica: 15000, source: "prefill-busy-time" });
  assert.deepEqual(learnedCapacity(light, 30000), { perReplica: 15000, source: "prefill-busy-time" });
});

test("recommendReplicas: a quiet pool sizes from its engines' prefill rate, not the prior", () => {
  // 27k tokens/s on 3 replicas (9k each, under the 10k prior): 1.8 replicas' worth at the engines' 15k, 2.7 on the prior.
  const history = series(10, () => ({ readyReplicas: 3, arrivalRate: 27000, throughput: 27000, prefillBusySeconds: 27, prefillBusyTokens: 405000 }));
  const measured = recommendReplicas(history, prefill({ current: 6 }));
  assert.equal(measured.inputs.capacitySource, "prefill-busy-time");
  assert.equal(measured.inputs.capacityPerReplica, 15000);
  const prior = recommendReplicas(history.map(({ prefillBusySeconds: _s, prefillBusyTokens: _t, ...o }) => o), prefill({ current: 6 }));
  assert.equal(prior.inputs.capacitySource, "prior");
  assert.equal(measured.inputs.signals["queueing-delay"], 2);
  assert.equal(prior.inputs.signals["queueing-delay"], 3);
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

test("dispersionUpperBound: far above a handful of intervals' estimate, towards it as they grow", () => {
  assert.equal(dispersionUpperBound(1000, 5, 0), 1000, "z 0 plans on the estimate");
  assert.ok(Math.abs(dispersionUpperBound(1000, 1, 1.2816) / 1000 - 1 / 0.0158) < 1e-9, "one interval: χ²₁ 10 % quantile");
  let prev = Infinity;
  for (const k of [1, 2, 3, 5, 10, 40, 400]) {
    const b = dispersionUpperBound(1000, k, 1.2816);
    assert.ok(b > 1000 && b < prev, `bound at ${k} intervals: ${b}`);
    prev = b;
  }
  assert.ok(prev < 1100, `400 intervals: ${prev}`);
});

test("queueing-delay forecast: a bigger pool runs hotter at the same burstiness", () => {
  const need = (mean: number): number => recommendReplicas(bursty(mean), prefill({ max: 100, priorCapacityPerReplica: 10000 })).desired;
  const small = 20000 / (need(20000) * 10000);
  const big = 200000 / (need(200000) * 10000);
  assert.ok(big > small + 0.2, `utilisation ${small.toFixed(2)} at 20k, ${big.toFixed(2)} at 200k`);
});

test("erlangC and waitBeyond: textbook values, and more replicas never wait longer", () => {
  // M/M/2 at load 1: C = 1/3; M/M/1 at load 0.5: C = 0.5.
  assert.ok(Math.abs(erlangC(2, 1) - 1 / 3) < 1e-12);
  assert.ok(Math.abs(erlangC(1, 0.5) - 0.5) < 1e-12);
  assert.equal(erlangC(3, 3), 1);
  assert.equal(erlangC(3, 0), 0);
  // Exponential sizes of mean m (dispersion 2m): the M/M/c tail C·e^(−(cμ−λ)t/m).
  const m = 1000;
  assert.ok(Math.abs(waitBeyond(0.5, 2, { rate: 10000, capacity: 10000, dispersion: 2 * m }) - erlangC(2, 1) * Math.exp((-10000 * 0.5) / m)) < 1e-12);
  let last = 1;
  for (let n = 2; n < 10; n++) {
    const p = waitBeyond(0.5, n, { rate: 15000, capacity: 10000, dispersion: 30000 });
    assert.ok(p < last, `${n} replicas: ${p}`);
    last = p;
  }
  assert.equal(waitBeyond(0.5, 1, { rate: 15000, capacity: 10000, dispersion: 30000 }), 1, "over capacity every request waits");
});

test("rateSwing: how far the smoothed rate moves over one lead time", () => {
  assert.equal(rateSwing(steady(40000), 60, 60), 0);
  // +1500 per 15 s: the 60 s mean moves 6000 per 60 s once the window is full (less at the start).
  const swing = rateSwing(
    series(9, (i) => ({ arrivalRate: 4000 + 1500 * i })),
    60,
    60,
  );
  assert.ok(swing !== undefined && swing > 3000 && swing <= 6000, String(swing));
  assert.equal(rateSwing([], 60, 60), undefined);
});
