// The fair protocol of bench:autoscale: a scaler's settings are chosen on training traces only and
// scored on a trace it has not seen. A setting is chosen the way an operator would pick it from
// the traffic they have: among the settings that meet the attainment target on every training
// trace (99 %, or 0.5 point under the best that scaler reaches there when that is lower), the one cheapest on them (node GPU-hours, each trace's relative to its cheapest setting
// so a big trace does not outvote a small one); when none meets every target, the one that misses
// its worst trace by least.
import { TARGET_ATTAINMENT, type Row } from "./compare.ts";

/** The target on a trace: 99 %, or 0.5 point under the best any swept setting reaches there when that is lower. */
export function targetFor(bestReachable: number): number {
  return Math.min(TARGET_ATTAINMENT, bestReachable - 0.005);
}

export interface TrainingTrace {
  name: string;
  /** Every setting's result on this trace, by setting name. */
  rows: Map<string, Row>;
  target: number;
}

export interface Choice {
  setting: string;
  /** Met the target on every training trace. */
  metAll: boolean;
  /** Worst attainment − target over the training traces. */
  worstMargin: number;
  /** Mean over training traces of node GPU-hours ÷ the cheapest setting's there. */
  relativeCost: number;
}

const cost = (r: Row): number => r.nodeGpuHours + r.replicaGpuHours * 1e-3;

export function choose(settings: string[], training: TrainingTrace[]): Choice | undefined {
  const cheapest = training.map((t) => Math.min(...[...t.rows.values()].map(cost)));
  const scored = settings.map((setting): Choice => {
    let worstMargin = Infinity;
    let relative = 0;
    for (const [i, t] of training.entries()) {
      const r = t.rows.get(setting);
      if (!r) throw new Error(`setting ${setting} was not run on ${t.name}`);
      worstMargin = Math.min(worstMargin, r.attainment - t.target);
      relative += cost(r) / (cheapest[i] ?? 1);
    }
    return { setting, metAll: worstMargin >= 0, worstMargin, relativeCost: relative / Math.max(1, training.length) };
  });
  const met = scored.filter((c) => c.metAll).sort((a, b) => a.relativeCost - b.relativeCost);
  return met[0] ?? scored.sort((a, b) => b.worstMargin - a.worstMargin || a.relativeCost - b.relativeCost)[0];
}

/** On the scored trace itself (hindsight): the cheapest row meeting `target`. */
export function cheapestAt(rows: Row[], target: number): Row | undefined {
  return rows.filter((r) => r.attainment >= target).sort((a, b) => cost(a) - cost(b))[0];
}
