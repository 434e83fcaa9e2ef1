/**
 * bench:http's two-GPU sections (issue 27), for a host with two GPUs (the device's two-GPU kinds;
 * `bash bench/gpu/http-device.sh two-gpu` runs both in one call):
 *
 * - `pd2gpu`: P/D with the prefill pod on GPU 0 and the decode pod on GPU 1, through the router,
 *   against one aggregated engine on GPU 0 alone (pd.ts's section with its pods pinned): TTFT at each
 *   prompt length, throughput at each stream count, transfer GB/s, greedy answers against the
 *   aggregated engine's. Two placements, each a P/D pair of its own: `tcp`, each pod sees only its
 *   own GPU (two Kubernetes pods with a GPU each: the network path through host memory), and
 *   `local`, both pods see both GPUs, each with its own first (CUDA_VISIBLE_DEVICES ordered, and
 *   --split-mode none keeps the model there), so the hand-off goes device to device: the decode
 *   pod lends a region of GPU 1 and the prefill pod writes into it across the peer link (the pod
 *   spec this needs: docs/concepts.md, "The local path"). The goal: TTFT ≤ 1.1× aggregated at 1K and 4K, the
 *   pair's throughput ≥ 1.8× one aggregated GPU at 32 streams.
 * - `tp2`: one replica over both GPUs, with the flags the operator plans for a Model of
 *   `placement.gpusPerReplica: 2` (operator/plan/runtime-args.ts; layer split, and row split beside
 *   it), against the same engine on one GPU: decode tok/s at 1 and 32 streams. Then a KV cache sized
 *   past one GPU's memory (parallel × ctx-size from nvidia-smi's memory and the model's KV bytes per
 *   cell), which must fail to start on one GPU and serve 32 streams on two.
 *
 * On CPU (no nvidia-smi) both sections run their steps with the pinning ignored, a check of the
 * code path only; the KV-past-one-GPU step needs a GPU's memory and is skipped there.
 */
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import type { Model } from "../../operator/api.ts";
import { runtimeArgs, runtimeSettings } from "../../operator/plan/runtime-args.ts";
import { greedyAnswers, pdSection, start, sweep, type PdBenchOptions, type PdRole, type PdTransport, type Placement } from "./pd.ts";
import type { LoadSummary } from "./load-client.ts";

/** What a Model's runtime sets of a pod's size. */
export interface PodSizing {
  parallel: number;
  contextSize: number;
  batchSize: number;
}

export interface TwoGpuOptions {
  engine: string[];
  model: string;
  /** pd2gpu's pods' flags: device, `sizing` and `extras`, as the pd section's. */
  podArgs: string[];
  /** tp2's engines' size, planned into the Model (operatorFlags). */
  sizing: PodSizing;
  /** tp2's engines' flags beside the Model's (threads, queue, --engine-args). */
  extras: string[];
  /** Whether the machine has GPUs (else the CPU check of the code path). */
  gpu: boolean;
  promptTokens: number[];
  concurrencies: number[];
  logDir: string;
}

const visible = (devices: string): NodeJS.ProcessEnv => ({ CUDA_VISIBLE_DEVICES: devices });

/**
 * Where each pod of pd2gpu runs. The aggregated baseline: GPU 0 alone. tcp: prefill sees GPU 0,
 * decode GPU 1, nothing else. local: both see both, their own GPU first, and keep the model on it.
 */
export function twoGpuPlacement(role: PdRole, t?: PdTransport): Placement {
  if (role === "aggregated") return { env: visible("0") };
  const own = role === "prefill" ? "0" : "1";
  if (t !== "local") return { env: visible(own) };
  return { env: visible(own === "0" ? "0,1" : "1,0"), args: ["--split-mode", "none"] };
}

/** GPUs the machine shows (0 without nvidia-smi). */
export function gpuCount(): number {
  try {
    return execFileSync("nvidia-smi", ["-L"]).toString().trim().split("\n").filter((l) => l.startsWith("GPU ")).length;
  } catch {
    return 0;
  }
}

function requireTwo(o: TwoGpuOptions): void {
  const n = gpuCount();
  if (o.gpu && n < 2) throw new Error(`the two-GPU sections need two GPUs of one host; this machine shows ${n} (the device's nvidia-h200-x2 or nvidia-h100-x2 kind)`);
}

export async function pd2gpuSection(o: TwoGpuOptions): Promise<Record<string, unknown>> {
  requireTwo(o);
  const pd: PdBenchOptions = {
    engine: o.engine,
    model: o.model,
    podArgs: o.podArgs,
    concurrencies: o.concurrencies,
    promptTokens: o.promptTokens,
    maxTokens: 32,
    transports: ["tcp", "local"],
    logDir: join(o.logDir, "pd2gpu"),
    place: twoGpuPlacement,
  };
  return { placement: { aggregated: "GPU 0", prefill: "GPU 0", decode: "GPU 1" }, ...(await pdSection(pd)) };
}

/** The engine flags the operator plans for an aggregated replica of `gpus` GPUs (runtime-args.ts), the bench's sizing in the Model. */
export function operatorFlags(gpus: number, splitMode: "Layer" | "Row", sizing: PodSizing): string[] {
  const model = {
    apiVersion: "serving.llmfleet.dev/v1alpha1",
    kind: "Model",
    metadata: { name: "bench", namespace: "default" },
    spec: { replicas: { min: 1, max: 1 }, placement: { gpusPerReplica: gpus }, runtime: { backend: "native", splitMode, ...sizing } },
  } as unknown as Model;
  return runtimeArgs(runtimeSettings(model, { gpus, modelOnGPUs: true }));
}

interface Tp2Config {
  name: string;
  devices: string;
  gpus: number;
  split: "Layer" | "Row";
}

const TP2_CONFIGS: Tp2Config[] = [
  { name: "one_gpu", devices: "0", gpus: 1, split: "Layer" },
  { name: "layer", devices: "0,1", gpus: 2, split: "Layer" },
  { name: "row", devices: "0,1", gpus: 2, split: "Row" },
];

/** Decode-bound runs: short prompts, long answers. */
const TP2_RUN = { promptTokens: [128], maxTokens: 128 };

async function tp2Run(o: TwoGpuOptions, c: Tp2Config, reference: string[] | undefined): Promise<{ flags: string; runs: Record<string, LoadSummary>; answers: string[]; same_answers?: boolean[] }> {
  const flags = [...operatorFlags(c.gpus, c.split, o.sizing), ...o.extras];
  const logDir = join(o.logDir, "tp2");
  await using engine = await start({ engine: o.engine, logDir }, `tp2-${c.name}`, ["--role", "aggregated", "--model", o.model, ...flags], visible(c.devices));
  const answers = await greedyAnswers(engine.url, { promptTokens: [Math.min(...o.promptTokens)] });
  const runs = (await sweep(engine.url, `tp2 ${c.name}`, { ...TP2_RUN, concurrencies: [1, 32] }, { aggregated: engine.url }))["128"] ?? {};
  return { flags: flags.join(" "), runs, answers, ...(reference ? { same_answers: answers.map((x, i) => x === reference[i]) } : {}) };
}

/** The synthetic 8B's KV bytes per cell (K and V, f16): 2 × layers × KV heads × head size × 2. */
const KV_BYTES_PER_CELL_8B = 2 * 32 * 8 * 128 * 2;

/** GPU 0's memory in bytes, or 0 without nvidia-smi. */
function gpuMemoryBytes(): number {
  try {
    const mib = Number(execFileSync("nvidia-smi", ["--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", "0"]).toString().trim());
    return Number.isFinite(mib) ? mib * 1024 * 1024 : 0;
  } catch {
    return 0;
  }
}

/**
 * A KV cache past one GPU: cells for 105 % of one GPU's memory (the weights come on top), in
 * sequences of ctx-size; on one GPU the engine must refuse to start, on two serve 32 streams.
 */
async function pastOneGpu(o: TwoGpuOptions): Promise<Record<string, unknown>> {
  const memory = gpuMemoryBytes();
  if (!o.gpu || memory === 0) return { skipped: "needs a GPU's memory" };
  const ctx = 8192;
  const parallel = Math.ceil((memory * 1.05) / KV_BYTES_PER_CELL_8B / ctx);
  const sizing: PodSizing = { parallel, contextSize: ctx, batchSize: 2048 };
  const kvGiB = Math.round(((parallel * ctx * KV_BYTES_PER_CELL_8B) / 2 ** 30) * 10) / 10;
  const one = await tp2Run({ ...o, sizing }, TP2_CONFIGS[0]!, undefined).then(
    () => "served (the KV did not exceed one GPU after all)",
    (e: unknown) => `refused: ${String((e as Error).message).split("\n").slice(-3).join(" | ")}`,
  );
  const two = await tp2Run({ ...o, sizing }, TP2_CONFIGS[1]!, undefined);
  return { gpu_memory_gib: Math.round((memory / 2 ** 30) * 10) / 10, parallel, ctx_size: ctx, kv_gib: kvGiB, one_gpu: one, two_gpus: two };
}

export async function tp2Section(o: TwoGpuOptions): Promise<Record<string, unknown>> {
  requireTwo(o);
  const out: Record<string, unknown> = {};
  let reference: string[] | undefined;
  for (const c of TP2_CONFIGS) {
    const r = await tp2Run(o, c, reference);
    reference ??= r.answers;
    out[c.name] = r;
  }
  out.past_one_gpu = await pastOneGpu(o);
  return out;
}

const r2 = (x: unknown, y: unknown): number | null => (typeof x === "number" && typeof y === "number" && x > 0 && y > 0 ? Math.round((x / y) * 100) / 100 : null);

/** The value at `path` in nested records, or undefined. */
function at(x: unknown, ...path: string[]): unknown {
  let v = x;
  for (const k of path) v = v !== null && typeof v === "object" ? (v as Record<string, unknown>)[k] : undefined;
  return v;
}

function pd2gpuKeys(pd2gpu: unknown): Record<string, number | null> {
  const out: Record<string, number | null> = {};
  const agg = (tokens: string, c: string, k: string): unknown => at(pd2gpu, "aggregated", tokens, c, k);
  for (const t of ["tcp", "local"]) {
    const pd = (tokens: string, c: string, k: string): unknown => at(pd2gpu, `pd_${t}`, "runs", tokens, c, k);
    out[`pd_2gpu_ttft_ratio_1k_${t}`] = r2(pd("1024", "1", "ttft_p50_ms"), agg("1024", "1", "ttft_p50_ms"));
    out[`pd_2gpu_ttft_ratio_4k_${t}`] = r2(pd("4096", "1", "ttft_p50_ms"), agg("4096", "1", "ttft_p50_ms"));
    for (const c of ["8", "32"]) out[`pd_2gpu_throughput_ratio_${c}_${t}`] = r2(pd("1024", c, "tok_s"), agg("1024", c, "tok_s"));
    const gb = at(pd2gpu, `pd_${t}`, "transfer", "gb_s");
    out[`pd_2gpu_transfer_gb_s_${t}`] = typeof gb === "number" ? gb : null;
  }
  return out;
}

function tp2Keys(tp2: unknown): Record<string, number | boolean | null> {
  const out: Record<string, number | boolean | null> = {};
  for (const split of ["layer", "row"]) for (const c of ["1", "32"]) out[`tp2_${split}_tok_s_ratio_${c}`] = r2(at(tp2, split, "runs", c, "tok_s"), at(tp2, "one_gpu", "runs", c, "tok_s"));
  const errors = at(tp2, "past_one_gpu", "two_gpus", "runs", "32", "errors");
  out.tp2_past_one_gpu_served = typeof errors === "number" ? errors === 0 && String(at(tp2, "past_one_gpu", "one_gpu")).startsWith("refused") : null;
  return out;
}

/** Headline keys of the two-GPU sections (issue 27): absent sections give none. */
export function twoGpuHeadline(pd2gpu: Record<string, unknown> | undefined, tp2: Record<string, unknown> | undefined): Record<string, number | boolean | null> {
  return { ...(pd2gpu ? pd2gpuKeys(pd2gpu) : {}), ...(tp2 ? tp2Keys(tp2) : {}) };
}
