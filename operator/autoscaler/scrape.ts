// The autoscaler's metrics source: engine pods' Prometheus /metrics, parsed and summed per pool.
// Pluggable (MetricsSource): the HTTP implementation takes URLs, so tests and kwok clusters (fake
// pod IPs) can point it at any endpoint serving the engine's exposition format.

/** One scrape of a pool: counters and histogram buckets summed over its pods, gauges summed. */
export interface PoolScrape {
  /** Pods that answered. */
  pods: number;
  queueDepth: number;
  running: number;
  promptTokens: number;
  requests: number;
  /** Prompt tokens the engines' native steps evaluated (llmfleet_engine_native_prefill_tokens_total; 0 where not exported). */
  prefillTokens: number;
  /** Seconds those steps took (llmfleet_engine_native_prefill_seconds_total): the pods' prefill busy time. */
  prefillSeconds: number;
  /** Cumulative bucket counts by upper bound ("+Inf" included), summed over pods. */
  ttftBuckets: Map<number, number>;
  itlBuckets: Map<number, number>;
}

export interface MetricsSource {
  scrape(urls: string[]): Promise<PoolScrape>;
}

/** Scrapes each URL on its own through `source`; a pod that fails or does not answer is left out. */
export async function scrapeEach(source: MetricsSource, urls: string[]): Promise<PodScrapes> {
  const each = await Promise.all(urls.map((u) => source.scrape([u]).catch(() => undefined)));
  const out: PodScrapes = new Map();
  urls.forEach((u, i) => {
    const s = each[i];
    if (s && s.pods > 0) out.set(u, s);
  });
  return out;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/;

function bucketBound(labels: string): number | undefined {
  const le = /le="([^"]+)"/.exec(labels)?.[1];
  if (le === undefined) return undefined;
  return le === "+Inf" ? Infinity : Number(le);
}

function addBucket(into: Map<number, number>, labels: string, value: number): void {
  const le = bucketBound(labels);
  if (le !== undefined) into.set(le, (into.get(le) ?? 0) + value);
}

type Scalar = "queueDepth" | "running" | "promptTokens" | "requests" | "prefillTokens" | "prefillSeconds";

const SCALARS: Record<string, Scalar> = {
  llmfleet_queue_depth: "queueDepth",
  llmfleet_running_sequences: "running",
  llmfleet_prompt_tokens_total: "promptTokens",
  llmfleet_requests_total: "requests",
  llmfleet_engine_native_prefill_tokens_total: "prefillTokens",
  llmfleet_engine_native_prefill_seconds_total: "prefillSeconds",
};

export function emptyScrape(): PoolScrape {
  return { pods: 0, queueDepth: 0, running: 0, promptTokens: 0, requests: 0, prefillTokens: 0, prefillSeconds: 0, ttftBuckets: new Map(), itlBuckets: new Map() };
}

/** Adds one pod's exposition text to `into`. */
export function parseExposition(text: string, into: PoolScrape): PoolScrape {
  for (const line of text.split("\n")) {
    const m = SAMPLE.exec(line);
    if (!m || line.startsWith("#")) continue;
    const [, name = "", labels = "", raw = "0"] = m;
    const value = Number(raw);
    const scalar = SCALARS[name];
    if (scalar) into[scalar] += value;
    else if (name === "llmfleet_ttft_seconds_bucket") addBucket(into.ttftBuckets, labels, value);
    else if (name === "llmfleet_inter_token_latency_seconds_bucket") addBucket(into.itlBuckets, labels, value);
  }
  into.pods++;
  return into;
}

/** One scrape per pod, keyed by its /metrics URL. */
export type PodScrapes = Map<string, PoolScrape>;

function addInto(into: PoolScrape, s: PoolScrape): void {
  into.pods += s.pods;
  for (const k of Object.values(SCALARS)) into[k] += s[k];
  for (const [le, v] of s.ttftBuckets) into.ttftBuckets.set(le, (into.ttftBuckets.get(le) ?? 0) + v);
  for (const [le, v] of s.itlBuckets) into.itlBuckets.set(le, (into.itlBuckets.get(le) ?? 0) + v);
}

/**
 * The pool's scrape now and, for the same pods, what they read before. Differencing two sums over
 * whichever pods answered is wrong whenever the set of pods changes: a pod removed by a
 * scale-down takes its counters out of the sum, which then reads as a reset, and the remaining
 * pods' whole counters counted as work of one interval (after a load ramp, a burst of thousands
 * of tokens a second that kept an idle pool from its minimum). A pod new since `before` counts
 * from zero: its counters started with it.
 */
export function pairScrapes(before: PodScrapes, now: PodScrapes): { prev: PoolScrape; cur: PoolScrape } {
  const prev = emptyScrape();
  const cur = emptyScrape();
  for (const [url, s] of now) {
    addInto(cur, s);
    const b = before.get(url);
    if (b) addInto(prev, b);
  }
  return { prev, cur };
}

/**
 * What to remember of each pod for the next pass: its scrape now, or, for a target that did not
 * answer this time, what it read last (so a pod that misses one scrape is not taken for a new pod
 * when it answers again). Pods no longer among the targets are forgotten.
 */
export function rememberScrapes(before: PodScrapes, now: PodScrapes, targets: readonly string[]): PodScrapes {
  const out: PodScrapes = new Map();
  for (const url of targets) {
    const s = now.get(url) ?? before.get(url);
    if (s) out.set(url, s);
  }
  return out;
}

/** The q-quantile of the observations between two cumulative bucket snapshots (linear within a bucket), or undefined when none. */
export function quantileBetween(before: Map<number, number>, after: Map<number, number>, q: number): number | undefined {
  const bounds = [...after.keys()].sort((a, b) => a - b);
  const counts = bounds.map((b) => Math.max(0, (after.get(b) ?? 0) - (before.get(b) ?? 0)));
  const total = counts[counts.length - 1] ?? 0;
  if (total <= 0) return undefined;
  const rank = q * total;
  const i = counts.findIndex((c) => c >= rank);
  const lower = i > 0 ? (bounds[i - 1] ?? 0) : 0;
  const prev = i > 0 ? (counts[i - 1] ?? 0) : 0;
  const upper = bounds[i] ?? Infinity;
  if (upper === Infinity) return lower;
  return lower + ((upper - lower) * (rank - prev)) / Math.max(1, (counts[i] ?? 0) - prev);
}

/** Scrapes each URL over HTTP; pods that fail or time out are left out (they are not serving). */
export class HttpMetricsSource implements MetricsSource {
  constructor(private readonly timeoutMs = 2000) {}

  async scrape(urls: string[]): Promise<PoolScrape> {
    const texts = await Promise.all(urls.map((u) => this.fetchText(u)));
    const out = emptyScrape();
    for (const t of texts) if (t !== undefined) parseExposition(t, out);
    return out;
  }

  private async fetchText(url: string): Promise<string | undefined> {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(this.timeoutMs) });
      return res.ok ? await res.text() : undefined;
    } catch {
      return undefined; // an unreachable pod contributes nothing; its absence shows in `pods`
    }
  }
}
