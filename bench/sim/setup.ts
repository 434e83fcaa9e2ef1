// The replay's configuration as bench:autoscale and bench:autoscale-replay both run it: the
// simulated pool, nodes and SLO, and the warm pool every scaler starts from.
import type { FleetConfig, SloKind } from "./fleet.ts";
import { H100_7B } from "./model.ts";
import type { TraceRequest } from "./trace.ts";

export interface Flags {
  slo: number;
  sloKind: SloKind;
  load: number;
  provisioning: number;
  gpusPerNode: number;
}

/** bench:autoscale's defaults: a 0.5 s queueing-delay SLO, 60 s model load, 180 s node provisioning, 8-GPU nodes. */
export const DEFAULT_FLAGS: Flags = { slo: 0.5, sloKind: "queueing-delay", load: 60, provisioning: 180, gpusPerNode: 8 };

export function config(f: Flags): FleetConfig {
  return {
    engine: H100_7B,
    sloSeconds: f.slo,
    sloKind: f.sloKind,
    loadSeconds: f.load,
    provisioningSeconds: f.provisioning,
    gpusPerNode: f.gpusPerNode,
    minNodes: 1,
    nodeScaleDownDelaySeconds: 600,
    minReplicas: 1,
    maxReplicas: 128,
    initialReplicas: 1,
    decisionIntervalSeconds: 15,
  };
}

/**
 * Every scaler starts from the same warm pool: sized for the busiest of the first five minutes at
 * 70% of a replica's measured prefill rate, as a fleet already serving that traffic would be.
 */
export function warmStart(reqs: TraceRequest[], cfg: FleetConfig): number {
  const perMinute = [0, 0, 0, 0, 0];
  for (const r of reqs) {
    const m = Math.floor(r.at / 60);
    if (m < perMinute.length) perMinute[m] = (perMinute[m] ?? 0) + r.promptTokens / 60;
  }
  return Math.max(cfg.minReplicas, Math.ceil(Math.max(...perMinute) / (cfg.engine.prefillTokensPerSecond * 0.7)));
}
