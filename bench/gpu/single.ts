/**
 * Single-stream decode on the GPU, in a child process per CUDA configuration (ggml reads its
 * GGML_CUDA_* switches once per process): the engine with one sequence at several multi-step
 * depths, and llama-bench's tg under the same environment.
 */
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { NativeRuntime } from "../../engine/runtime/native-runtime.ts";
import { llamaBenchDecode, type LlamaBenchRow } from "./llamacpp.ts";
import { decodeThroughput, type DecodeRun } from "./measure.ts";

const run = promisify(execFile);

export interface SingleStreamResult {
  env: Record<string, string>;
  engine: (DecodeRun & { threads: number })[];
  /** The same decode in a C++ loop inside the addon, no JavaScript per token: where the engine's overhead is. */
  nativeLoopTokPerS: number[];
  llamaBench: LlamaBenchRow[];
}

async function nativeLoop(rt: NativeRuntime, genTokens: number): Promise<number> {
  const seq = rt.sequences[0]!;
  await seq.clear();
  await seq.evaluatePrefix([1, 2, 3, 4, 5, 6, 7, 8]);
  await rt.synchronize();
  const seconds = await rt.scheduler.exclusive(() => rt.engine.decodeLoop(0, 8, 9, genTokens));
  await seq.clear();
  return genTokens / seconds;
}

/** Runs in the child: `--single-stream`. */
export async function singleStream(model: string, tools: string | undefined, genTokens: number, lookaheads: number[]): Promise<SingleStreamResult> {
  const engine: SingleStreamResult["engine"] = [];
  const nativeLoopTokPerS: number[] = [];
  for (const threads of [4, 8, 16]) {
    const rt = await NativeRuntime.load({ modelPath: model, threads, contextSize: 128 + genTokens + 16, parallel: 1, flashAttention: true, gpuLayers: -1 });
    try {
      await decodeThroughput(rt, 1, 32, 32);
      for (const k of lookaheads) {
        rt.lookahead = k;
        // From (almost) empty context, as llama-bench's tg test runs.
        engine.push({ ...(await decodeThroughput(rt, 1, 2, genTokens)), threads });
      }
      if (threads === 8) nativeLoopTokPerS.push(await nativeLoop(rt, genTokens), await nativeLoop(rt, genTokens));
    } finally {
      await rt[Symbol.asyncDispose]();
    }
  }
  const llamaBench = tools ? await llamaBenchDecode(join(tools, "llama-bench"), model, genTokens) : [];
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith("GGML_CUDA_"))) as Record<string, string>;
  return { env, engine, nativeLoopTokPerS, llamaBench };
}

/** Runs this script again with `--single-stream` under `env`; returns what the child printed. */
export async function singleStreamChild(script: string, args: string[], env: Record<string, string>): Promise<SingleStreamResult> {
  const { stdout } = await run(process.execPath, [script, ...args, "--single-stream"], { env: { ...process.env, ...env }, maxBuffer: 16 * 1024 * 1024 });
  return JSON.parse(stdout) as SingleStreamResult;
}
