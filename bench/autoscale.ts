// `npm run bench:autoscale -- --trace FILE [--out FILE] [--part all|first-half|second-half]`:
// replays a request trace against a simulated prefill pool (bench/sim) under llmfleet's SLO
// recommender and two baselines swept over their thresholds, and compares GPU-hours against the
// cheapest baseline setting that meets the TTFT SLO for at least 99% of requests.
// `--heldout`: chooses our constants on the first half of the Azure trace and reports on the
// second half and on Mooncake, each against baselines swept on that very part.
// See docs/autoscaling.md for the model.
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { basename, dirname, resolve } from "node:path";
import { parseArgs } from "node:util";
import { PREFILL_DEFAULTS } from "../operator/autoscaler/recommender.ts";
import { cheapestMeeting, clairvoyantBound, ours, run, sweepBaselines, TARGET_ATTAINMENT, type Row } from "./sim/compare.ts";
import type { FleetConfig } from "./sim/fleet.ts";
import { H100_7B } from "./sim/model.ts";
import type { OursSettings } from "./sim/scalers.ts";
import { loadTrace, shapeTrace, type Shaping, type TraceRequest } from "./sim/trace.ts";

const ROOT = resolve(import.meta.dirname, "..");
const AZURE = "/work/shared/traces/azure2023_conv.csv";
const MOONCAKE = "/work/shared/traces/mooncake_synthetic.jsonl";

/** What we set on our pool beside the recommender's defaults: the scale-down window chosen by --heldout. */
export const OURS_TUNED: Partial<OursSettings> = { scaleDownStabilizationSeconds: 60 };

/** The grid --heldout searches on the tuning part. */
const GRID = {
  burstQuantile: [0.75, 1, 1.25, 1.5],
  scaleDownStabilizationSeconds: [60, 120, 300],
  rateSmoothingSeconds: [30, 60, 120],
  maxForecastGrowth: [1, 1.5],
};

type Part = "all" | "first-half" | "second-half";

interface Setup {
  trace: string;
  part: Part;
  shaping: Shaping;
  cfg: FleetConfig;
}

interface Flags {
  amplify?: string;
  slo?: string;
  load?: string;
  provisioning?: string;
  "gpus-per-node"?: string;
}

/** The halves split the trace's span in two (in trace time, before shaping). */
function partWindow(trace: string, part: Part): Pick<Shaping, "limitSeconds" | "fromSeconds"> {
  if (part === "all") return {};
  const half = Math.floor((loadTrace(trace).at(-1)?.at ?? 0) / 2);
  return part === "first-half" ? { limitSeconds: half } : { fromSeconds: half };
}

function setup(trace: string, part: Part, f: Flags): Setup {
  const mooncake = trace.endsWith(".jsonl");
  // Azure's conversation hour is ~6k prompt tokens/s, under half a replica: ten tenants of that
  // shape make the pool scale. Mooncake's synthetic trace already needs several replicas.
  const amplify = Number(f.amplify ?? (mooncake ? 1 : 10));
  // Mooncake prompts average 15k tokens (1 s of prefill alone, p99 4 s): its SLO is looser.
  const slo = Number(f.slo ?? (mooncake ? 8 : 0.5));
  return {
    trace,
    part,
    shaping: { amplify, speedup: 1, seed: 42, ...partWindow(trace, part) },
    cfg: {
      engine: H100_7B,
      ttftSloSeconds: slo,
      loadSeconds: Number(f.load ?? 60),
      provisioningSeconds: Number(f.provisioning ?? 180),
      gpusPerNode: Number(f["gpus-per-node"] ?? 8),
      minNodes: 1,
      nodeScaleDownDelaySeconds: 600,
      minReplicas: 1,
      maxReplicas: 128,
      initialReplicas: 1,
      decisionIntervalSeconds: 15,
    },
  };
}

/**
 * Every scaler starts from the same warm pool: sized for the busiest of the first five minutes at
 * 70% of a replica's measured prefill rate, as a fleet already serving that traffic would be.
 * Otherwise the first minutes (the trace starts mid-traffic) decide every scaler's attainment.
 */
function warmStart(reqs: TraceRequest[], cfg: FleetConfig): number {
  const perMinute = [0, 0, 0, 0, 0];
  for (const r of reqs) {
    const m = Math.floor(r.at / 60);
    if (m < perMinute.length) perMinute[m] = (perMinute[m] ?? 0) + r.promptTokens / 60;
  }
  return Math.max(cfg.minReplicas, Math.ceil(Math.max(...perMinute) / (cfg.engine.prefillTokensPerSecond * 0.7)));
}

function requests(s: Setup): TraceRequest[] {
  const reqs = shapeTrace(loadTrace(s.trace), s.shaping);
  s.cfg.initialReplicas = warmStart(reqs, s.cfg);
  const span = reqs.at(-1)?.at ?? 0;
  const tokens = reqs.reduce((sum, r) => sum + r.promptTokens, 0);
  console.log(
    `\n${basename(s.trace)} (${s.part}): ${reqs.length} requests over ${(span / 60).toFixed(1)} min, ${(tokens / span).toFixed(0)} prompt tokens/s (amplify ${s.shaping.amplify}); ` +
      `TTFT SLO ${s.cfg.ttftSloSeconds}s; ${s.cfg.initialReplicas} warm replicas; load ${s.cfg.loadSeconds}s; provisioning ${s.cfg.provisioningSeconds}s; ${s.cfg.gpusPerNode} GPUs/node`,
  );
  return reqs;
}

const ratio = (a: number | undefined, b: number | undefined): number | undefined => (a !== undefined && b ? a / b : undefined);

/** Ours with `tuned` against the baselines swept on the same requests: the JSON the issue names, and the sweeps. */
function evaluate(s: Setup, tuned: Partial<OursSettings>): Record<string, unknown> {
  const reqs = requests(s);
  const mine = run(reqs, s.cfg, ours(s.cfg, tuned));
  const sweeps = sweepBaselines(reqs, s.cfg, false);
  const keda = cheapestMeeting(sweeps.keda);
  const hpa = cheapestMeeting(sweeps.hpa);
  const kedaAnyWindow = cheapestMeeting(sweeps.kedaWindows);
  const hpaAnyWindow = cheapestMeeting(sweeps.hpaWindows);
  const bound = clairvoyantBound(reqs, s.cfg);
  const m = mine.row;
  const line = (name: string, b: Row | undefined): string =>
    `${name}: ${b?.scaler ?? "none reached 99%"} ${b ? `${b.replicaGpuHours.toFixed(2)} GPU-h; ours/it = ${ratio(m.replicaGpuHours, b.replicaGpuHours)?.toFixed(3)}` : ""}`;
  console.log(`ours: attainment ${(m.attainment * 100).toFixed(2)}%, ${m.replicaGpuHours.toFixed(2)} replica GPU-h, ${m.nodeGpuHours.toFixed(1)} node GPU-h`);
  for (const [name, b] of [
    ["best KEDA (300 s window)", keda],
    ["best HPA (300 s window)", hpa],
    ["best KEDA (window swept too)", kedaAnyWindow],
    ["best HPA (window swept too)", hpaAnyWindow],
  ] as const)
    console.log(line(name, b));
  console.log(`clairvoyant bound: ${bound.replicaGpuHours.toFixed(2)} GPU-h (ours/bound = ${(m.replicaGpuHours / bound.replicaGpuHours).toFixed(3)})`);
  return {
    trace: basename(s.trace),
    part: s.part,
    gpu_hours: m.replicaGpuHours,
    gpu_hours_ratio_vs_keda: ratio(m.replicaGpuHours, keda?.replicaGpuHours),
    slo_attainment: m.attainment,
    slo_attainment_keda: keda?.attainment,
    gpu_hours_keda: keda?.replicaGpuHours,
    keda_setting: keda?.scaler,
    node_gpu_hours: m.nodeGpuHours,
    node_gpu_hours_ratio_vs_keda: ratio(m.nodeGpuHours, keda?.nodeGpuHours),
    gpu_hours_ratio_vs_hpa: ratio(m.replicaGpuHours, hpa?.replicaGpuHours),
    gpu_hours_ratio_vs_keda_any_window: ratio(m.replicaGpuHours, kedaAnyWindow?.replicaGpuHours),
    gpu_hours_ratio_vs_hpa_any_window: ratio(m.replicaGpuHours, hpaAnyWindow?.replicaGpuHours),
    clairvoyant_gpu_hours: bound.replicaGpuHours,
    targetAttainment: TARGET_ATTAINMENT,
    shaping: s.shaping,
    config: s.cfg,
    requests: reqs.length,
    ours: { settings: { ...PREFILL_DEFAULTS, ...tuned }, result: m, replicasPerMinute: mine.timeline },
    baselines: {
      keda: sweeps.keda,
      hpa: sweeps.hpa,
      cheapestKeda: keda,
      cheapestHpa: hpa,
      cheapestKedaAnyWindow: kedaAnyWindow,
      cheapestHpaAnyWindow: hpaAnyWindow,
    },
    sweepsOverWindows: { keda: sweeps.kedaWindows, hpa: sweeps.hpaWindows },
  };
}

function gridPoints(): Array<Partial<OursSettings>> {
  const points: Array<Partial<OursSettings>> = [{}];
  for (const [key, values] of Object.entries(GRID)) {
    const next = points.flatMap((p) => values.map((v) => ({ ...p, [key]: v })));
    points.splice(0, points.length, ...next);
  }
  return points;
}

/** Our constants chosen on the tuning part: the cheapest grid point that meets the target there. */
function tune(s: Setup): { chosen: Partial<OursSettings>; sweep: Array<{ settings: Partial<OursSettings>; row: Row }> } {
  const reqs = requests(s);
  const sweep = gridPoints().map((settings) => ({ settings, row: run(reqs, s.cfg, ours(s.cfg, settings, JSON.stringify(settings)), true).row }));
  const best = cheapestMeeting(sweep.map((x) => x.row));
  const chosen = sweep.find((x) => x.row === best)?.settings ?? {};
  console.log(
    `tuning: ${sweep.length} settings; chosen ${JSON.stringify(chosen)} (${best?.replicaGpuHours.toFixed(2)} GPU-h, ${((best?.attainment ?? 0) * 100).toFixed(2)}%)`,
  );
  return { chosen, sweep };
}

function heldOut(f: Flags): Record<string, unknown> {
  const tuning = tune(setup(AZURE, "first-half", f));
  const parts: Array<[string, Part]> = [
    [AZURE, "second-half"],
    [MOONCAKE, "all"],
  ];
  const heldOutParts = parts.map(([trace, part]) => evaluate(setup(trace, part, f), tuning.chosen));
  const [first] = heldOutParts;
  return {
    protocol:
      "constants chosen on the first half of azure2023_conv.csv (cheapest grid point at >=99%); every other part is held out; baselines swept on each part itself",
    tunedOn: { trace: basename(AZURE), part: "first-half", chosen: tuning.chosen, sweep: tuning.sweep.map((x) => ({ ...x.settings, ...x.row })) },
    ...(first
      ? {
          gpu_hours: first.gpu_hours,
          gpu_hours_ratio_vs_keda: first.gpu_hours_ratio_vs_keda,
          slo_attainment: first.slo_attainment,
          slo_attainment_keda: first.slo_attainment_keda,
        }
      : {}),
    heldOut: heldOutParts,
  };
}

function main(): void {
  const { values } = parseArgs({
    options: {
      trace: { type: "string", default: AZURE },
      out: { type: "string" },
      part: { type: "string", default: "all" },
      heldout: { type: "boolean", default: false },
      amplify: { type: "string" },
      slo: { type: "string" },
      load: { type: "string" },
      provisioning: { type: "string" },
      "gpus-per-node": { type: "string" },
    },
  });
  const started = performance.now();
  const trace = values.trace ?? AZURE;
  const out = values.out ?? resolve(ROOT, values.heldout ? "bench/results/autoscale-heldout.json" : "bench/results/autoscale.json");
  const body = values.heldout ? heldOut(values) : evaluate(setup(trace, (values.part ?? "all") as Part, values), OURS_TUNED);
  const result = {
    date: new Date().toISOString(),
    machine: `${cpus().length} cores (${cpus()[0]?.model ?? "unknown"}), Node ${process.version}`,
    ...body,
    wallSeconds: (performance.now() - started) / 1000,
  };
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`wrote ${out} in ${result.wallSeconds.toFixed(0)} s`);
}

main();
