// `npm run bench:autoscale-replay -- FILE... [--amplify N] [--minutes] [--out FILE]`
//
// A quick look at traces bench:autoscale has not seen: ours (the operator's recommender at its
// shipped defaults, as bench:autoscale runs it) and KEDA in flight 0.4 / 300 s (the setting the
// protocol chose on the corpus for every non-batch trace) on the same replay, configuration and
// warm pool as bench:autoscale. Not the protocol: no setting is chosen and no oracle is swept, so
// it takes seconds a trace. "met" is the issue's goal against that KEDA: ours' attainment ≥ its
// own, at ≤ 0.85× its node GPU-hours. --minutes prints each scaler's misses and replicas per
// minute. Traces are Mooncake-style JSONL (bench/traces/generate.ts writes them) or Azure CSV,
// optionally gzipped; --amplify defaults to 1 for a file named mooncake, else 10 (the tenants the
// corpus's generated traces and Azure are replayed with; bench:autoscale --trace defaults a JSONL
// trace it does not know to 1, so pass --amplify 10 there for generated ones).
import { writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { benchArgs } from "./cli.ts";
import { ours } from "./sim/compare.ts";
import { FleetSim, type FleetResult, type Scaler } from "./sim/fleet.ts";
import { KedaQueueScaler } from "./sim/scalers.ts";
import { config, DEFAULT_FLAGS, warmStart } from "./sim/setup.ts";
import { loadTrace, shapeTrace, type TraceRequest } from "./sim/trace.ts";

const KEDA_THRESHOLD = 0.4;
const KEDA_WINDOW_SECONDS = 300;
const COST_GOAL = 0.85;

interface Replay {
  result: FleetResult;
  misses: number[];
}

function replay(reqs: TraceRequest[], scaler: (cfg: ReturnType<typeof config>) => Scaler): Replay {
  const cfg = config(DEFAULT_FLAGS);
  cfg.initialReplicas = warmStart(reqs, cfg);
  const sim = new FleetSim(reqs, cfg, scaler(cfg));
  const result = sim.run();
  return { result, misses: sim.missesPerMinute() };
}

const pct = (x: number): string => `${(100 * x).toFixed(2)}%`;
const sparse = (xs: number[]): string => xs.map((x, i) => (x ? `${i}:${x}` : "")).filter(Boolean).join(" ") || "none";

function compare(file: string, amplify: number | undefined, minutes: boolean): Record<string, unknown> {
  const n = amplify ?? (/mooncake/i.test(file) ? 1 : 10);
  const reqs = shapeTrace(loadTrace(file), { amplify: n, speedup: 1, seed: 42 });
  const mine = replay(reqs, (cfg) => ours(cfg));
  const keda = replay(reqs, () => new KedaQueueScaler(KEDA_THRESHOLD, KEDA_WINDOW_SECONDS));
  const ratio = mine.result.nodeGpuHours / keda.result.nodeGpuHours;
  const met = mine.result.attainment >= keda.result.attainment && ratio <= COST_GOAL;
  console.log(
    `${file} x${n}: ours ${pct(mine.result.attainment)} ${mine.result.nodeGpuHours.toFixed(1)} node GPU-h | ` +
      `KEDA ${KEDA_THRESHOLD} ${pct(keda.result.attainment)} ${keda.result.nodeGpuHours.toFixed(1)} | ratio ${ratio.toFixed(3)} | ${met ? "met" : "missed"}`,
  );
  if (minutes) {
    console.log(`  misses by minute: ours ${sparse(mine.misses)} | KEDA ${sparse(keda.misses)}`);
    console.log(`  replicas by minute: ours ${mine.result.replicasPerMinute.join(",")}`);
    console.log(`                      KEDA ${keda.result.replicasPerMinute.join(",")}`);
  }
  const brief = (r: Replay): Record<string, unknown> => ({ slo_attainment: r.result.attainment, gpu_hours: r.result.nodeGpuHours, replica_gpu_hours: r.result.replicaGpuHours, misses_per_minute: r.misses });
  return { trace: file, amplify: n, requests: reqs.length, ours: brief(mine), keda: { setting: `keda-inflight/${KEDA_THRESHOLD}`, ...brief(keda) }, gpu_hours_ratio_vs_keda: ratio, met };
}

function main(): void {
  const { values, positionals } = benchArgs({
    allowPositionals: true,
    options: { amplify: { type: "string" }, minutes: { type: "boolean", default: false }, out: { type: "string" } },
  });
  if (positionals.length === 0) throw new Error("give one or more trace files");
  const load = loadavg();
  const amplify = values.amplify === undefined ? undefined : Number(values.amplify);
  const results = positionals.map((f) => compare(f, amplify, values.minutes ?? false));
  const met = results.filter((r) => r.met).length;
  console.log(`met ${met} of ${results.length}`);
  if (values.out) {
    const machine = `${cpus().length} cores (${cpus()[0]?.model ?? "unknown"}), Node ${process.version}, load average ${load.map((x) => x.toFixed(2)).join(" ")} at start`;
    writeFileSync(values.out, `${JSON.stringify({ date: new Date().toISOString(), machine, met, of: results.length, results }, null, 2)}\n`);
  }
}

main();
