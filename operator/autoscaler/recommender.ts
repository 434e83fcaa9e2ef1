// recommendReplicas: the autoscaler's decision as a pure function of what a pool did (history)
// and what it must hold (spec). Each load signal asks for a number of replicas to scale up to and
// a (larger) number below which it lets replicas go: the gap between the two is the hysteresis.
// Scale-up is immediate and looks ahead over the lead time; scale-down waits out the
// stabilisation window (the highest recommendation in it wins), as the HPA does.
import { arrivalDispersion, forecastRate, learnedCapacity, learnedRunningCapacity, recent } from "./signals.ts";
import type { Decision, DecisionInputs, PoolObservation, RecommenderSpec } from "./types.ts";

/** Replicas one signal asks for: `up` to stay under its threshold, `down` before it allows fewer. */
interface Signal {
  name: string;
  up: number;
  down: number;
}

interface Load {
  inputs: Omit<DecisionInputs, "signals" | "raw" | "current">;
  signals: Signal[];
}

const LATENCY_STEP_MAX = 2;

/**
 * Prefill constants where the spec leaves them unset, chosen on the first half of the Azure
 * conversation trace by `npm run bench:autoscale -- --heldout` and checked on traces it was not
 * chosen on (BENCHMARKS.md).
 */
export const PREFILL_DEFAULTS = { burstQuantile: 1, rateSmoothingSeconds: 120, maxForecastGrowth: 1, dispersionWindowSeconds: 600 } as const;

function signal(name: string, load: number, perReplica: number, hysteresis: number): Signal {
  if (load <= 0 || perReplica <= 0) return { name, up: 0, down: 0 };
  return { name, up: Math.ceil(load / perReplica), down: Math.ceil(load / (perReplica * (1 - hysteresis))) };
}

/** Over its target the latency asks for proportionally more replicas (at most twice as many per step). */
function latencySignal(name: string, observed: number | undefined, target: number, ready: number): Signal {
  if (observed === undefined || observed <= target || ready === 0) return { name, up: 0, down: 0 };
  const n = Math.ceil(ready * Math.min(LATENCY_STEP_MAX, observed / target));
  return { name, up: n, down: n };
}

/**
 * Replicas for an offered load: `busy` replicas of work plus the spare that absorbs its bursts
 * within the SLO. Work arriving in a span τ (the SLO) has mean λτ and variance Dλτ (D: index of
 * dispersion); z standard deviations of it must fit in the pool's spare capacity, so the spare is
 * z·√(Dλ/τ)/capacity replicas, growing with the square root of the load (big pools run hotter).
 * Without a dispersion estimate yet, a fixed utilisation target.
 */
function staffingSignal(rate: number, capacity: number, spec: RecommenderSpec, dispersion: number | undefined): Signal {
  const h = spec.hysteresis ?? 0.15;
  if (rate <= 0 || capacity <= 0) return { name: "arrival-rate", up: 0, down: 0 };
  const z = spec.burstQuantile ?? PREFILL_DEFAULTS.burstQuantile;
  if (z <= 0 || dispersion === undefined) return signal("arrival-rate", rate, capacity * (spec.targetUtilization ?? 0.75), h);
  const need = (r: number): number => Math.ceil((r + z * Math.sqrt((dispersion * r) / spec.sloSeconds)) / capacity);
  return { name: "arrival-rate", up: need(rate), down: need(rate / (1 - h)) };
}

/**
 * A backlog asks for queue / maxQueuePerReplica replicas, at most twice the ready ones per step:
 * replicas arrive only after the lead time, by when the backlog is mostly served, so sizing the
 * pool to a momentary queue buys GPUs that idle through the stabilisation window.
 */
function queueSignal(queue: number, perReplica: number, ready: number, hysteresis: number): Signal {
  const s = signal("queue", queue, perReplica, hysteresis);
  const cap = LATENCY_STEP_MAX * Math.max(1, ready);
  return { name: s.name, up: Math.min(s.up, cap), down: Math.min(s.down, cap) };
}

function prefillLoad(history: PoolObservation[], window: PoolObservation[], spec: RecommenderSpec): Load {
  const last = history[history.length - 1] as PoolObservation;
  const h = spec.hysteresis ?? 0.15;
  // Capacity remembers every saturated moment the caller kept, not just the forecast window.
  const cap = learnedCapacity(history, spec.priorCapacityPerReplica ?? 10000);
  const fc = forecastRate(
    window,
    spec.leadTimeSeconds,
    spec.maxForecastGrowth ?? PREFILL_DEFAULTS.maxForecastGrowth,
    spec.rateSmoothingSeconds ?? PREFILL_DEFAULTS.rateSmoothingSeconds,
  );
  const signals = [
    staffingSignal(fc.rate, cap.perReplica, spec, arrivalDispersion(recent(history, spec.dispersionWindowSeconds ?? PREFILL_DEFAULTS.dispersionWindowSeconds))),
    queueSignal(last.queueDepth, spec.maxQueuePerReplica ?? 4, last.readyReplicas, h),
    latencySignal("ttft", last.ttftP90, spec.sloSeconds, last.readyReplicas),
  ];
  return {
    signals,
    inputs: {
      readyReplicas: last.readyReplicas,
      arrivalRate: last.arrivalRate,
      forecastRate: fc.rate,
      trendPerSecond: fc.trend.slope,
      queueDepth: last.queueDepth,
      observedLatency: last.ttftP90,
      sloSeconds: spec.sloSeconds,
      capacityPerReplica: cap.perReplica,
      capacitySource: cap.source,
      leadTimeSeconds: spec.leadTimeSeconds,
    },
  };
}

function decodeLoad(history: PoolObservation[], window: PoolObservation[], spec: RecommenderSpec): Load {
  const last = history[history.length - 1] as PoolObservation;
  const h = spec.hysteresis ?? 0.15;
  const perReplica = learnedRunningCapacity(window, spec.maxRunningPerReplica ?? 16, spec.sloSeconds);
  const fc = forecastRate(window, spec.leadTimeSeconds);
  // Little's law: running sequences grow with the arrival rate; the forecast scales them alike.
  const growth = last.arrivalRate > 0 ? fc.rate / last.arrivalRate : 1;
  const sequences = ((last.running ?? 0) + last.queueDepth) * growth;
  const kvLoad = (last.kvUtilizationPercent ?? 0) * last.readyReplicas * growth;
  const signals = [
    signal("running-sequences", sequences, perReplica, h),
    signal("kv-memory", kvLoad, spec.maxKVUtilizationPercent ?? 85, h),
    latencySignal("itl", last.itlP90, spec.sloSeconds, last.readyReplicas),
  ];
  return {
    signals,
    inputs: {
      readyReplicas: last.readyReplicas,
      arrivalRate: last.arrivalRate,
      forecastRate: fc.rate,
      trendPerSecond: fc.trend.slope,
      queueDepth: last.queueDepth,
      running: last.running,
      observedLatency: last.itlP90,
      kvUtilizationPercent: last.kvUtilizationPercent,
      sloSeconds: spec.sloSeconds,
      capacityPerReplica: perReplica,
      capacitySource: perReplica < (spec.maxRunningPerReplica ?? 16) ? "itl-breach" : "spec",
      leadTimeSeconds: spec.leadTimeSeconds,
    },
  };
}

function strongest(signals: Signal[], pick: (s: Signal) => number): Signal {
  return signals.reduce((best, s) => (pick(s) > pick(best) ? s : best), signals[0] ?? { name: "none", up: 0, down: 0 });
}

/** Quiet for the whole stabilisation window: nothing arrived, waited or ran, and the history spans the window. */
function idleFor(history: PoolObservation[], seconds: number): boolean {
  const first = history[0];
  const last = history[history.length - 1];
  if (!first || !last || last.at - first.at < seconds) return false;
  return recent(history, seconds).every((o) => o.arrivalRate === 0 && o.queueDepth === 0 && (o.running ?? 0) === 0);
}

/** The raw recommendation (before stabilisation and bounds) and why. */
function rawRecommendation(load: Load, current: number): { raw: number; reason: string } {
  const up = strongest(load.signals, (s) => s.up);
  if (up.up > current) return { raw: up.up, reason: `scale up: ${up.name} needs ${up.up}` };
  const down = strongest(load.signals, (s) => s.down);
  if (down.down >= current) return { raw: current, reason: `hold: ${down.name} is inside the hysteresis band` };
  return { raw: Math.max(down.down, up.up), reason: `scale down: ${down.name} needs only ${down.down}` };
}

/**
 * The highest raw recommendation within the stabilisation window, the current observation's
 * included. A history shorter than the window (a restart) holds the current replicas: what was
 * recommended before it is unknown.
 */
function stabilised(history: PoolObservation[], raw: number, spec: RecommenderSpec): number {
  const first = history[0];
  const last = history[history.length - 1];
  if (!first || !last || last.at - first.at < spec.scaleDownStabilizationSeconds) return spec.current;
  const window = recent(history, spec.scaleDownStabilizationSeconds).slice(0, -1);
  return Math.max(raw, ...window.map((o) => o.recommendation ?? 0));
}

function clamp(n: number, spec: RecommenderSpec): { desired: number; note: string } {
  if (n > spec.max) return { desired: spec.max, note: `; clamped to max ${spec.max}` };
  if (n < spec.min) return { desired: spec.min, note: `; raised to min ${spec.min}` };
  return { desired: n, note: "" };
}

function finish(raw: { raw: number; reason: string }, history: PoolObservation[], spec: RecommenderSpec): { desired: number; reason: string } {
  if (raw.raw >= spec.current) {
    const c = clamp(raw.raw, spec);
    return { desired: c.desired, reason: raw.reason + c.note };
  }
  const held = Math.min(spec.current, stabilised(history, raw.raw, spec));
  const reason = held > raw.raw ? `${raw.reason}; stabilising: ${held} recommended within ${spec.scaleDownStabilizationSeconds}s` : raw.reason;
  const c = clamp(held, spec);
  return { desired: c.desired, reason: reason + c.note };
}

/**
 * Desired replicas for a pool. `history` is ordered oldest first; its last entry is the current
 * observation, and earlier entries carry the raw recommendations made from them. An empty
 * history holds the current replicas within bounds.
 */
export function recommendReplicas(history: PoolObservation[], spec: RecommenderSpec): Decision {
  const last = history[history.length - 1];
  const window = recent(history, spec.windowSeconds ?? 120);
  if (!last) {
    const c = clamp(spec.current, spec);
    return { desired: c.desired, reason: `hold: no observations yet${c.note}`, inputs: emptyInputs(spec) };
  }
  const load = spec.role === "prefill" ? prefillLoad(history, window, spec) : decodeLoad(history, window, spec);
  const signals = Object.fromEntries(load.signals.map((s) => [s.name, s.up]));
  const quiet = spec.min === 0 && idleFor(history, spec.scaleDownStabilizationSeconds);
  const raw = quiet ? { raw: 0, reason: "scale to zero: idle for the stabilisation window" } : rawRecommendation(load, spec.current);
  const out = quiet ? { desired: 0, reason: raw.reason } : finish(raw, history, spec);
  return { desired: out.desired, reason: out.reason, inputs: { ...load.inputs, current: spec.current, signals, raw: raw.raw } };
}

function emptyInputs(spec: RecommenderSpec): DecisionInputs {
  return {
    current: spec.current,
    readyReplicas: 0,
    arrivalRate: 0,
    forecastRate: 0,
    trendPerSecond: 0,
    queueDepth: 0,
    sloSeconds: spec.sloSeconds,
    capacityPerReplica: 0,
    capacitySource: "none",
    leadTimeSeconds: spec.leadTimeSeconds,
    signals: {},
    raw: spec.current,
  };
}
