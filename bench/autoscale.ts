// `npm run bench:autoscale -- --trace FILE [--out FILE] [--amplify N] [--slo S] [--slo-kind queueing-delay|ttft]`
// `npm run bench:autoscale -- --loo [--out FILE]`
//
// Replays request traces against a simulated prefill pool (bench/sim) under llmfleet's recommender
// (the operator's own code: recommenderSpec + recordAndRecommend) and two baselines, KEDA-style (in-flight
// requests per replica) and HPA-style (GPU utilisation), each with a threshold and a scale-down window.
// The fair protocol: every baseline's setting is chosen on training traces only (the corpus below,
// less the scored trace; see sim/protocol.ts) and scored on `--trace`, which none of them has
// seen; ours runs its shipped defaults. The baselines swept on the scored trace itself (hindsight)
// are reported as the oracle bound, beside a clairvoyant bound. `--loo`: leave-one-trace-out over
// the corpus, each trace scored by settings chosen on the others.
// The SLO is on queueing delay (TTFT minus the request's own TTFT on an idle replica) unless
// --slo-kind ttft; plain TTFT attainment is reported beside it. Cost: node GPU-hours (what the
// node group provisions); replica GPU-hours beside it. See docs/autoscaling.md, BENCHMARKS.md.
import { existsSync, mkdirSync, realpathSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { basename, dirname, relative, resolve } from "node:path";
import { parseArgs } from "node:util";
import { benchArgs, usageError } from "./cli.ts";
import { clairvoyantBound, ours, run, sweepBaselines, type Row } from "./sim/compare.ts";
import type { FleetConfig } from "./sim/fleet.ts";
import { cheapestAt, choose, targetFor, type TrainingTrace } from "./sim/protocol.ts";
import { config, DEFAULT_FLAGS, warmStart, type Flags } from "./sim/setup.ts";
import { loadTrace, shapeTrace } from "./sim/trace.ts";

const ROOT = resolve(import.meta.dirname, "..");
/** The shared traces sit beside the repository (../shared/traces); --shared moves them. */
const SHARED_DEFAULT = resolve(ROOT, "../shared/traces");

/** Our one knob the protocol chooses on training traces, as it chooses the baselines' (the shipped default is one of them). */
const OURS_GRID = [0.01, 0.003, 0.001, 0.0003];

interface Entry {
  file: string;
  /** Tenants of the trace replayed together (copies with 2 s of jitter). */
  amplify: number;
}

/** The training corpus: four generated traces (bench/traces/generate.ts) and the two shared ones, each at the scale it is replayed at. */
function corpus(shared: string): Entry[] {
  const own = ["chat", "code", "rag", "batch"].map((k) => ({ file: resolve(ROOT, `bench/traces/${k}.jsonl.gz`), amplify: 10 }));
  const theirs = [
    { file: resolve(shared, "azure2023_conv.csv"), amplify: 10 },
    { file: resolve(shared, "mooncake_synthetic.jsonl"), amplify: 1 },
  ].filter((e) => existsSync(e.file));
  return [...own, ...theirs];
}

/** One trace replayed under every scaler and setting. */
interface Sweep {
  name: string;
  entry: Entry;
  requests: number;
  promptTokensPerSecond: number;
  cfg: FleetConfig;
  /** Ours with the shipped defaults. */
  ours: Row;
  oursTimeline: number[];
  /** Ours over OURS_GRID, for the protocol's own choice. */
  oursGrid: Row[];
  keda: Row[];
  hpa: Row[];
  clairvoyant: { replicaGpuHours: number; attainment: number };
}

const nameOf = (e: Entry): string => `${basename(e.file)} x${e.amplify}`;
const pct = (x: number | undefined): string => (x === undefined ? "-" : `${(100 * x).toFixed(2)}%`);

function sweep(e: Entry, f: Flags): Sweep {
  const t0 = performance.now();
  const cfg = config(f);
  const reqs = shapeTrace(loadTrace(e.file), { amplify: e.amplify, speedup: 1, seed: 42 });
  cfg.initialReplicas = warmStart(reqs, cfg);
  const span = reqs.at(-1)?.at ?? 1;
  const rate = reqs.reduce((s, r) => s + r.promptTokens, 0) / span;
  const mine = run(reqs, cfg, ours(cfg), true);
  const grid = OURS_GRID.map((x) => run(reqs, cfg, ours(cfg, { missBudget: x }, `missBudget=${x}`), true).row);
  const b = sweepBaselines(reqs, cfg, true);
  const s: Sweep = {
    name: nameOf(e),
    entry: e,
    requests: reqs.length,
    promptTokensPerSecond: rate,
    cfg,
    ours: mine.row,
    oursTimeline: mine.timeline,
    oursGrid: grid,
    keda: b.kedaWindows,
    hpa: b.hpaWindows,
    clairvoyant: clairvoyantBound(reqs, cfg),
  };
  console.log(
    `${s.name}: ${reqs.length} requests over ${(span / 60).toFixed(0)} min, ${rate.toFixed(0)} prompt tokens/s, ${cfg.initialReplicas} warm replicas; ` +
      `ours ${pct(s.ours.attainment)} at ${s.ours.nodeGpuHours.toFixed(1)} node GPU-h (${((performance.now() - t0) / 1000).toFixed(0)} s)`,
  );
  return s;
}

/** The oracle's attainment: the best any baseline setting reaches on the trace, with hindsight. */
const bestReachable = (s: Sweep): number => Math.max(...s.keda.map((r) => r.attainment), ...s.hpa.map((r) => r.attainment));

/** Each training trace's target for one family: 99 %, or 0.5 point under the best that family reaches there. */
function training(sweeps: Sweep[], family: "keda" | "hpa" | "oursGrid"): TrainingTrace[] {
  return sweeps.map((s) => ({ name: s.name, rows: new Map(s[family].map((r) => [r.scaler, r])), target: targetFor(Math.max(...s[family].map((r) => r.attainment))) }));
}

const ratio = (a: number | undefined, b: number | undefined): number | undefined => (a !== undefined && b ? a / b : undefined);

function brief(r: Row | undefined): Record<string, unknown> | undefined {
  if (!r) return undefined;
  return {
    setting: r.scaler,
    slo_attainment: r.attainment,
    queue_attainment: r.queueAttainment,
    ttft_attainment: r.ttftAttainment,
    gpu_hours: r.nodeGpuHours,
    replica_gpu_hours: r.replicaGpuHours,
    queue_delay_p99: r.queueDelayP99,
    ttft_p90: r.ttftP90,
    peak_replicas: r.peakReplicas,
  };
}

const nodeRatio = (a: Row | undefined, b: Row | undefined): number | undefined => ratio(a?.nodeGpuHours, b?.nodeGpuHours);

/** Each family's setting chosen on `train`, as it ran on `scored`. */
function chosen(scored: Sweep, train: Sweep[]): { keda?: Row; hpa?: Row; ours?: Row } {
  const pick = (family: "keda" | "hpa" | "oursGrid"): Row | undefined => {
    const c = choose(
      scored[family].map((r) => r.scaler),
      training(train, family),
    );
    return scored[family].find((r) => r.scaler === c?.setting);
  };
  return { keda: pick("keda"), hpa: pick("hpa"), ours: pick("oursGrid") };
}

/** The goal on one scored trace: attainment ≥ min(99 %, oracle − 0.5 pt) and ≥ the chosen KEDA's, at ≤ 0.85× its node GPU-hours. */
function goalOf(m: Row, keda: Row | undefined, target: number): Record<string, number | boolean> {
  const attainment = m.attainment >= target;
  const atLeastKeda = m.attainment >= (keda?.attainment ?? 0);
  const cost = (nodeRatio(m, keda) ?? Infinity) <= 0.85;
  return { attainment_target: target, attainment_met: attainment, at_least_keda: atLeastKeda, cost_met: cost, met: attainment && atLeastKeda && cost };
}

function oracleOf(scored: Sweep, target: number, reach: number): Record<string, unknown> {
  const keda = cheapestAt(scored.keda, target);
  return {
    what: "baselines swept on the scored trace itself (hindsight no user has): the best attainment any setting reaches, and the cheapest setting of each at the target",
    slo_attainment: reach,
    keda: brief(keda),
    hpa: brief(cheapestAt(scored.hpa, target)),
    gpu_hours_ratio_vs_oracle_keda: nodeRatio(scored.ours, keda),
    clairvoyant_replica_gpu_hours: scored.clairvoyant.replicaGpuHours,
    clairvoyant_attainment: scored.clairvoyant.attainment,
  };
}

function summaryLine(scored: Sweep, picked: { keda?: Row; ours?: Row }, reach: number, met: boolean): string {
  const m = scored.ours;
  const { keda, ours: o } = picked;
  return (
    `${scored.name.padEnd(30)} ours ${pct(m.attainment).padStart(7)} ${m.nodeGpuHours.toFixed(1).padStart(6)} node GPU-h | ` +
    `KEDA ${keda?.scaler ?? "-"} ${pct(keda?.attainment)} ${keda?.nodeGpuHours.toFixed(1)} | ratio ${nodeRatio(m, keda)?.toFixed(3)} | ` +
    `oracle ${pct(reach)} | goal ${met ? "met" : "missed"} | ours(chosen on training: ${o?.scaler.split("/")[1]}) ${pct(o?.attainment)} ${o?.nodeGpuHours.toFixed(1)}`
  );
}

/** `scored` against baselines whose settings were chosen on `train`. */
function score(scored: Sweep, train: Sweep[]): Record<string, unknown> {
  const { keda, hpa, ours: oursChosen } = chosen(scored, train);
  const m = scored.ours;
  const reach = bestReachable(scored);
  const target = targetFor(reach);
  const goal = goalOf(m, keda, target);
  const oracle = oracleOf(scored, target, reach);
  console.log(summaryLine(scored, { keda, ours: oursChosen }, reach, goal.met === true));
  return {
    trace: relative(ROOT, scored.entry.file),
    amplify: scored.entry.amplify,
    requests: scored.requests,
    prompt_tokens_per_second: scored.promptTokensPerSecond,
    trained_on: train.map((t) => t.name),
    slo_kind: scored.cfg.sloKind,
    slo_seconds: scored.cfg.sloSeconds,
    gpu_hours: m.nodeGpuHours,
    gpu_hours_ratio_vs_keda: nodeRatio(m, keda),
    slo_attainment: m.attainment,
    slo_attainment_keda: keda?.attainment,
    ttft_attainment: m.ttftAttainment,
    ttft_attainment_keda: keda?.ttftAttainment,
    replica_gpu_hours: m.replicaGpuHours,
    replica_gpu_hours_ratio_vs_keda: ratio(m.replicaGpuHours, keda?.replicaGpuHours),
    gpu_hours_ratio_vs_hpa: nodeRatio(m, hpa),
    oracle_slo_attainment: reach,
    goal,
    ours: brief(m),
    ours_chosen_on_training: { ...brief(oursChosen), gpu_hours_ratio_vs_keda: nodeRatio(oursChosen, keda) },
    keda: brief(keda),
    hpa: brief(hpa),
    oracle,
    ours_replicas_per_minute: scored.oursTimeline,
  };
}

const OPTIONS = {
  trace: { type: "string" },
  loo: { type: "boolean", default: false },
  out: { type: "string" },
  shared: { type: "string", default: SHARED_DEFAULT },
  amplify: { type: "string" },
  slo: { type: "string", default: String(DEFAULT_FLAGS.slo) },
  "slo-kind": { type: "string", default: DEFAULT_FLAGS.sloKind },
  load: { type: "string", default: String(DEFAULT_FLAGS.load) },
  provisioning: { type: "string", default: String(DEFAULT_FLAGS.provisioning) },
  "gpus-per-node": { type: "string", default: String(DEFAULT_FLAGS.gpusPerNode) },
} as const;

type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS }>>["values"];

function flags(values: Values): Flags {
  const kind = values["slo-kind"];
  if (kind !== "queueing-delay" && kind !== "ttft") throw new Error(`--slo-kind must be queueing-delay or ttft, not ${kind}`);
  if (!values.loo && !values.trace) throw new Error("give --trace FILE (scored with settings chosen on the corpus without it) or --loo");
  if (values.trace && !existsSync(values.trace)) throw new Error(`--trace ${values.trace}: no such file`);
  return { slo: Number(values.slo), sloKind: kind, load: Number(values.load), provisioning: Number(values.provisioning), gpusPerNode: Number(values["gpus-per-node"]) };
}

function leaveOneOut(all: Entry[], f: Flags): Record<string, unknown> {
  const sweeps = all.map((e) => sweep(e, f));
  console.log("\nleave-one-trace-out (node GPU-hours; every scaler's setting chosen on the other traces):");
  return { protocol: "leave-one-trace-out over the corpus", results: sweeps.map((s) => score(s, sweeps.filter((o) => o !== s))) };
}

function heldOut(all: Entry[], values: Values, f: Flags): Record<string, unknown> {
  const file = resolve(values.trace ?? "");
  const real = realpathSync(file);
  const known = all.find((e) => realpathSync(e.file) === real);
  const amplify = Number(values.amplify ?? known?.amplify ?? (file.endsWith(".csv") ? 10 : 1));
  const train = all.filter((e) => realpathSync(e.file) !== real).map((e) => sweep(e, f));
  const scored = sweep({ file, amplify }, f);
  console.log("\nscored (node GPU-hours; every scaler's setting chosen on the training traces):");
  return { protocol: "settings chosen on the corpus less the scored trace", ...score(scored, train) };
}

function main(): void {
  const { values } = benchArgs({ options: OPTIONS });
  let f: Flags;
  try {
    f = flags(values);
  } catch (e) {
    usageError((e as Error).message);
  }
  const started = performance.now();
  const load = loadavg();
  const all = corpus(values.shared ?? SHARED_DEFAULT);
  const body = values.loo ? leaveOneOut(all, f) : heldOut(all, values, f);
  const result = {
    date: new Date().toISOString(),
    machine: `${cpus().length} cores (${cpus()[0]?.model ?? "unknown"}), Node ${process.version}, load average ${load.map((x) => x.toFixed(2)).join(" ")} at start`,
    ...body,
    wallSeconds: (performance.now() - started) / 1000,
  };
  const out = values.out ?? resolve(ROOT, values.loo ? "bench/results/autoscale-loo.json" : "bench/results/autoscale.json");
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`wrote ${out} in ${result.wallSeconds.toFixed(0)} s`);
}

main();
