// A replay of a request trace against a prefill pool whose replicas come and go as a scaler
// decides, on GPU nodes that take time to provision. Stepped in 1 s ticks; within a tick
// requests are served first-come first-served by the replica free first, with exact start and
// finish times, so TTFT is not quantised by the tick. Every scaler replays the same requests on
// the same model; only its decisions differ.
import { handoffSeconds, prefillSeconds, type EngineModel } from "./model.ts";
import type { TraceRequest } from "./trace.ts";
import { NodePool, Replica } from "./nodes.ts";

/**
 * What a request's latency is held to: "queueing-delay" is TTFT minus the TTFT the request would
 * have on an idle replica (its own prefill, KV hand-off and first decode step), the part a
 * scaler can remove; "ttft" is the plain time to first token.
 */
export type SloKind = "queueing-delay" | "ttft";

export interface FleetConfig {
  engine: EngineModel;
  /** The SLO, seconds, on what sloKind names. */
  sloSeconds: number;
  sloKind: SloKind;
  /** Model load after a GPU is assigned, seconds. */
  loadSeconds: number;
  provisioningSeconds: number;
  gpusPerNode: number;
  minNodes: number;
  nodeScaleDownDelaySeconds: number;
  minReplicas: number;
  maxReplicas: number;
  /** Replicas (ready, on ready nodes) when the replay starts: every scaler starts from the same warm pool. */
  initialReplicas: number;
  decisionIntervalSeconds: number;
}

/** What a scaler sees every decision interval: what an engine's /metrics gives, rated over the interval. */
export interface FleetObservation {
  at: number;
  current: number;
  ready: number;
  arrivalTokensPerSecond: number;
  servedTokensPerSecond: number;
  arrivalRequestsPerSecond: number;
  queueDepth: number;
  /** Busy share of ready replicas over the interval (GPU utilisation). */
  busyFraction: number;
  /**
   * What the engines' llmfleet_engine_native_prefill_{seconds,tokens}_total counters add over the
   * interval, summed over replicas: the seconds replicas spent prefilling (the model's busy time,
   * per-request overhead included) and the prompt tokens prefilled in them.
   */
  prefillBusySeconds: number;
  prefillBusyTokens: number;
  /** GPUs on the node group's ready nodes (status.gpuCapacity); the pool is the group's only one. */
  readyGpus: number;
  ttftP90?: number;
}

export interface Scaler {
  readonly name: string;
  decide(o: FleetObservation): number;
}

export interface FleetResult {
  scaler: string;
  requests: number;
  /** Share of requests within the SLO, on cfg.sloKind. */
  attainment: number;
  /** Share of requests whose queueing delay is within the SLO. */
  queueAttainment: number;
  /** Share of requests whose plain TTFT is within the SLO. */
  ttftAttainment: number;
  queueDelayP90: number;
  queueDelayP99: number;
  ttftP50: number;
  ttftP90: number;
  ttftP99: number;
  replicaGpuHours: number;
  nodeGpuHours: number;
  peakReplicas: number;
  scaleUps: number;
  scaleDowns: number;
  /** Replicas asked for, one sample a minute. */
  replicasPerMinute: number[];
}

function quantile(sorted: Float64Array, q: number): number {
  return sorted.length === 0 ? 0 : (sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0);
}

interface Interval {
  arrivedTokens: number;
  arrivedRequests: number;
  servedTokens: number;
  busySeconds: number;
  readySeconds: number;
  ttfts: number[];
}

const emptyInterval = (): Interval => ({ arrivedTokens: 0, arrivedRequests: 0, servedTokens: 0, busySeconds: 0, readySeconds: 0, ttfts: [] });

export class FleetSim {
  private readonly nodes: NodePool;
  private readonly replicas: Replica[] = [];
  private readonly ttft: Float64Array;
  private readonly wait: Float64Array;
  private served = 0;
  private next = 0;
  private interval = emptyInterval();
  private desired: number;
  private readonly result = { peak: 0, ups: 0, downs: 0, perMinute: [] as number[] };

  constructor(
    private readonly reqs: TraceRequest[],
    private readonly cfg: FleetConfig,
    private readonly scaler: Scaler,
  ) {
    this.ttft = new Float64Array(reqs.length);
    this.wait = new Float64Array(reqs.length);
    this.nodes = new NodePool(cfg);
    this.desired = Math.max(cfg.minReplicas, cfg.initialReplicas);
    for (let i = 0; i < this.desired; i++) this.replicas.push(Replica.warm(i));
    this.nodes.reserveWarm(this.desired);
  }

  run(): FleetResult {
    let t = 0;
    while (this.served < this.reqs.length) {
      this.tick(t, t + 1);
      t += 1;
    }
    for (const r of this.replicas) r.release(t);
    this.nodes.finish(t);
    return this.summary();
  }

  /** After run(): requests over the SLO (on cfg.sloKind), by the minute they arrived in. */
  missesPerMinute(): number[] {
    const out: number[] = [];
    this.reqs.forEach((r, i) => {
      const m = Math.floor(r.at / 60);
      while (out.length <= m) out.push(0);
      const x = (this.cfg.sloKind === "ttft" ? this.ttft[i] : this.wait[i]) ?? 0;
      if (x > this.cfg.sloSeconds) out[m] = (out[m] ?? 0) + 1;
    });
    return out;
  }

  private tick(t: number, end: number): void {
    this.nodes.step(t, this.replicas);
    this.dispatch(end);
    const ready = this.replicas.filter((r) => r.serving(t)).length;
    this.interval.readySeconds += ready;
    if (t % 60 === 0) this.result.perMinute.push(this.desired);
    if (t > 0 && t % this.cfg.decisionIntervalSeconds === 0) this.decide(t, ready);
  }

  /** Serves arrivals before `end` in order, each on the serving replica free first, until none is free before `end`. */
  private dispatch(end: number): void {
    while (this.next < this.reqs.length) {
      const req = this.reqs[this.next];
      if (!req || req.at >= end) return;
      const replica = this.freeFirst();
      if (!replica || replica.availableAt() >= end) return;
      this.serve(req, replica);
    }
  }

  private freeFirst(): Replica | undefined {
    let best: Replica | undefined;
    for (const r of this.replicas) if (r.accepting() && (!best || r.availableAt() < best.availableAt())) best = r;
    return best;
  }

  private serve(req: TraceRequest, replica: Replica): void {
    const start = Math.max(replica.availableAt(), req.at);
    const busy = prefillSeconds(this.cfg.engine, req.promptTokens);
    replica.free = start + busy;
    const ttft = replica.free + handoffSeconds(this.cfg.engine, req.promptTokens) - req.at;
    this.ttft[this.next] = ttft;
    this.wait[this.next] = start - req.at;
    this.interval.ttfts.push(ttft);
    this.interval.servedTokens += req.promptTokens;
    this.interval.busySeconds += busy;
    this.next++;
    this.served++;
  }

  /** Requests arrived before t and not yet served. */
  private waiting(t: number): number {
    let queue = 0;
    for (let i = this.next; i < this.reqs.length && (this.reqs[i]?.at ?? Infinity) < t; i++) queue++;
    return queue;
  }

  /** Requests and prompt tokens that arrived in [from, to), the last of them at index `upTo - 1`. */
  private arrivals(upTo: number, from: number): { tokens: number; requests: number } {
    let tokens = 0;
    let requests = 0;
    for (let i = upTo - 1; i >= 0; i--) {
      const r = this.reqs[i];
      if (!r || r.at < from) break;
      tokens += r.promptTokens;
      requests++;
    }
    return { tokens, requests };
  }

  private observe(t: number, ready: number): FleetObservation {
    const span = this.cfg.decisionIntervalSeconds;
    const queue = this.waiting(t);
    const arrived = this.arrivals(this.next + queue, t - span);
    const iv = this.interval;
    const sorted = Float64Array.from(iv.ttfts).sort();
    return {
      at: t,
      current: this.desired,
      ready,
      arrivalTokensPerSecond: arrived.tokens / span,
      arrivalRequestsPerSecond: arrived.requests / span,
      servedTokensPerSecond: iv.servedTokens / span,
      queueDepth: queue,
      busyFraction: iv.readySeconds > 0 ? Math.min(1, iv.busySeconds / iv.readySeconds) : 0,
      prefillBusySeconds: iv.busySeconds,
      prefillBusyTokens: iv.servedTokens,
      readyGpus: this.nodes.readyGpus(t),
      ttftP90: sorted.length > 0 ? quantile(sorted, 0.9) : undefined,
    };
  }

  private decide(t: number, ready: number): void {
    const obs = this.observe(t, ready);
    this.interval = emptyInterval();
    const want = Math.max(this.cfg.minReplicas, Math.min(this.cfg.maxReplicas, Math.round(this.scaler.decide(obs))));
    if (want > this.desired) this.result.ups++;
    if (want < this.desired) this.result.downs++;
    this.desired = want;
    this.result.peak = Math.max(this.result.peak, want);
    this.resize(t, want);
  }

  private resize(t: number, want: number): void {
    const active = this.replicas.filter((r) => !r.leaving());
    for (let i = active.length; i < want; i++) this.replicas.push(new Replica(this.replicas.length));
    // Remove the least useful first: not yet serving (newest first), then the serving ones free soonest.
    const victims = active.sort((a, b) => b.readyAt - a.readyAt || a.availableAt() - b.availableAt()).slice(0, Math.max(0, active.length - want));
    for (const v of victims) v.drain(t);
  }

  private summary(): FleetResult {
    const sorted = Float64Array.from(this.ttft).sort();
    const waits = Float64Array.from(this.wait).sort();
    const within = (xs: Float64Array): number => xs.reduce((n, x) => n + (x <= this.cfg.sloSeconds ? 1 : 0), 0) / Math.max(1, this.reqs.length);
    const queueAttainment = within(this.wait);
    const ttftAttainment = within(this.ttft);
    return {
      scaler: this.scaler.name,
      requests: this.reqs.length,
      attainment: this.cfg.sloKind === "ttft" ? ttftAttainment : queueAttainment,
      queueAttainment,
      ttftAttainment,
      queueDelayP90: quantile(waits, 0.9),
      queueDelayP99: quantile(waits, 0.99),
      ttftP50: quantile(sorted, 0.5),
      ttftP90: quantile(sorted, 0.9),
      ttftP99: quantile(sorted, 0.99),
      replicaGpuHours: this.replicas.reduce((s, r) => s + r.gpuSeconds(), 0) / 3600,
      nodeGpuHours: this.nodes.gpuSeconds() / 3600,
      peakReplicas: this.result.peak,
      scaleUps: this.result.ups,
      scaleDowns: this.result.downs,
      replicasPerMinute: this.result.perMinute,
    };
  }
}
