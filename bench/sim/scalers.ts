// The scalers the replay compares: llmfleet's recommender, and two baselines configured the way
// they are usually deployed for LLM pools — a KEDA-style scaler on requests in flight per replica
// and an HPA on GPU utilisation — both behind the HPA's default behaviour (scale-up at most
// max(2x, +4) per 15 s, 300 s scale-down stabilisation, 10% tolerance).
import type { EnginePool, GPUNodeGroup, Model } from "../../operator/api.ts";
import { recordAndRecommend } from "../../operator/autoscaler/controller.ts";
import { recommenderSpec } from "../../operator/autoscaler/observe.ts";
import type { PoolObservation, RecommenderSpec } from "../../operator/autoscaler/types.ts";
import type { FleetObservation, Scaler } from "./fleet.ts";

const HPA_STABILIZATION_SECONDS = 300;
const HPA_TOLERANCE = 0.1;

/** The HPA's default behaviour around a raw desired count. */
class HpaBehaviour {
  // Seeded so the warm pool is held for the first window, as llmfleet's recommender does after a
  // (re)start: every scaler gets the same start.
  private readonly recs: Array<{ at: number; n: number }> = [{ at: 0, n: Number.MAX_SAFE_INTEGER }];

  constructor(private readonly stabilizationSeconds = HPA_STABILIZATION_SECONDS) {}

  apply(at: number, current: number, raw: number): number {
    this.recs.push({ at, n: raw });
    while ((this.recs[0]?.at ?? at) < at - this.stabilizationSeconds) this.recs.shift();
    if (raw > current) return Math.min(raw, Math.max(2 * current, current + 4));
    return Math.min(current, Math.max(...this.recs.map((r) => r.n)));
  }
}

/** KEDA (Prometheus trigger, AverageValue): desired = ceil(in-flight requests / threshold). */
export class KedaQueueScaler implements Scaler {
  readonly name: string;
  private readonly hpa: HpaBehaviour;

  constructor(
    private readonly threshold: number,
    stabilizationSeconds = HPA_STABILIZATION_SECONDS,
  ) {
    this.name = `keda-inflight/${threshold}${stabilizationSeconds === HPA_STABILIZATION_SECONDS ? "" : `/stab${stabilizationSeconds}s`}`;
    this.hpa = new HpaBehaviour(stabilizationSeconds);
  }

  decide(o: FleetObservation): number {
    const inflight = o.queueDepth + o.busyFraction * o.ready;
    const raw = Math.ceil(inflight / this.threshold);
    const ratio = o.current > 0 ? raw / o.current : Infinity;
    return this.hpa.apply(o.at, o.current, Math.abs(ratio - 1) <= HPA_TOLERANCE ? o.current : raw);
  }
}

/** HPA on utilisation: desired = ceil(current * utilisation / target). */
export class HpaUtilisationScaler implements Scaler {
  readonly name: string;
  private readonly hpa: HpaBehaviour;

  constructor(
    private readonly target: number,
    stabilizationSeconds = HPA_STABILIZATION_SECONDS,
  ) {
    this.name = `hpa-utilisation/${target}${stabilizationSeconds === HPA_STABILIZATION_SECONDS ? "" : `/stab${stabilizationSeconds}s`}`;
    this.hpa = new HpaBehaviour(stabilizationSeconds);
  }

  decide(o: FleetObservation): number {
    const ratio = o.busyFraction / this.target;
    // Pods still loading have no utilisation; like the HPA, count on the ready ones.
    const base = Math.max(1, o.ready);
    const raw = Math.abs(ratio - 1) <= HPA_TOLERANCE ? o.current : Math.ceil(base * ratio);
    return this.hpa.apply(o.at, o.current, o.queueDepth > 0 && raw <= o.current ? o.current : raw);
  }
}

/** What the bench sets on our pool beside what the operator derives: any recommender knob under test. */
export type OursSettings = Partial<Omit<RecommenderSpec, "role" | "min" | "max" | "current" | "sloSeconds" | "leadTimeSeconds">>;

export interface OursPool {
  min: number;
  max: number;
  sloSeconds: number;
  provisioningSeconds: number;
  loadSeconds: number;
  gpusPerNode: number;
  minNodes: number;
}

/**
 * The recommender spec exactly as the operator's controller builds it (recommenderSpec), for a
 * PrefillPool in mode slo whose Model states `slo.ttftP90` and whose GPUNodeGroup states its
 * provisioning time, GPUs per node and minimum nodes (and, with `readyGpus`, the status that says
 * what is ready); `settings` then override single fields.
 */
export function operatorSpec(pool: OursPool, current: number, settings: OursSettings, readyGpus?: number): RecommenderSpec {
  const enginePool = {
    apiVersion: "llmfleet.dev/v1alpha1",
    kind: "PrefillPool",
    metadata: { name: "bench", namespace: "bench" },
    spec: { modelRef: { name: "bench" }, replicas: { min: pool.min, max: pool.max, desired: current }, autoscaling: { mode: "slo" } },
  } as unknown as EnginePool;
  const model = { spec: { slo: { ttftP90: `${pool.sloSeconds}s` } } } as unknown as Model;
  // The pool is the group's only one: the group's demand is the pool's own replicas.
  const status = readyGpus === undefined ? undefined : { gpuCapacity: readyGpus, gpuDemand: current };
  const nodeGroup = { spec: { provisioningTime: `${pool.provisioningSeconds}s`, gpusPerNode: pool.gpusPerNode, nodes: { min: pool.minNodes } }, status } as unknown as GPUNodeGroup;
  const spec = recommenderSpec({ pool: enginePool, role: "prefill", model, nodeGroup, modelLoadSeconds: pool.loadSeconds });
  return { ...spec, ...settings };
}

/** llmfleet's recommender behind the operator's own step (recordAndRecommend), fed what the engines' /metrics give every interval. */
export class OursScaler implements Scaler {
  readonly name: string;
  private readonly history: PoolObservation[] = [];

  constructor(
    private readonly settings: OursSettings,
    private readonly pool: OursPool,
    label = "default",
  ) {
    this.name = `llmfleet-slo/${label}`;
  }

  decide(o: FleetObservation): number {
    const obs: PoolObservation = {
      at: o.at,
      readyReplicas: o.ready,
      arrivalRate: o.arrivalTokensPerSecond,
      throughput: o.servedTokensPerSecond,
      queueDepth: o.queueDepth,
      ttftP90: o.ttftP90,
      prefillBusySeconds: o.prefillBusySeconds,
      prefillBusyTokens: o.prefillBusyTokens,
    };
    return recordAndRecommend(this.history, obs, operatorSpec(this.pool, o.current, this.settings, o.readyGpus)).desired;
  }
}
