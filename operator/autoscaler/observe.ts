// From two scrapes of a pool to one observation for the recommender, and from a pool's spec to
// the recommender's spec. Pure: no client, no clock.
import type { EnginePool, GPUNodeGroup, Model, PoolRole } from "../api.ts";
import { desiredReplicas } from "../plan/pools.ts";
import { durationSeconds } from "./duration.ts";
import { quantileBetween, type PoolScrape } from "./scrape.ts";
import type { NodeGroupRoom, PoolObservation, RecommenderSpec } from "./types.ts";

export interface Scraped {
  at: number;
  scrape: PoolScrape;
}

/** Rates over the interval between `prev` and `cur`; counters that went down (a pod restarted) count from zero. */
export function observation(role: PoolRole, prev: Scraped, cur: Scraped, readyReplicas: number): PoolObservation {
  const dt = Math.max(1e-3, cur.at - prev.at);
  const delta = (a: number, b: number): number => (b >= a ? b - a : b);
  const work = role === "prefill" ? delta(prev.scrape.promptTokens, cur.scrape.promptTokens) : delta(prev.scrape.requests, cur.scrape.requests);
  const latency =
    role === "prefill"
      ? quantileBetween(prev.scrape.ttftBuckets, cur.scrape.ttftBuckets, 0.9)
      : quantileBetween(prev.scrape.itlBuckets, cur.scrape.itlBuckets, 0.9);
  const busy = role === "prefill" ? { prefillBusySeconds: delta(prev.scrape.prefillSeconds, cur.scrape.prefillSeconds), prefillBusyTokens: delta(prev.scrape.prefillTokens, cur.scrape.prefillTokens) } : {};
  return {
    at: cur.at,
    readyReplicas,
    ...busy,
    // The engines count work as it is accepted; over a 15 s interval that is what the pool served.
    arrivalRate: work / dt,
    throughput: work / dt,
    queueDepth: cur.scrape.queueDepth,
    running: cur.scrape.running,
    ...(role === "prefill" ? { ttftP90: latency } : { itlP90: latency }),
  };
}

export interface SpecInputs {
  pool: EnginePool;
  role: PoolRole;
  model?: Model;
  nodeGroup?: GPUNodeGroup;
  modelLoadSeconds: number;
  /**
   * GPUs the pools on the node group want now, this pool's current replicas included (default:
   * the group's status.gpuDemand, which trails scales made since it was written).
   */
  groupDemand?: number;
}

/** The node group's room for the pool (types.ts NodeGroupRoom); undefined until the group's status says what is ready. */
function nodeGroupRoom(s: SpecInputs, current: number): NodeGroupRoom | undefined {
  const g = s.nodeGroup;
  const readyGpus = g?.status?.gpuCapacity;
  if (!g || readyGpus === undefined) return undefined;
  const gpusPerReplica = s.pool.spec.gpusPerReplica ?? 1;
  const demand = s.groupDemand ?? g.status?.gpuDemand ?? current * gpusPerReplica;
  return { gpusPerNode: g.spec.gpusPerNode, readyGpus, otherDemand: Math.max(0, demand - current * gpusPerReplica), minNodes: g.spec.nodes.min, gpusPerReplica };
}

function withNodeGroup(s: SpecInputs, current: number): { nodeGroup?: NodeGroupRoom } {
  const room = nodeGroupRoom(s, current);
  return room ? { nodeGroup: room } : {};
}

export function recommenderSpec(s: SpecInputs): RecommenderSpec {
  const { pool, role } = s;
  const a = pool.spec.autoscaling as Record<string, unknown> | undefined;
  const str = (k: string): string | undefined => (typeof a?.[k] === "string" ? (a[k] as string) : undefined);
  const num = (k: string): number | undefined => (typeof a?.[k] === "number" ? (a[k] as number) : undefined);
  const slo = role === "prefill" ? (str("ttftP90") ?? s.model?.spec.slo?.ttftP90) : (str("itlP90") ?? s.model?.spec.slo?.itlP90);
  const provisioning = s.nodeGroup ? durationSeconds(s.nodeGroup.spec.provisioningTime, 180) : 0;
  const current = desiredReplicas(pool.spec.replicas);
  return {
    role,
    min: pool.spec.replicas.min,
    max: pool.spec.replicas.max,
    current,
    ...withNodeGroup(s, current),
    sloSeconds: durationSeconds(slo, role === "prefill" ? 0.5 : 0.05),
    maxQueuePerReplica: num("maxQueuePerReplica"),
    maxRunningPerReplica: num("maxRunningPerReplica"),
    maxKVUtilizationPercent: num("maxKVUtilizationPercent"),
    scaleDownStabilizationSeconds: durationSeconds(str("scaleDownStabilization"), 300),
    leadTimeSeconds: provisioning + s.modelLoadSeconds,
  };
}

/** Pools in mode external are left to HPA or KEDA. */
export function autoscaled(pool: EnginePool): boolean {
  return pool.spec.autoscaling?.mode !== "external";
}
