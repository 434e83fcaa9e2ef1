/**
 * Single-stream decode on the GPU, in a child process per CUDA configuration (ggml reads its
 * GGML_CUDA_* switches once per process): the engine with one sequence, by KV layout and context
 * size (CONFIGS) and multi-step depth, three runs each; the same decode in a C++ loop inside the
 * addon with the time of every step; and llama-bench's tg under the same environment, with the
 * token embeddings where llama.cpp puts them and on the GPU.
 *
 * Every run has llama-bench's tg shape: from an empty context, one token per llama_decode call at
 * positions 0..n-1 (n = 256 keeps the attention span inside one 256-cell block, as tg256 does).
 */
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { NativeRuntime } from "../../engine/runtime/native-runtime.ts";
import { llamaBenchDecode, type LlamaBenchRow } from "./llamacpp.ts";
import { decodeThroughput, median, type DecodeRun } from "./measure.ts";

const run = promisify(execFile);

export interface SingleConfig {
  threads: number;
  gpuEmbeddings: boolean;
  /** KV cells: 2 × the generated tokens by default; 256 is llama-bench's n_ctx for tg256. */
  contextSize?: number;
  kvUnified?: boolean;
  /** Greedy argmax on the device (engine.h device_greedy). */
  deviceGreedy?: boolean;
}

/** decodeLoop's mode bits (engine/native/src/engine.h). */
const LOOP_MODES: Record<string, number> = { engine: 0, "llama-bench batch, no logits read": 3 };

export interface NativeLoopRun extends SingleConfig {
  mode: string;
  graphsReused: number;
  tokPerS: number;
  firstStepMs: number;
  medianStepMs: number;
  maxStepMs: number;
}

export interface SingleStreamResult {
  env: Record<string, string>;
  engine: (DecodeRun & SingleConfig)[];
  /** The same decode in a C++ loop inside the addon, no JavaScript per token: where the engine's overhead is. */
  nativeLoop: NativeLoopRun[];
  llamaBench: LlamaBenchRow[];
}

/** The engine's defaults first (one sequence: one KV stream), then llama-bench's context, a serving-sized one, and the unified KV layout. */
const CONFIGS: SingleConfig[] = [
  { threads: 8, gpuEmbeddings: true },
  { threads: 8, gpuEmbeddings: true, deviceGreedy: true },
  { threads: 8, gpuEmbeddings: true, contextSize: 256, kvUnified: false },
  { threads: 8, gpuEmbeddings: true, contextSize: 4096, kvUnified: false },
  { threads: 8, gpuEmbeddings: true, contextSize: 256, kvUnified: true },
  { threads: 8, gpuEmbeddings: true, contextSize: 4096, kvUnified: true },
];
const REPEATS = 3;

async function nativeLoop(rt: NativeRuntime, genTokens: number, config: SingleConfig, mode: string): Promise<NativeLoopRun> {
  const seq = rt.sequences[0]!;
  await seq.clear();
  await seq.evaluatePrefix([1]);
  await rt.synchronize();
  const reused = rt.engine.info().graphsReused;
  const steps = await rt.scheduler.exclusive(() => rt.engine.decodeLoop(0, 1, 2, genTokens - 1, LOOP_MODES[mode]));
  const graphsReused = rt.engine.info().graphsReused - reused;
  await seq.clear();
  const total = steps.reduce((a, b) => a + b, 0);
  return {
    ...config,
    mode,
    graphsReused,
    tokPerS: steps.length / total,
    firstStepMs: steps[0]! * 1000,
    medianStepMs: median(steps) * 1000,
    maxStepMs: Math.max(...steps) * 1000,
  };
}

async function repeatedDecode(rt: NativeRuntime, lookahead: number, genTokens: number, config: SingleConfig): Promise<(DecodeRun & SingleConfig)[]> {
  rt.lookahead = lookahead;
  const runs: (DecodeRun & SingleConfig)[] = [];
  for (let r = 0; r < REPEATS; r++) runs.push({ ...(await decodeThroughput(rt, 1, 1, genTokens)), ...config });
  return runs;
}

/** Runs in the child: `--single-stream`. */
export async function singleStream(model: string, tools: string | undefined, genTokens: number, lookaheads: number[]): Promise<SingleStreamResult> {
  const engine: SingleStreamResult["engine"] = [];
  const loops: NativeLoopRun[] = [];
  for (const config of CONFIGS) {
    const rt = await NativeRuntime.load({ modelPath: model, contextSize: 2 * genTokens, parallel: 1, flashAttention: true, gpuLayers: -1, ...config });
    const loopModes = config.contextSize === undefined ? Object.keys(LOOP_MODES) : ["engine"];
    try {
      await decodeThroughput(rt, 1, 32, 32);
      for (const k of lookaheads) engine.push(...(await repeatedDecode(rt, k, genTokens, config)));
      for (const mode of loopModes) loops.push(await nativeLoop(rt, genTokens, config, mode), await nativeLoop(rt, genTokens, config, mode));
    } finally {
      await rt[Symbol.asyncDispose]();
    }
  }
  const llamaBench = tools ? await llamaBenchDecode(join(tools, "llama-bench"), model, genTokens) : [];
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith("GGML_CUDA_"))) as Record<string, string>;
  return { env, engine, nativeLoop: loops, llamaBench };
}

export type SingleRun = DecodeRun & SingleConfig & { env: Record<string, string>; runs: number[] };

/** The engine's single-stream figure: the configuration with the best median over its runs (not the best single run). */
export function bestSingle(results: SingleStreamResult[]): SingleRun | undefined {
  const groups = new Map<string, SingleRun>();
  for (const r of results) {
    for (const e of r.engine) {
      const key = JSON.stringify([r.env, e.threads, e.gpuEmbeddings, e.contextSize, e.kvUnified, e.deviceGreedy, e.lookahead]);
      const g = groups.get(key) ?? { ...e, env: r.env, runs: [] };
      g.runs.push(e.decodeTokPerS);
      groups.set(key, g);
    }
  }
  let best: SingleRun | undefined;
  for (const g of groups.values()) {
    g.decodeTokPerS = median(g.runs);
    if (!best || g.decodeTokPerS > best.decodeTokPerS) best = g;
  }
  return best;
}

/** Runs this script again with `--single-stream` under `env`; returns what the child printed. */
export async function singleStreamChild(script: string, args: string[], env: Record<string, string>): Promise<SingleStreamResult> {
  const { stdout } = await run(process.execPath, [script, ...args, "--single-stream"], { env: { ...process.env, ...env }, maxBuffer: 16 * 1024 * 1024 });
  return JSON.parse(stdout) as SingleStreamResult;
}
