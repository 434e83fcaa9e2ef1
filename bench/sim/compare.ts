// The comparison the autoscale benchmark makes on one trace: our recommender, and each baseline
// swept over its threshold, all on the same replay; the cheapest setting of each that meets the
// attainment target is what ours is compared against. Also a clairvoyant bound: the fewest
// replicas per minute, chosen knowing the whole trace, that meet the same target.
import { FleetSim, type FleetConfig, type FleetResult, type Scaler } from "./fleet.ts";
import { handoffSeconds, prefillSeconds } from "./model.ts";
import { HpaUtilisationScaler, KedaQueueScaler, OursScaler, type OursSettings } from "./scalers.ts";
import type { TraceRequest } from "./trace.ts";

export const TARGET_ATTAINMENT = 0.99;
/** Thresholds in requests in flight per replica: fine near the knee, coarse beyond it. */
export const KEDA_THRESHOLDS = [0.25, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 1, 1.25, 1.5, 2, 4, 8];
export const HPA_TARGETS = [0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9];
/** The HPA's default scale-down stabilisation, then shorter windows a tuner might also try. */
export const BASELINE_WINDOWS = [300, 120, 60];

export type Row = Omit<FleetResult, "replicasPerMinute"> & { seconds: number };

export function run(reqs: TraceRequest[], cfg: FleetConfig, scaler: Scaler, quiet = false): { row: Row; timeline: number[] } {
  const t0 = performance.now();
  const { replicasPerMinute, ...r } = new FleetSim(reqs, cfg, scaler).run();
  const row = { ...r, seconds: (performance.now() - t0) / 1000 };
  const pct = (x: number): string => `${(100 * x).toFixed(2)}%`;
  if (!quiet)
    console.log(
      `${r.scaler.padEnd(30)} attainment ${pct(r.attainment).padStart(7)}  p90 ${r.ttftP90.toFixed(3)}s  p99 ${r.ttftP99.toFixed(3)}s  ` +
        `replica GPU-h ${r.replicaGpuHours.toFixed(2).padStart(7)}  node GPU-h ${r.nodeGpuHours.toFixed(1).padStart(6)}  peak ${r.peakReplicas}`,
    );
  return { row, timeline: replicasPerMinute };
}

export function cheapestMeeting(rows: Row[]): Row | undefined {
  return rows.filter((r) => r.attainment >= TARGET_ATTAINMENT).sort((a, b) => a.replicaGpuHours - b.replicaGpuHours)[0];
}

/**
 * Ours as the operator runs it: its shipped defaults (the capacity prior included; the bench tells
 * it no engine rate), learning capacity from the engines' prefill busy counters as it would.
 */
export function ours(cfg: FleetConfig, settings: OursSettings = {}, label = "default"): Scaler {
  const pool = {
    min: cfg.minReplicas,
    max: cfg.maxReplicas,
    sloSeconds: cfg.sloSeconds,
    provisioningSeconds: cfg.provisioningSeconds,
    loadSeconds: cfg.loadSeconds,
    gpusPerNode: cfg.gpusPerNode,
    minNodes: cfg.minNodes,
  };
  return new OursScaler(settings, pool, label);
}

export interface BaselineSweeps {
  keda: Row[];
  hpa: Row[];
  /** Both swept over BASELINE_WINDOWS too (not only the default 300 s). */
  kedaWindows: Row[];
  hpaWindows: Row[];
}

export function sweepBaselines(reqs: TraceRequest[], cfg: FleetConfig, quiet: boolean): BaselineSweeps {
  const [usual = 300, ...others] = BASELINE_WINDOWS;
  const keda = KEDA_THRESHOLDS.map((x) => run(reqs, cfg, new KedaQueueScaler(x, usual), quiet).row);
  const hpa = HPA_TARGETS.map((x) => run(reqs, cfg, new HpaUtilisationScaler(x, usual), quiet).row);
  const kedaWindows = others.flatMap((w) => KEDA_THRESHOLDS.map((x) => run(reqs, cfg, new KedaQueueScaler(x, w), true).row));
  const hpaWindows = others.flatMap((w) => HPA_TARGETS.map((x) => run(reqs, cfg, new HpaUtilisationScaler(x, w), true).row));
  return { keda, hpa, kedaWindows: [...keda, ...kedaWindows], hpaWindows: [...hpa, ...hpaWindows] };
}

/** Misses per minute with `n` replicas held all along, first-come first-served on the replica free first. */
function missesWithFixedPool(reqs: TraceRequest[], cfg: FleetConfig, n: number, minutes: number): number[] {
  const free = new Float64Array(n);
  const misses = new Array<number>(minutes).fill(0);
  const freeFirst = (): number => {
    let k = 0;
    for (let i = 1; i < n; i++) if ((free[i] ?? 0) < (free[k] ?? 0)) k = i;
    return k;
  };
  for (const r of reqs) {
    const k = freeFirst();
    const start = Math.max(free[k] ?? 0, r.at);
    free[k] = start + prefillSeconds(cfg.engine, r.promptTokens);
    const ttft = (free[k] ?? 0) + handoffSeconds(cfg.engine, r.promptTokens) - r.at;
    const m = Math.floor(r.at / 60);
    if ((cfg.sloKind === "ttft" ? ttft : start - r.at) > cfg.sloSeconds) misses[m] = (misses[m] ?? 0) + 1;
  }
  return misses;
}

function cheapestPlan(misses: number[][], lambda: number): { replicas: number; misses: number } {
  const minutes = misses[0]?.length ?? 0;
  let replicas = 0;
  let missed = 0;
  for (let m = 0; m < minutes; m++) {
    const costs = misses.map((row, i) => i + 1 + lambda * (row[m] ?? 0));
    const best = costs.indexOf(Math.min(...costs));
    replicas += best + 1;
    missed += misses[best]?.[m] ?? 0;
  }
  return { replicas, misses: missed };
}

/**
 * A lower bound no causal scaler reaches: replicas chosen per minute with the whole trace known,
 * ready at once (no load or provisioning), the target met over the trace (misses spent where
 * replicas are dearest, by a Lagrangian search). GPU-hours of replicas only. Its attainment is the
 * best any pool reaches on the trace (the largest pool tried misses nothing, or is the pool's max).
 */
export function clairvoyantBound(reqs: TraceRequest[], cfg: FleetConfig): { replicaGpuHours: number; attainment: number } {
  const minutes = Math.ceil((reqs[reqs.length - 1]?.at ?? 0) / 60) + 1;
  // Pools of 1, 2, … replicas, up to the first that misses nothing (or the pool's max).
  const misses: number[][] = [];
  for (let n = 1; n <= cfg.maxReplicas; n++) {
    const row = missesWithFixedPool(reqs, cfg, n, minutes);
    misses.push(row);
    if (row.every((x) => x === 0)) break;
  }
  const budget = (1 - TARGET_ATTAINMENT) * reqs.length;
  let best = { replicas: Infinity, misses: 0 };
  for (let lambda = 1e-4; lambda < 100; lambda *= 1.1) {
    const plan = cheapestPlan(misses, lambda);
    if (plan.misses <= budget && plan.replicas < best.replicas) best = plan;
  }
  return { replicaGpuHours: best.replicas / 60, attainment: 1 - best.misses / Math.max(1, reqs.length) };
}
