/** The engine's side of the GPU benchmark: everything goes through NativeRuntime (the engine's runtime) and its batching loop. */
import type { NativeRuntime } from "../../engine/runtime/native-runtime.ts";
import type { RuntimeSequence, Sampling, Token } from "../../engine/runtime/runtime.ts";

export const GREEDY: Sampling = { temperature: 0, topK: 1, topP: 1 };

/** Deterministic pseudo-random tokens (distinct streams never share a prefix). */
export function randomTokens(n: number, seed: number, vocab: number): Token[] {
  let s = (seed * 2654435761) >>> 0 || 1;
  return Array.from({ length: n }, () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return 3 + ((s >>> 0) % (vocab - 3));
  });
}

async function generateN(seq: RuntimeSequence, first: Token, n: number): Promise<number> {
  let got = 0;
  for await (const token of seq.generate([first], GREEDY)) {
    void token;
    if (++got >= n) break;
  }
  return got;
}

async function clearAll(rt: NativeRuntime): Promise<void> {
  for (const s of rt.sequences) await s.clear();
}

export interface DecodeRun {
  sequences: number;
  lookahead: number;
  kvUnified?: boolean;
  deviceGreedy?: boolean;
  promptTokens: number;
  genTokens: number;
  prefillSeconds: number;
  decodeSeconds: number;
  decodeTokPerS: number;
  steps: number;
  /** Milliseconds a step spent sampling once its logits were ready (the device idle meanwhile). */
  sampleMsPerStep: number;
}

/** llama-batched-bench's TG phase, through the engine: n sequences prefill a prompt, then decode genTokens each, concurrently. */
export async function decodeThroughput(rt: NativeRuntime, n: number, promptTokens: number, genTokens: number): Promise<DecodeRun> {
  await clearAll(rt);
  const vocab = rt.engine.info().nVocab;
  const seqs = rt.sequences.slice(0, n);
  const prompts = seqs.map((_, i) => randomTokens(promptTokens, 1000 + i, vocab));
  const t0 = performance.now();
  await Promise.all(seqs.map((s, i) => s.evaluatePrefix(prompts[i]!.slice(0, -1))));
  await rt.synchronize();
  const t1 = performance.now();
  const steps0 = rt.scheduler.stats.steps;
  const sample0 = rt.engine.info().sampleSeconds;
  const counts = await Promise.all(seqs.map((s, i) => generateN(s, prompts[i]!.at(-1)!, genTokens)));
  const t2 = performance.now();
  const total = counts.reduce((a, b) => a + b, 0);
  const steps = rt.scheduler.stats.steps - steps0;
  return {
    sequences: n,
    lookahead: rt.lookahead,
    promptTokens,
    genTokens,
    prefillSeconds: (t1 - t0) / 1000,
    decodeSeconds: (t2 - t1) / 1000,
    decodeTokPerS: total / ((t2 - t1) / 1000),
    steps,
    sampleMsPerStep: ((rt.engine.info().sampleSeconds - sample0) * 1000) / Math.max(1, steps),
  };
}

async function firstToken(rt: NativeRuntime, seq: RuntimeSequence, prompt: readonly Token[]): Promise<number> {
  await rt.synchronize();
  const t0 = performance.now();
  await seq.evaluatePrefix(prompt.slice(0, -1));
  await generateN(seq, prompt.at(-1)!, 1);
  return (performance.now() - t0) / 1000;
}

export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export interface ReuseRun {
  contextTokens: number;
  questionTokens: number;
  stateBytes: number;
  exportSeconds: number;
  ttftRecomputeSeconds: number;
  /** Another sequence holds the context on the GPU: seq_cp, then only the question is prefilled. */
  ttftGpuResidentSeconds: number;
  /** The context's state comes from host memory (a Buffer, as the KV store's memory tier holds it). */
  ttftHostMemorySeconds: number;
  importSeconds: number;
}

/** TTFT of a question after an 8K context: recomputed, shared from GPU memory, loaded from host memory. */
export async function kvReuse(rt: NativeRuntime, contextTokens: number, questionTokens: number, repeats: number): Promise<ReuseRun> {
  const vocab = rt.engine.info().nVocab;
  const context = randomTokens(contextTokens, 7, vocab);
  const prompt = [...context, ...randomTokens(questionTokens, 8, vocab)];
  const [a, b] = [rt.sequences[0]!, rt.sequences[1]!];
  const recompute: number[] = [];
  const resident: number[] = [];
  const host: number[] = [];
  const imports: number[] = [];
  for (let r = 0; r < repeats; r++) {
    await clearAll(rt);
    recompute.push(await firstToken(rt, b, prompt));
    await clearAll(rt);
    await a.evaluatePrefix(context);
    resident.push(await firstToken(rt, b, prompt));
  }
  await clearAll(rt);
  await a.evaluatePrefix(context);
  const e0 = performance.now();
  const state = await a.exportState();
  const exportSeconds = (performance.now() - e0) / 1000;
  for (let r = 0; r < repeats; r++) {
    await clearAll(rt);
    await rt.synchronize();
    const t0 = performance.now();
    await b.importState(state);
    imports.push((performance.now() - t0) / 1000);
    host.push((performance.now() - t0) / 1000 + (await firstToken(rt, b, prompt)));
  }
  return {
    contextTokens,
    questionTokens,
    stateBytes: state.length,
    exportSeconds,
    ttftRecomputeSeconds: median(recompute),
    ttftGpuResidentSeconds: median(resident),
    ttftHostMemorySeconds: median(host),
    importSeconds: median(imports),
  };
}
