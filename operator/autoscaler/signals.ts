// Pure estimators the recommender builds on: a short linear forecast of the arrival rate and the
// per-replica capacity a pool has shown it delivers. Only math; no clock, no client.
import type { PoolObservation } from "./types.ts";

export interface Trend {
  /** Arrival rate fitted at the latest observation. */
  fitted: number;
  /** Change of the arrival rate per second (least squares over the window). */
  slope: number;
}

/** Observations no older than `windowSeconds` before the latest one. */
export function recent(history: PoolObservation[], windowSeconds: number): PoolObservation[] {
  const last = history[history.length - 1];
  if (!last) return [];
  return history.filter((o) => o.at > last.at - windowSeconds && o.at <= last.at);
}

/**
 * Least-squares line through (at, arrivalRate); a flat line when fewer than 3 points, no time
 * spread, or a slope that does not stand out of the noise (under two standard errors): noise
 * projected over minutes of lead time would otherwise buy replicas for load that never comes.
 */
export function arrivalTrend(window: PoolObservation[]): Trend {
  const n = window.length;
  const last = window[n - 1];
  if (!last) return { fitted: 0, slope: 0 };
  const meanT = window.reduce((s, o) => s + o.at, 0) / n;
  const meanR = window.reduce((s, o) => s + o.arrivalRate, 0) / n;
  const sxx = window.reduce((s, o) => s + (o.at - meanT) ** 2, 0);
  if (n < 3 || sxx === 0) return { fitted: last.arrivalRate, slope: 0 };
  const slope = window.reduce((s, o) => s + (o.at - meanT) * (o.arrivalRate - meanR), 0) / sxx;
  const residuals = window.reduce((s, o) => s + (o.arrivalRate - (meanR + slope * (o.at - meanT))) ** 2, 0);
  const stderr = Math.sqrt(residuals / (n - 2) / sxx);
  if (Math.abs(slope) < 2 * stderr) return { fitted: last.arrivalRate, slope: 0 };
  return { fitted: meanR + slope * (last.at - meanT), slope };
}

/** Mean arrival rate over the last `seconds` of the window: one 15 s sample of a bursty pool is mostly noise. */
export function arrivalLevel(window: PoolObservation[], seconds: number): number {
  const span = recent(window, Math.max(seconds, 1e-9));
  if (span.length === 0) return 0;
  return span.reduce((s, o) => s + o.arrivalRate, 0) / span.length;
}

/**
 * Arrival rate expected `leadSeconds` from now: the trend projected forward when it rises (never
 * below the level seen now, at most `maxGrowth` times it), the level seen now otherwise. The level
 * is the mean over the last `levelSeconds` (default: the last observation alone). Scaling down
 * never anticipates: a falling trend only counts once it has happened.
 */
export function forecastRate(window: PoolObservation[], leadSeconds: number, maxGrowth = 2, levelSeconds = 0): { rate: number; trend: Trend } {
  const trend = arrivalTrend(window);
  const now = arrivalLevel(window, levelSeconds);
  if (trend.slope <= 0 || leadSeconds <= 0) return { rate: now, trend };
  const projected = trend.fitted + trend.slope * leadSeconds;
  const cap = Math.max(now, trend.fitted) * maxGrowth;
  return { rate: Math.max(now, Math.min(projected, cap)), trend };
}

/**
 * Burstiness of the arrivals as an index of dispersion, in units of work: the variance of the work
 * arriving per interval over its mean. For independent requests it is E[size²]/E[size]; bursts of
 * correlated requests raise it. The variance is taken from differences of consecutive intervals
 * (Allan variance), so a rate that moves over minutes does not count as burstiness. Undefined with
 * fewer than `minIntervals` observations or no work.
 */
export function arrivalDispersion(window: PoolObservation[], minIntervals = 4): number | undefined {
  if (window.length < minIntervals) return undefined;
  let sq = 0;
  let work = 0;
  for (let i = 1; i < window.length; i++) {
    const a = window[i - 1] as PoolObservation;
    const b = window[i] as PoolObservation;
    const dt = b.at - a.at;
    sq += ((b.arrivalRate - a.arrivalRate) * dt) ** 2 / 2;
    work += b.arrivalRate * dt;
  }
  return work > 0 ? sq / work : undefined;
}

function median(xs: number[]): number | undefined {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
}

export interface Capacity {
  perReplica: number;
  source: "prefill-busy-time" | "saturated" | "prior" | "observed-lower-bound";
}

/** Busy time the engines must have reported before their prefill rate is trusted: a few requests' worth. */
export const MIN_PREFILL_BUSY_SECONDS = 1;

/**
 * The rate the pool's engines prefill at while they work: prompt tokens evaluated over the seconds
 * spent evaluating them, summed over the window (a ratio of sums, so a busy interval counts for
 * more than an idle one). Unlike saturation it needs no queue, so a pool held inside its SLO, which
 * rarely queues, learns it too. Undefined until MIN_PREFILL_BUSY_SECONDS of busy time were seen.
 */
export function prefillRate(window: PoolObservation[]): number | undefined {
  let seconds = 0;
  let tokens = 0;
  for (const o of window) {
    seconds += o.prefillBusySeconds ?? 0;
    tokens += o.prefillBusyTokens ?? 0;
  }
  return seconds >= MIN_PREFILL_BUSY_SECONDS && tokens > 0 ? tokens / seconds : undefined;
}

function quantile(xs: number[], q: number): number | undefined {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

/**
 * Work per second one replica delivers, learned from the pool itself. Where the engines report
 * their prefill busy time, its rate (prefillRate) is the capacity. Otherwise: while at least one request
 * per replica waits, the pool runs flat out, so throughput / ready replicas measures its capacity.
 * A pool never serves more than it can, and an interval saturated only part of the time reads low,
 * so every sample is a lower bound: the 90th percentile of the saturated samples is used (the
 * median would learn the pool's utilisation, and then ask for more replicas the idler they are).
 * Without saturated samples the prior holds, raised to the best per-replica throughput seen.
 */
export function learnedCapacity(window: PoolObservation[], prior: number): Capacity {
  const measured = prefillRate(window);
  if (measured !== undefined) return { perReplica: measured, source: "prefill-busy-time" };
  const withPods = window.filter((o) => o.readyReplicas > 0 && o.throughput > 0);
  const saturated = quantile(
    withPods.filter((o) => o.queueDepth >= o.readyReplicas).map((o) => o.throughput / o.readyReplicas),
    0.9,
  );
  if (saturated !== undefined) return { perReplica: saturated, source: "saturated" };
  const seen = Math.max(0, ...withPods.map((o) => o.throughput / o.readyReplicas));
  return seen > prior ? { perReplica: seen, source: "observed-lower-bound" } : { perReplica: prior, source: "prior" };
}

/**
 * Sequences one decode replica holds within its ITL target: the spec's limit, lowered to what the
 * pool showed when ITL exceeded the target (running per replica scaled by target / observed).
 */
export function learnedRunningCapacity(window: PoolObservation[], limit: number, itlTarget: number): number {
  const breaches = window.filter((o) => o.readyReplicas > 0 && (o.running ?? 0) > 0 && (o.itlP90 ?? 0) > itlTarget);
  const learned = median(breaches.map((o) => ((o.running ?? 0) / o.readyReplicas) * (itlTarget / (o.itlP90 ?? itlTarget))));
  return Math.max(1, Math.min(limit, learned ?? limit));
}

/**
 * Erlang's C formula: the probability that a request waits in a pool of `servers` replicas offered
 * `load` replicas' worth of work (load = arrival rate / capacity per replica); 1 when load ≥
 * servers. A fractional pool interpolates between its neighbours.
 */
export function erlangC(servers: number, load: number): number {
  if (load <= 0) return 0;
  if (load >= servers) return 1;
  const whole = (c: number): number => {
    if (load >= c) return 1;
    let b = 1;
    for (let k = 1; k <= c; k++) b = (load * b) / (k + load * b);
    return (c * b) / (c - load * (1 - b));
  };
  const lo = Math.floor(servers);
  const frac = servers - lo;
  return frac === 0 ? whole(lo) : (1 - frac) * whole(lo) + frac * whole(lo + 1);
}

/**
 * The lower quantile of χ² with `dof` degrees of freedom at the standard-normal quantile −z
 * (Wilson–Hilferty). It is poor below 3 degrees of freedom, so the exact 10 % quantiles (z =
 * 1.2816, the default) stand there.
 */
function chiSquareLower(dof: number, z: number): number {
  if (dof < 3 && Math.abs(z - 1.2816) < 1e-4) return dof <= 1 ? 0.0158 : 0.2107;
  return dof * Math.max(1e-3, 1 - 2 / (9 * dof) - z * Math.sqrt(2 / (9 * dof))) ** 3;
}

/**
 * An upper confidence bound on a dispersion estimated from `intervals` interval-to-interval
 * differences: the estimate is a sample variance, roughly χ² with that many degrees of freedom,
 * so from a handful of intervals it is mostly noise and often far too low (one quiet minute of a
 * bursty pool reads as smooth). `z` is the standard-normal quantile of the bound; the factor falls
 * towards 1 as the history grows.
 */
export function dispersionUpperBound(estimate: number, intervals: number, z: number): number {
  if (z <= 0 || intervals <= 0) return estimate;
  return (estimate * intervals) / chiSquareLower(intervals, z);
}

/** Work offered to a pool: `rate` work/s, `capacity` work/s per replica, `dispersion` (index of dispersion of the work, work units). */
export interface Work {
  rate: number;
  capacity: number;
  dispersion: number;
}

/**
 * Share of requests that wait longer than `slo` seconds in a pool of `servers` replicas offered `w`. The wait, when there is one, is exponential with the Allen–Cunneen G/G/c mean,
 * dispersion / (2 × spare capacity). The dispersion carries both the prompt-length mix (for
 * independent requests it is E[size²]/E[size]) and bursts of correlated arrivals, so the same
 * formula sizes a pool of short chat turns and one of 30k-token documents. The chance to wait is
 * Erlang C.
 */
export function waitBeyond(slo: number, servers: number, w: Work): number {
  const spare = servers * w.capacity - w.rate;
  if (spare <= 0) return 1;
  return erlangC(servers, w.rate / w.capacity) * Math.exp((-2 * spare * slo) / Math.max(w.dispersion, 1e-9));
}

/**
 * How far the arrival rate moves over `leadSeconds` (root mean square of the change of its
 * `levelSeconds` mean between observations that far apart), learned from the history: the
 * headroom a replica ordered now must cover by the time it serves. With less than two lead
 * times of history the lead is shortened to half the history; undefined with no pair at all.
 */
export function rateSwing(history: PoolObservation[], leadSeconds: number, levelSeconds: number): number | undefined {
  const first = history[0];
  const last = history[history.length - 1];
  if (!first || !last) return undefined;
  const lag = Math.min(leadSeconds, (last.at - first.at) / 2);
  if (lag <= 0) return undefined;
  const level = (i: number): number => arrivalLevel(history.slice(0, i + 1), levelSeconds);
  let sq = 0;
  let n = 0;
  for (let i = 0, j = 0; i < history.length; i++) {
    const at = (history[i] as PoolObservation).at;
    while (j < i && (history[j + 1] as PoolObservation).at <= at - lag) j++;
    if (at - (history[j] as PoolObservation).at < lag) continue;
    sq += (level(i) - level(j)) ** 2;
    n++;
  }
  return n > 0 ? Math.sqrt(sq / n) : undefined;
}
