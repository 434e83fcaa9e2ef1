// `npm run bench:autoscale -- --trace FILE [--out FILE]`: replays a request trace against a
// simulated prefill pool (bench/sim) under llmfleet's SLO autoscaler and two baselines, sweeps
// each baseline's threshold, and compares GPU-hours against the cheapest baseline setting that
// meets the TTFT SLO for at least 99% of requests. See docs/autoscaling.md for the model.
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { basename, dirname, resolve } from "node:path";
import { parseArgs } from "node:util";
import { FleetSim, type FleetConfig, type FleetResult, type Scaler } from "./sim/fleet.ts";
import { H100_7B } from "./sim/model.ts";
import { HpaUtilisationScaler, KedaQueueScaler, OursScaler } from "./sim/scalers.ts";
import { loadTrace, shapeTrace, type Shaping } from "./sim/trace.ts";

const ROOT = resolve(import.meta.dirname, "..");
const TARGET_ATTAINMENT = 0.99;
const KEDA_THRESHOLDS = [0.25, 0.35, 0.5, 0.75, 1, 2, 4, 8];
const HPA_TARGETS = [0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];
const OURS_UTILISATION = [0.5, 0.6, 0.75, 0.85, 0.9];
const OURS_DEFAULT = 0.75;

function options(): { trace: string; out: string; shaping: Shaping; cfg: FleetConfig } {
  const { values } = parseArgs({
    options: {
      trace: { type: "string", default: "/work/shared/traces/azure2023_conv.csv" },
      out: { type: "string", default: resolve(ROOT, "bench/results/autoscale.json") },
      amplify: { type: "string" },
      speedup: { type: "string", default: "1" },
      limit: { type: "string" },
      slo: { type: "string" },
      load: { type: "string", default: "60" },
      provisioning: { type: "string", default: "180" },
      "gpus-per-node": { type: "string", default: "8" },
    },
  });
  const trace = values.trace ?? "";
  const mooncake = trace.endsWith(".jsonl");
  // Azure's conversation hour is ~6k prompt tokens/s, under half a replica: ten tenants of that
  // shape make the pool scale. Mooncake's synthetic trace already needs several replicas.
  const amplify = Number(values.amplify ?? (mooncake ? 1 : 10));
  // Mooncake prompts average 15k tokens (1 s of prefill alone, p99 4 s): its SLO is looser.
  const slo = Number(values.slo ?? (mooncake ? 8 : 0.5));
  const provisioningSeconds = Number(values.provisioning);
  return {
    trace,
    out: values.out ?? "",
    shaping: { amplify, speedup: Number(values.speedup), limitSeconds: values.limit ? Number(values.limit) : undefined, seed: 42 },
    cfg: {
      engine: H100_7B,
      ttftSloSeconds: slo,
      loadSeconds: Number(values.load),
      provisioningSeconds,
      gpusPerNode: Number(values["gpus-per-node"]),
      minNodes: 1,
      nodeScaleDownDelaySeconds: 600,
      minReplicas: 1,
      maxReplicas: 128,
      initialReplicas: 1,
      decisionIntervalSeconds: 15,
    },
  };
}

function ours(cfg: FleetConfig, util: number): Scaler {
  return new OursScaler(
    {
      targetUtilization: util,
      sloSeconds: cfg.ttftSloSeconds,
      maxQueuePerReplica: 4,
      scaleDownStabilizationSeconds: 300,
      leadTimeSeconds: cfg.loadSeconds + cfg.provisioningSeconds,
      // The engine's measured prefill rate (GPU.md) as the prior; saturated intervals correct it.
      priorCapacityPerReplica: cfg.engine.prefillTokensPerSecond,
    },
    { min: cfg.minReplicas, max: cfg.maxReplicas },
  );
}

/**
 * Every scaler starts from the same warm pool: sized for the busiest of the first five minutes at
 * 70% of a replica's measured prefill rate, as a fleet already serving that traffic would be.
 * Otherwise the first minutes (the trace starts mid-traffic) decide every scaler's attainment.
 */
function warmStart(reqs: ReturnType<typeof loadTrace>, cfg: FleetConfig): number {
  const perMinute = [0, 0, 0, 0, 0];
  for (const r of reqs) {
    const m = Math.floor(r.at / 60);
    if (m < perMinute.length) perMinute[m] = (perMinute[m] ?? 0) + r.promptTokens / 60;
  }
  return Math.max(cfg.minReplicas, Math.ceil(Math.max(...perMinute) / (cfg.engine.prefillTokensPerSecond * 0.7)));
}

type Row = Omit<FleetResult, "replicasPerMinute"> & { seconds: number };

function run(reqs: ReturnType<typeof loadTrace>, cfg: FleetConfig, scaler: Scaler): { row: Row; timeline: number[] } {
  const t0 = performance.now();
  const { replicasPerMinute, ...r } = new FleetSim(reqs, cfg, scaler).run();
  const row = { ...r, seconds: (performance.now() - t0) / 1000 };
  const pct = (x: number): string => `${(100 * x).toFixed(2)}%`;
  console.log(
    `${r.scaler.padEnd(22)} attainment ${pct(r.attainment).padStart(7)}  p90 ${r.ttftP90.toFixed(3)}s  p99 ${r.ttftP99.toFixed(3)}s  ` +
      `replica GPU-h ${r.replicaGpuHours.toFixed(2).padStart(7)}  node GPU-h ${r.nodeGpuHours.toFixed(1).padStart(6)}  peak ${r.peakReplicas}  (${row.seconds.toFixed(1)}s)`,
  );
  return { row, timeline: replicasPerMinute };
}

function cheapestMeeting(rows: Row[]): Row | undefined {
  return rows.filter((r) => r.attainment >= TARGET_ATTAINMENT).sort((a, b) => a.replicaGpuHours - b.replicaGpuHours)[0];
}

interface Comparison {
  oursDefault?: { row: Row; timeline: number[] };
  best?: Row;
  ratio?: number;
  nodeRatio?: number;
}

function compare(oursRuns: Array<{ row: Row; timeline: number[] }>, baselines: Row[]): Comparison {
  const oursDefault = oursRuns[OURS_UTILISATION.indexOf(OURS_DEFAULT)];
  const best = cheapestMeeting(baselines);
  if (!oursDefault || !best) return { oursDefault, best };
  return { oursDefault, best, ratio: oursDefault.row.replicaGpuHours / best.replicaGpuHours, nodeRatio: oursDefault.row.nodeGpuHours / best.nodeGpuHours };
}

function report(c: Comparison): void {
  const best = c.best ? `${c.best.scaler} (${c.best.replicaGpuHours.toFixed(2)} replica GPU-h)` : "none reached 99%";
  console.log(`\nbest baseline at >=99% attainment: ${best}`);
  console.log(
    `llmfleet-slo (default ${OURS_DEFAULT}): attainment ${((c.oursDefault?.row.attainment ?? 0) * 100).toFixed(2)}%, ` +
      `GPU-hours ratio ours/best baseline = ${c.ratio?.toFixed(3) ?? "n/a"} (replica), ${c.nodeRatio?.toFixed(3) ?? "n/a"} (node)`,
  );
}

function main(): void {
  const { trace, out, shaping, cfg } = options();
  const started = performance.now();
  const reqs = shapeTrace(loadTrace(trace), shaping);
  const span = reqs[reqs.length - 1]?.at ?? 0;
  cfg.initialReplicas = warmStart(reqs, cfg);
  const tokens = reqs.reduce((s, r) => s + r.promptTokens, 0);
  console.log(
    `${basename(trace)}: ${reqs.length} requests over ${(span / 60).toFixed(1)} min, ${(tokens / span).toFixed(0)} prompt tokens/s (amplify ${shaping.amplify})`,
  );
  console.log(
    `TTFT SLO ${cfg.ttftSloSeconds}s; ${cfg.initialReplicas} warm replicas at start; model load ${cfg.loadSeconds}s; node provisioning ${cfg.provisioningSeconds}s; ${cfg.gpusPerNode} GPUs/node`,
  );
  const oursRuns = OURS_UTILISATION.map((u) => run(reqs, cfg, ours(cfg, u)));
  const keda = KEDA_THRESHOLDS.map((x) => run(reqs, cfg, new KedaQueueScaler(x)).row);
  const hpa = HPA_TARGETS.map((x) => run(reqs, cfg, new HpaUtilisationScaler(x)).row);
  const c = compare(oursRuns, [...keda, ...hpa]);
  report(c);
  const result = {
    date: new Date().toISOString(),
    machine: `${cpus().length} cores (${cpus()[0]?.model ?? "unknown"}), Node ${process.version}`,
    trace: basename(trace),
    shaping,
    config: cfg,
    requests: reqs.length,
    traceMinutes: span / 60,
    targetAttainment: TARGET_ATTAINMENT,
    ours: { default: c.oursDefault?.row, sweep: oursRuns.map((r) => r.row), cheapestMeeting: cheapestMeeting(oursRuns.map((r) => r.row)) },
    baselines: { keda, hpa, cheapestMeeting: c.best },
    ratio: { replicaGpuHours: c.ratio, nodeGpuHours: c.nodeRatio },
    timeline: { oursDefaultReplicasPerMinute: c.oursDefault?.timeline },
    wallSeconds: (performance.now() - started) / 1000,
  };
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`wrote ${out} in ${result.wallSeconds.toFixed(0)} s`);
}

main();
