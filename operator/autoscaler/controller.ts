// The SLO autoscaler's loop: every interval, for each pool in mode slo, scrape its engines,
// turn two scrapes into an observation, ask recommendReplicas, act only through the pool's /scale
// subresource, and record the decision in status.autoscaler and llmfleet_autoscaler_* metrics;
// each scale is also an Event on the pool.
// Pools in mode external are never touched. State is only the recent history per pool: after a
// restart the recommender holds replicas until it has seen a full stabilisation window.
import type { V1Pod } from "@kubernetes/client-node";
import { Registry } from "prom-client";
import type { EnginePool, PoolRole } from "../api.ts";
import type { Informer } from "../../lib/kube/informer.ts";
import { R } from "../../lib/kube/resources.ts";
import { nameOf, namespaceOf, type KubeObject } from "../../lib/kube/types.ts";
import { LABEL_INSTANCE } from "../plan/labels.ts";
import { cached, inNamespace, type Caches } from "../reconcilers/caches.ts";
import { applyStatus, canonical, fieldManager } from "../runtime/apply.ts";
import type { EventInput } from "../runtime/events.ts";
import type { Manager } from "../runtime/manager.ts";
import { markDeletionCosts } from "./deletion-cost.ts";
import { demandOnGroup } from "./node-room.ts";
import { createAutoscalerMetrics, type AutoscalerMetrics } from "./metrics.ts";
import { autoscaled, observation, recommenderSpec } from "./observe.ts";
import { recommendReplicas } from "./recommender.ts";
import { HttpMetricsSource, pairScrapes, rememberScrapes, scrapeEach, type MetricsSource, type PodScrapes } from "./scrape.ts";
import type { Decision, PoolObservation, RecommenderSpec } from "./types.ts";

export const ENGINE_METRICS_PORT = 8000;
const HISTORY_SECONDS = 900;

export interface AutoscalerOptions {
  /** Seconds between passes. Default 15. */
  intervalSeconds?: number;
  /** Where metrics come from. Default: HTTP scrapes of `targets`. */
  source?: MetricsSource;
  /** The /metrics URLs of a pool's engines. Default: http://<pod IP>:8000/metrics of its running pods. */
  targets?: (pool: EnginePool, role: PoolRole) => Promise<string[]>;
  /** One pod's /metrics URL, scraped on its own for its deletion cost before a scale-down. Default: http://<pod IP>:8000/metrics. */
  podMetricsUrl?: (pod: V1Pod) => string | undefined;
  /** Seconds a new replica spends loading its model, added to the node group's provisioningTime as lead time. Default 60. */
  modelLoadSeconds?: number;
  /** Registry for llmfleet_autoscaler_* metrics. Default: a new one. */
  registry?: Registry;
  /** Clock in milliseconds; injectable for tests. Default Date.now. */
  now?: () => number;
}

export interface Autoscaler {
  /** One pass over every pool (what the timer runs). */
  tick(): Promise<void>;
  stop(): void;
}

interface PoolState {
  /** When the last pass scraped, and what each of the pool's pods read then. */
  last?: { at: number; pods: PodScrapes };
  history: PoolObservation[];
}

/** "k=v,k2=v2" (the pools' status.selector: equality terms only) as a map. */
export function parseSelector(selector: string): Map<string, string> {
  const terms = selector.split(",").filter((t) => t !== "");
  return new Map(terms.map((t) => [t.slice(0, t.indexOf("=")), t.slice(t.indexOf("=") + 1)]));
}

/**
 * The /metrics URLs of a pool's running pods, from the informer's cache of our engine pods: a
 * LIST per pool per pass would cost the API server one request per pool every interval. The cache
 * is indexed by namespace and instance label, rebuilt after a pod changes.
 */
export function podTargets(pods: Informer<V1Pod>): (pool: EnginePool) => Promise<string[]> {
  let index: Map<string, V1Pod[]> | undefined;
  pods.on(() => (index = undefined));
  const byInstance = (): Map<string, V1Pod[]> => {
    if (index) return index;
    const built = new Map<string, V1Pod[]>();
    for (const p of pods.list()) {
      const k = `${namespaceOf(p)}/${p.metadata?.labels?.[LABEL_INSTANCE] ?? ""}`;
      const group = built.get(k) ?? [];
      group.push(p);
      built.set(k, group);
    }
    index = built;
    return built;
  };
  return (pool) => {
    const selector = pool.status?.selector;
    if (!selector) return Promise.resolve([]);
    const want = [...parseSelector(selector)];
    const candidates = byInstance().get(`${namespaceOf(pool)}/${nameOf(pool)}`) ?? [];
    const running = candidates.filter((p) => want.every(([k, v]) => p.metadata?.labels?.[k] === v) && p.status?.phase === "Running" && p.status.podIP);
    return Promise.resolve(running.map((p) => `http://${p.status?.podIP}:${ENGINE_METRICS_PORT}/metrics`));
  };
}

const stateKey = (pool: EnginePool, role: PoolRole): string => `${role}/${namespaceOf(pool)}/${nameOf(pool)}`;

class AutoscalerLoop implements Autoscaler {
  private readonly state = new Map<string, PoolState>();
  private readonly metrics: AutoscalerMetrics;
  private readonly source: MetricsSource;
  private readonly targets: (pool: EnginePool, role: PoolRole) => Promise<string[]>;
  private readonly now: () => number;
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  /**
   * GPUs this pass's scales added to each node group ("ns/name"): the informer has not seen them
   * yet, and the next pool on the group must not count the same idle GPUs as free.
   */
  private claimed = new Map<string, number>();

  constructor(
    private readonly manager: Manager,
    private readonly caches: Caches,
    private readonly opts: AutoscalerOptions,
  ) {
    this.metrics = createAutoscalerMetrics(opts.registry ?? new Registry());
    this.source = opts.source ?? new HttpMetricsSource();
    this.targets = opts.targets ?? podTargets(caches.pods);
    this.now = opts.now ?? Date.now;
  }

  start(): void {
    this.timer = setInterval(() => void this.tick(), (this.opts.intervalSeconds ?? 15) * 1000);
  }

  stop(): void {
    clearInterval(this.timer);
  }

  async tick(): Promise<void> {
    if (this.running || !this.manager.hasSynced()) return;
    this.running = true;
    try {
      const pools: Array<[EnginePool, PoolRole]> = [
        ...this.caches.prefillPools.list().map((p): [EnginePool, PoolRole] => [p, "prefill"]),
        ...this.caches.decodePools.list().map((p): [EnginePool, PoolRole] => [p, "decode"]),
      ];
      this.forgetDeleted(new Set(pools.map(([p, role]) => stateKey(p, role))));
      this.claimed = new Map();
      for (const [pool, role] of pools.filter(([p]) => autoscaled(p))) await this.pass(pool, role);
    } finally {
      this.running = false;
    }
  }

  /**
   * Drops the history and metric series of pools that no longer exist: kept, they are memory no
   * pool will read again (15 minutes of observations each; a teardown of 500 pools left them all).
   */
  private forgetDeleted(live: Set<string>): void {
    for (const key of this.state.keys()) {
      if (live.has(key)) continue;
      this.state.delete(key);
      const [role = "", namespace = "", pool = ""] = key.split("/");
      this.metrics.forget({ namespace, pool, role });
    }
  }

  /** One pool; a failure is counted and logged, and the next interval is the retry. */
  private async pass(pool: EnginePool, role: PoolRole): Promise<void> {
    const labels = { namespace: namespaceOf(pool), pool: nameOf(pool), role };
    try {
      await this.decide(pool, role);
    } catch (err) {
      this.metrics.error(labels);
      this.manager.log(`autoscaler ${role} pool ${labels.namespace}/${labels.pool}: ${String(err)}; retrying next interval`);
    }
  }

  private async decide(pool: EnginePool, role: PoolRole): Promise<void> {
    const key = stateKey(pool, role);
    const st = this.state.get(key) ?? { history: [] };
    this.state.set(key, st);
    const targets = await this.targets(pool, role);
    const at = this.now() / 1000;
    const pods = await scrapeEach(this.source, targets);
    const last = st.last;
    st.last = { at, pods: rememberScrapes(last?.pods ?? new Map(), pods, targets) };
    if (!last) return; // rates need two scrapes
    // Rates from each pod's own counters: the pool's pods change with every scale.
    const { prev, cur } = pairScrapes(last.pods, pods);
    const ns = namespaceOf(pool);
    const spec = this.specOf(pool, role);
    const d = recordAndRecommend(st.history, observation(role, { at: last.at, scrape: prev }, { at, scrape: cur }, pool.status?.readyReplicas ?? 0), spec);
    this.metrics.record({ namespace: ns, pool: nameOf(pool), role }, d);
    if (d.desired !== spec.current) await this.scale(pool, role, { from: spec.current, decision: d });
    this.claim(pool, d.desired - spec.current);
    await this.writeStatus(pool, role, d);
  }

  /** Records the GPUs a scale of `replicas` added to (or freed on) the pool's node group in this pass. */
  private claim(pool: EnginePool, replicas: number): void {
    const group = pool.spec.nodeGroupRef?.name;
    if (group === undefined || replicas === 0) return;
    const k = `${namespaceOf(pool)}/${group}`;
    this.claimed.set(k, (this.claimed.get(k) ?? 0) + replicas * (pool.spec.gpusPerReplica ?? 1));
  }

  private specOf(pool: EnginePool, role: PoolRole): RecommenderSpec {
    const ns = namespaceOf(pool);
    const group = pool.spec.nodeGroupRef?.name;
    return recommenderSpec({
      pool,
      role,
      model: cached(this.caches.models, ns, pool.spec.modelRef.name),
      nodeGroup: cached(this.caches.nodeGroups, ns, group),
      modelLoadSeconds: this.opts.modelLoadSeconds ?? 60,
      ...(group === undefined ? {} : { groupDemand: this.groupDemand(ns, group, pool, role) }),
    });
  }

  private groupDemand(ns: string, group: string, pool: EnginePool, role: PoolRole): number {
    const world = { prefillPools: inNamespace(this.caches.prefillPools, ns), decodePools: inNamespace(this.caches.decodePools, ns), models: inNamespace(this.caches.models, ns) };
    return demandOnGroup(group, { pool, role }, world, this.claimed.get(`${ns}/${group}`) ?? 0);
  }

  private async scale(pool: EnginePool, role: PoolRole, change: { from: number; decision: Decision }): Promise<void> {
    const r = role === "prefill" ? R.PrefillPool : R.DecodePool;
    const replicas = change.decision.desired;
    if (replicas < change.from) await this.markIdlest(pool);
    // Read-modify-write of the Scale object, as the HPA does: a PATCH of /scale fails with an
    // InternalError while spec.replicas.desired is still unset (the usual state of a new pool).
    const scale = await this.manager.client.get<KubeObject & { spec?: { replicas?: number } }>(r, namespaceOf(pool), nameOf(pool), "scale");
    await this.manager.client.replace(r, { ...scale, spec: { ...scale.spec, replicas } }, "llmfleet/autoscaler", "scale");
    this.manager.log(`autoscaler: ${role} pool ${namespaceOf(pool)}/${nameOf(pool)} -> ${replicas} replicas`);
    await this.manager.events.record(pool, scaleEvent(change.from, change.decision));
  }

  /**
   * Before a scale-down: each running pod's deletion cost becomes its requests in flight, so the
   * ReplicaSet removes the idlest pod (deletion-cost.ts). A failure is logged and the scale goes on:
   * the pod removed is then the ReplicaSet's own pick, and it still drains.
   */
  private async markIdlest(pool: EnginePool): Promise<void> {
    const selector = pool.status?.selector;
    if (!selector) return;
    try {
      const pods = await this.manager.client.list<V1Pod>(R.Pod, { namespace: namespaceOf(pool), labelSelector: selector });
      const running = pods.items.filter((p) => p.status?.phase === "Running" && !p.metadata?.deletionTimestamp);
      const url = this.opts.podMetricsUrl ?? ((p: V1Pod) => (p.status?.podIP ? `http://${p.status.podIP}:${ENGINE_METRICS_PORT}/metrics` : undefined));
      await markDeletionCosts(this.manager.client, running.map((pod) => ({ pod, url: url(pod) })), this.source);
    } catch (err) {
      this.manager.log(`autoscaler: pool ${namespaceOf(pool)}/${nameOf(pool)}: pod deletion costs not set: ${String(err)}`);
    }
  }

  /** status.autoscaler, written (as llmfleet/autoscaler) only when the decision differs from the recorded one. */
  private async writeStatus(pool: EnginePool, role: PoolRole, d: Decision): Promise<void> {
    const autoscaler = statusOf(d, new Date(this.now()).toISOString().replace(/\.\d+Z$/, "Z"));
    const recorded = pool.status?.autoscaler;
    if (recorded && canonical({ ...recorded, lastDecisionTime: "" }) === canonical({ ...autoscaler, lastDecisionTime: "" })) return;
    const r = role === "prefill" ? R.PrefillPool : R.DecodePool;
    const patch = { apiVersion: pool.apiVersion, kind: pool.kind, metadata: { name: nameOf(pool), namespace: namespaceOf(pool) }, status: { autoscaler } };
    await applyStatus(this.manager.client, { r, patch, manager: fieldManager("autoscaler"), stored: pool });
  }
}

/**
 * Appends an observation to a pool's history (kept to the last 15 minutes), decides, and notes the
 * raw recommendation on the observation for later stabilisation. Shared by this loop and the
 * local fleet of `npm start`.
 */
export function recordAndRecommend(history: PoolObservation[], obs: PoolObservation, spec: RecommenderSpec): Decision {
  history.push(obs);
  while ((history[0]?.at ?? obs.at) < obs.at - HISTORY_SECONDS) history.shift();
  const d = recommendReplicas(history, spec);
  obs.recommendation = d.inputs.raw;
  return d;
}

/** The Event of a scale, worded as the HPA words its own (reason SuccessfulRescale). */
export function scaleEvent(from: number, d: Decision): EventInput {
  return { type: "Normal", reason: "SuccessfulRescale", action: "Scale", note: `New size: ${d.desired} (was ${from}); reason: ${d.reason}` };
}

const round = (x: number): number => Number(x.toPrecision(4));

/** The decision as status: numbers rounded so noise below 0.1% does not rewrite status every interval. */
export function statusOf(d: Decision, time: string): NonNullable<EnginePool["status"]>["autoscaler"] {
  const { signals, capacitySource, ...numbers } = d.inputs;
  const inputs: Record<string, number> = {};
  for (const [k, v] of Object.entries(numbers)) if (typeof v === "number") inputs[k] = round(v);
  for (const [k, v] of Object.entries(signals)) inputs[`signal.${k}`] = v;
  return { lastDecisionTime: time, recommendedReplicas: d.desired, reason: d.reason, inputs, capacitySource };
}

/** Starts the autoscaler's timer; the returned handle stops it (and runs a pass on demand, for tests). */
export function registerAutoscaler(manager: Manager, caches: Caches, opts: AutoscalerOptions = {}): Autoscaler {
  const loop = new AutoscalerLoop(manager, caches, opts);
  loop.start();
  return loop;
}
