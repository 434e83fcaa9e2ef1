/**
 * npm run bench:gpu — the engine on the GPU: batched decode against llama.cpp's own
 * llama-batched-bench (same source, same build, same model, same run), TTFT of a question after
 * an 8K-token context reused vs recomputed, and single-stream decode against the HBM roofline.
 * Writes bench/results/gpu.json (--out overrides). On the GPU machine it is started by
 * bench/gpu/device.sh, which sets up Node and builds the CUDA addon and llama.cpp's tools first.
 *
 *   --model FILE   a GGUF (default: a synthetic 7B-class f16 llama, the reference shape of ../shared/GPU.md, written on first use)
 *   --tools DIR    where llama-batched-bench is (default: next to the addon)
 *   --quick        1 and 8 sequences, one KV layout, 2K context (smoke run)
 *   --no-baseline  skip llama-batched-bench (a CPU smoke run of the engine's side only)
 *
 * Single-stream decode runs in child processes (--single-stream), once per CUDA configuration:
 * GGML_CUDA_GRAPH_OPT=0 (ggml's default) and 1 (independent graph nodes on concurrent streams; the
 * engine's default since this benchmark measured it faster).
 */
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { benchArgs } from "./cli.ts";
import { SYNTHETIC_PRESETS, writeSyntheticModel } from "../engine/model/synthetic-gguf.ts";
import { nativeAddonPath } from "../engine/native/binding.ts";
import { NativeRuntime } from "../engine/runtime/native-runtime.ts";
import { batchedBench, type BatchedBenchRow } from "./gpu/llamacpp.ts";
import { decodeThroughput, kvReuse, type DecodeRun } from "./gpu/measure.ts";
import { decodeServer, pdOverhead } from "./gpu/pd.ts";
import { bestSingle, singleStream, singleStreamChild, type SingleStreamResult } from "./gpu/single.ts";

const { values: args } = benchArgs({
  options: {
    model: { type: "string" },
    tools: { type: "string" },
    out: { type: "string" },
    quick: { type: "boolean", default: false },
    "no-baseline": { type: "boolean", default: false },
    "single-stream": { type: "boolean", default: false },
    "pd-decode-server": { type: "string" },
  },
});
const quick = args.quick === true;
const PARALLEL = quick ? [1, 8] : [1, 8, 32, 64];
const PROMPT = 128;
const GEN = 128;
const CONTEXT = quick ? 2048 : 8192;
const THREADS = 8;
/** Multi-step decoding depths the engine is measured at (1 = off); the best is reported. */
const LOOKAHEADS = quick ? [1, 4] : [1, 4, 8];

/** HBM bandwidth by GPU name (vendor figures), for the single-stream roofline. */
function device(): { name: string; bandwidth: number } {
  let name = "cpu";
  try {
    name = execFileSync("nvidia-smi", ["--query-gpu=name", "--format=csv,noheader"]).toString().trim().split("\n")[0] ?? "cpu";
  } catch {
    /* no GPU */
  }
  const bandwidth = /H200/.test(name) ? 4.8e12 : /H100.*(PCIe|NVL)/.test(name) ? 2.0e12 : /H100/.test(name) ? 3.35e12 : 0;
  return { name, bandwidth };
}

const log = (line: string): void => console.error(`[bench:gpu ${new Date().toISOString().slice(11, 19)}] ${line}`);

async function modelPath(): Promise<string> {
  if (args.model) return resolve(args.model);
  const path = join(tmpdir(), "llmfleet-gpu", "synthetic-8b-v32000-f16.gguf");
  if (!existsSync(path)) log(`writing the synthetic 7B-class f16 model to ${path}`);
  return writeSyntheticModel(path, SYNTHETIC_PRESETS["8b"]!);
}

async function ourDecode(model: string, kvUnified: boolean, deviceGreedy = false): Promise<DecodeRun[]> {
  const rt = await NativeRuntime.load({
    modelPath: model,
    threads: THREADS,
    contextSize: PROMPT + 2 * GEN + 16,
    parallel: Math.max(...PARALLEL),
    batchSize: 2048,
    flashAttention: true,
    gpuLayers: -1,
    kvUnified,
    deviceGreedy,
  });
  try {
    await decodeThroughput(rt, Math.min(8, rt.sequences.length), 32, 16);
    const runs: DecodeRun[] = [];
    for (const k of kvUnified ? [1] : LOOKAHEADS) {
      rt.lookahead = k;
      for (const n of PARALLEL) {
        const run = await decodeThroughput(rt, n, PROMPT, n === 1 ? 2 * GEN : GEN);
        const sampling = deviceGreedy ? "greedy on the device" : `sampling ${run.sampleMsPerStep.toFixed(3)} ms a step`;
        log(`engine kvUnified=${kvUnified} lookahead=${k} n=${n}: ${run.decodeTokPerS.toFixed(0)} tok/s decode (${run.steps} steps, ${sampling})`);
        runs.push({ ...run, kvUnified, deviceGreedy });
      }
    }
    return runs;
  } finally {
    await rt[Symbol.asyncDispose]();
  }
}

interface ModelInfo {
  modelBytes: number;
  modelParams: number;
  nVocab: number;
  nEmbd: number;
  description: string;
}

async function ourReuse(model: string): Promise<{ reuse: Awaited<ReturnType<typeof kvReuse>>; info: ModelInfo }> {
  const rt = await NativeRuntime.load({
    modelPath: model,
    threads: THREADS,
    contextSize: CONTEXT + 128,
    parallel: 2,
    batchSize: 2048,
    flashAttention: true,
    gpuLayers: -1,
  });
  try {
    await kvReuse(rt, 512, 16, 1);
    const { modelBytes, modelParams, nVocab, nEmbd, description } = rt.engine.info();
    return { reuse: await kvReuse(rt, CONTEXT, 64, 3), info: { modelBytes, modelParams, nVocab, nEmbd, description } };
  } finally {
    await rt[Symbol.asyncDispose]();
  }
}

const best = <T>(xs: T[], key: (x: T) => number): T => xs.reduce((a, b) => (key(b) > key(a) ? b : a));

// GGML_CUDA_GRAPH_OPT=0 was 1.5 % slower in every session-3 run (the engine sets 1); measuring it
// again cost ~85 s of a device call capped at 585 s, which the cold build already halves.
const CUDA_CONFIGS: Record<string, string>[] = [{ GGML_CUDA_GRAPH_OPT: "1" }];

async function singleStreams(model: string, tools: string): Promise<SingleStreamResult[]> {
  const childArgs = ["--model", model, "--tools", tools, ...(args["no-baseline"] === true ? ["--no-baseline"] : [])];
  const results: SingleStreamResult[] = [];
  for (const env of quick ? CUDA_CONFIGS.slice(0, 1) : CUDA_CONFIGS) {
    const r = await singleStreamChild(process.argv[1]!, childArgs, env);
    for (const e of r.engine)
      log(
        `single stream ${JSON.stringify(env)} engine ${JSON.stringify({ threads: e.threads, gpuEmbeddings: e.gpuEmbeddings, contextSize: e.contextSize, kvUnified: e.kvUnified, deviceGreedy: e.deviceGreedy })} lookahead=${e.lookahead}: ${e.decodeTokPerS.toFixed(1)} tok/s`,
      );
    for (const l of r.nativeLoop)
      log(
        `single stream ${JSON.stringify(env)} C++ loop ${JSON.stringify({ contextSize: l.contextSize, kvUnified: l.kvUnified })} ${l.mode}: ${l.tokPerS.toFixed(1)} tok/s, graphs reused ${l.graphsReused}, step median ${l.medianStepMs.toFixed(3)} ms, first ${l.firstStepMs.toFixed(3)} ms, max ${l.maxStepMs.toFixed(3)} ms`,
      );
    for (const l of r.llamaBench) log(`single stream ${JSON.stringify(env)} llama-bench gpuEmbeddings=${l.gpuEmbeddings}: ${l.avg_ts.toFixed(1)} tok/s`);
    results.push(r);
  }
  return results;
}

async function baseline(model: string, tools: string): Promise<BatchedBenchRow[]> {
  if (args["no-baseline"] === true) return [];
  const binary = join(tools, "llama-batched-bench");
  const rows: BatchedBenchRow[] = [];
  for (const kvUnified of quick ? [false] : [false, true]) {
    const got = await batchedBench({ binary, model, parallel: PARALLEL, promptTokens: PROMPT, genTokens: GEN, flashAttention: true, kvUnified });
    for (const r of got) log(`llama-batched-bench kvu=${kvUnified} pl=${r.pl}: ${r.speed_tg.toFixed(0)} tok/s decode`);
    rows.push(...got.map((r) => ({ ...r, kvUnified })));
  }
  return rows;
}

interface HeadlineInputs {
  llamacpp: BatchedBenchRow[];
  ours: DecodeRun[];
  singles: SingleStreamResult[];
  bandwidth: number;
  model: ModelInfo;
}

/** Batching ratios (best engine setting over best llama-batched-bench setting) and the single-stream figures. */
function headline(h: HeadlineInputs): Record<string, unknown> {
  const ratio = (n: number): number | null => {
    const o = h.ours.filter((r) => r.sequences === n);
    const l = h.llamacpp.filter((r) => r.pl === n);
    return o.length && l.length ? best(o, (r) => r.decodeTokPerS).decodeTokPerS / best(l, (r) => r.speed_tg).speed_tg : null;
  };
  const singleBest = bestSingle(h.singles) ?? best(h.ours.filter((r) => r.sequences === 1), (r) => r.decodeTokPerS);
  const roofline = h.bandwidth > 0 ? h.bandwidth / h.model.modelBytes : null;
  // The roofline counts every model byte; a decode step reads one row of the token
  // embedding table, not all of it, so the fraction of the bytes a token actually reads is stricter.
  const embeddingBytes = h.model.nVocab * h.model.nEmbd * (h.model.modelBytes / h.model.modelParams);
  const readRoofline = h.bandwidth > 0 ? h.bandwidth / (h.model.modelBytes - embeddingBytes) : null;
  const llamaSingle = h.singles.flatMap((r) => r.llamaBench);
  return {
    batching_ratio_vs_llamacpp_8: ratio(8),
    batching_ratio_vs_llamacpp_32: ratio(32),
    batching_ratio_vs_llamacpp_64: ratio(64),
    decode_1seq_tok_s: singleBest.decodeTokPerS,
    decode_1seq_roofline_tok_s: roofline,
    decode_1seq_roofline_fraction: roofline ? singleBest.decodeTokPerS / roofline : null,
    decode_1seq_read_bytes_fraction: readRoofline ? singleBest.decodeTokPerS / readRoofline : null,
    decode_1seq_config: singleBest,
    decode_1seq_llamacpp_tok_s: llamaSingle.length ? Math.max(...llamaSingle.map((r) => r.avg_ts)) : null,
    decode_1seq_llamacpp_roofline_fraction: llamaSingle.length && roofline ? Math.max(...llamaSingle.map((r) => r.avg_ts)) / roofline : null,
  };
}

async function main(): Promise<void> {
  const dev = device();
  const model = await modelPath();
  const tools = args.tools ?? dirname(await nativeAddonPath());
  const started = performance.now();
  log(`device ${dev.name}; model ${model}`);
  const llamacpp = await baseline(model, tools);
  const singles = await singleStreams(model, tools);
  const ours = [...(await ourDecode(model, false)), ...(await ourDecode(model, false, true)), ...(quick ? [] : await ourDecode(model, true))];
  const { reuse, info } = await ourReuse(model);
  const pd = await pdOverhead(process.argv[1]!, model, quick ? [512] : [1024, 4096], 3);
  for (const r of pd)
    log(
      `P/D ${r.promptTokens} tokens: TTFT ${r.ttftAggregatedSeconds.toFixed(3)} s aggregated, ${r.ttftDisaggregatedSeconds.toFixed(3)} s hand-off (${r.overhead.toFixed(2)}x)`,
    );
  log(
    `8K reuse: recompute ${reuse.ttftRecomputeSeconds.toFixed(3)} s, GPU-resident ${reuse.ttftGpuResidentSeconds.toFixed(3)} s, host ${reuse.ttftHostMemorySeconds.toFixed(3)} s`,
  );
  const result = {
    date: new Date().toISOString(),
    device: dev.name,
    quick,
    model: { path: model, ...info },
    ...headline({ llamacpp, ours, singles, bandwidth: dev.bandwidth, model: info }),
    kv_reuse_ttft_ratio_8k: reuse.ttftRecomputeSeconds / reuse.ttftGpuResidentSeconds,
    kv_reuse_ttft_ratio_8k_host_memory: reuse.ttftRecomputeSeconds / reuse.ttftHostMemorySeconds,
    pd_ttft_overhead: pd.find((r) => r.promptTokens === 1024)?.overhead ?? pd[0]?.overhead ?? null,
    raw: { llamacpp, singleStream: singles, engine: ours, reuse, pd, hbmBytesPerSecond: dev.bandwidth },
    wallSeconds: (performance.now() - started) / 1000,
  };
  const out = resolve(args.out ?? "bench/results/gpu.json");
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, `${JSON.stringify(result, null, 2)}\n`);
  console.log(JSON.stringify({ ...result, raw: undefined }, null, 2));
  log(`wrote ${out}`);
}

if (args["pd-decode-server"] !== undefined) {
  await decodeServer(await modelPath(), Number(args["pd-decode-server"]));
} else if (args["single-stream"] === true) {
  const model = await modelPath();
  const result = await singleStream(model, args["no-baseline"] === true ? undefined : args.tools, 2 * GEN, [1, 16]);
  console.log(JSON.stringify(result));
} else {
  await main();
}
