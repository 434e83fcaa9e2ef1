// What the autoscaler observes about a pool and what it decides. Times are seconds on one
// monotonic clock; rates are per second.
import type { PoolRole } from "../api.ts";

export interface PoolObservation {
  /** When the observation was taken. */
  at: number;
  /** Pods serving (ready) when observed. */
  readyReplicas: number;
  /**
   * Work arriving per second. Prefill: prompt tokens/s (prompts differ 100× in size, requests do
   * not measure work). Decode: requests/s handed over by prefill.
   */
  arrivalRate: number;
  /** Work the pool completed per second, in the unit of arrivalRate. */
  throughput: number;
  /**
   * Prefill: seconds the pool's engines spent evaluating prompt tokens over the interval (summed
   * over pods), and the prompt tokens evaluated in them, when the engines export them: their
   * ratio is the rate a replica prefills at, known at any load.
   */
  prefillBusySeconds?: number;
  prefillBusyTokens?: number;
  /** Requests waiting across the pool's pods. */
  queueDepth: number;
  /** Sequences being served across the pool's pods. */
  running?: number;
  /** Observed TTFT p90 in seconds (prefill): reported, not acted on (it includes each request's own prefill). */
  ttftP90?: number;
  /** Observed p90 of the time requests waited before their prefill started, seconds (prefill), when the engines report it. */
  queueWaitP90?: number;
  /** Observed inter-token latency p90 in seconds (decode). */
  itlP90?: number;
  /** Mean KV-cache memory use across pods, percent (decode). */
  kvUtilizationPercent?: number;
  /** The raw recommendation made from this observation (before stabilisation); set by the caller after deciding. */
  recommendation?: number;
}

/** What the pool's GPU node group holds, for the GPUs its nodes leave idle (node-room.ts). */
export interface NodeGroupRoom {
  gpusPerNode: number;
  /** GPUs allocatable on the group's ready nodes (status.gpuCapacity). */
  readyGpus: number;
  /** GPUs the group's other pools want at their desired replicas. */
  otherDemand: number;
  /** Nodes the group keeps whatever the demand (spec.nodes.min). */
  minNodes: number;
  /** This pool's GPUs per replica. */
  gpusPerReplica: number;
}

export interface RecommenderSpec {
  role: PoolRole;
  min: number;
  max: number;
  /** Replicas asked for now (spec.replicas.desired). */
  current: number;
  /** TTFT p90 target (prefill) or ITL p90 target (decode), seconds. */
  sloSeconds: number;
  /** Prefill: waiting requests per replica above which the pool scales up. Default 4. */
  maxQueuePerReplica?: number;
  /** Decode: running sequences per replica above which the pool scales up. Default 16. */
  maxRunningPerReplica?: number;
  /** Decode: KV-memory use per replica above which the pool scales up. Default 85. */
  maxKVUtilizationPercent?: number;
  /** A lower recommendation must hold this long before replicas are removed. */
  scaleDownStabilizationSeconds: number;
  /** From asking for a replica to it serving: node provisioning (when a node is needed) plus model load. */
  leadTimeSeconds: number;
  /** History the forecast and capacity learning look at. Default 120 s. */
  windowSeconds?: number;
  /** Prefill: fraction of learned capacity to plan for until the burstiness is known (four observations). Default 0.75. */
  targetUtilization?: number;
  /** Relative band inside which a lower load does not remove replicas. Default 0.15. */
  hysteresis?: number;
  /**
   * Prefill: the share of requests the pool may let wait longer than the SLO at the forecast rate
   * (the queueing-delay forecast sizes the pool for it). Default 0.003. The forecast itself misses
   * part of the time; the headroom that absorbs it is the rate's swing, the dispersion's upper
   * bound while the history is short, and the idle GPUs of the pool's nodes (nodeGroup).
   */
  missBudget?: number;
  /** Prefill: the rate planned for is its mean plus this many times its swing over one lead time. Default 1. */
  swingQuantile?: number;
  /**
   * Prefill: while the history is shorter than the dispersion window, plan on this upper
   * confidence bound of the learned dispersion (a standard-normal quantile). Default 1.2816 (90 %).
   */
  dispersionConfidence?: number;
  /** History the burstiness (index of dispersion) is learned from. Default 600 s. */
  dispersionWindowSeconds?: number;
  /** The arrival rate planned for is its mean over this long. Default 60 s. */
  rateSmoothingSeconds?: number;
  /**
   * Prefill: the pool's node group, when known. A scale-up or hold is raised to the GPUs left idle
   * on the nodes the recommendation needs anyway (they are billed by the node), so long as they are
   * ready. Unset (no node group, or its status not yet written): no such raise.
   */
  nodeGroup?: NodeGroupRoom;
  /** Prefill: per-replica capacity (tokens/s) assumed until the pool has shown its own (its engines' prefill busy time, or saturation). Default 10000. */
  priorCapacityPerReplica?: number;
}

export interface DecisionInputs {
  current: number;
  readyReplicas: number;
  arrivalRate: number;
  forecastRate: number;
  trendPerSecond: number;
  queueDepth: number;
  running?: number;
  observedLatency?: number;
  sloSeconds: number;
  kvUtilizationPercent?: number;
  capacityPerReplica: number;
  capacitySource: string;
  leadTimeSeconds: number;
  /** Replicas each signal asks for (scale-up thresholds). */
  signals: Record<string, number>;
  raw: number;
}

export interface Decision {
  desired: number;
  reason: string;
  inputs: DecisionInputs;
}
