// The scalers the replay compares: llmfleet's recommender, and two baselines configured the way
// they are usually deployed for LLM pools — a KEDA-style scaler on requests in flight per replica
// and an HPA on GPU utilisation — both behind the HPA's default behaviour (scale-up at most
// max(2x, +4) per 15 s, 300 s scale-down stabilisation, 10% tolerance).
import { recommendReplicas } from "../../operator/autoscaler/recommender.ts";
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

export type OursSettings = Omit<RecommenderSpec, "role" | "min" | "max" | "current">;

/** llmfleet's recommendReplicas, fed what the engines' /metrics give every interval. */
export class OursScaler implements Scaler {
  readonly name: string;
  private readonly history: PoolObservation[] = [];

  constructor(
    private readonly settings: OursSettings,
    private readonly bounds: { min: number; max: number },
    label = "default",
  ) {
    this.name = `llmfleet-slo/${label}`;
  }

  decide(o: FleetObservation): number {
    this.history.push({
      at: o.at,
      readyReplicas: o.ready,
      arrivalRate: o.arrivalTokensPerSecond,
      throughput: o.servedTokensPerSecond,
      queueDepth: o.queueDepth,
      ttftP90: o.ttftP90,
    });
    while ((this.history[0]?.at ?? o.at) < o.at - 900) this.history.shift();
    const d = recommendReplicas(this.history, { role: "prefill", ...this.bounds, current: o.current, ...this.settings });
    const last = this.history[this.history.length - 1];
    if (last) last.recommendation = d.inputs.raw;
    return d.desired;
  }
}
