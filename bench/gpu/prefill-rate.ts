/**
 * `node --import tsx bench/gpu/prefill-rate.ts [--model FILE | --preset 8b] [--out FILE]`: does the
 * engine's prefill busy counter read the rate a replica prefills at? The autoscaler learns a
 * prefill pool's capacity as llmfleet_engine_native_prefill_tokens_total over
 * llmfleet_engine_native_prefill_seconds_total (StepStats.prefillTokens / prefillSeconds). Here
 * prompts of several sizes go through the engine's runtime one at a time, eight at a time, and
 * beside sequences that decode; each case gives the counter's rate beside the wall-clock rate
 * (prompt tokens / elapsed time, the device synchronised). On the GPU machine it runs after
 * bench/gpu/device.sh's build (LLMFLEET_NATIVE_ADDON set).
 */
import { mkdir, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { benchArgs } from "../cli.ts";
import { SYNTHETIC_PRESETS, writeSyntheticModel } from "../../engine/model/synthetic-gguf.ts";
import { NativeRuntime } from "../../engine/runtime/native-runtime.ts";
import type { RuntimeSequence, Token } from "../../engine/runtime/runtime.ts";
import { GREEDY, randomTokens } from "./measure.ts";

const { values: args } = benchArgs({ options: { model: { type: "string" }, preset: { type: "string", default: "8b" }, out: { type: "string" }, cpu: { type: "boolean", default: false } } });
const PARALLEL = 8;
const MAX_PROMPT = 8192;

interface Case {
  name: string;
  promptTokens: number;
  concurrent: number;
  decoding: number;
  prompts: number;
  counterTokensPerSecond: number;
  wallTokensPerSecond: number;
  /** Counter ÷ wall: 1 when the counter reads the rate the pool delivers. */
  ratio: number;
}

async function firstToken(seq: RuntimeSequence, prompt: readonly Token[]): Promise<void> {
  await seq.evaluatePrefix(prompt.slice(0, -1));
  for await (const t of seq.generate([prompt.at(-1)!], GREEDY)) {
    void t;
    break;
  }
}

/** Sequences that decode until `stop` resolves (the load beside the prompts in a mixed case). */
function decodeUntil(seqs: RuntimeSequence[], vocab: number, stop: Promise<void>): Promise<void> {
  let done = false;
  void stop.then(() => (done = true));
  return Promise.all(
    seqs.map(async (s, i) => {
      await s.clear();
      const p = randomTokens(64, 500 + i, vocab);
      await s.evaluatePrefix(p.slice(0, -1));
      for await (const t of s.generate([p.at(-1)!], GREEDY)) {
        void t;
        if (done) break;
      }
    }),
  ).then(() => undefined);
}

async function runCase(rt: NativeRuntime, promptTokens: number, concurrent: number, decoding: number): Promise<Case> {
  const vocab = rt.engine.info().nVocab;
  const prompts = Math.max(concurrent, Math.ceil(65536 / promptTokens / concurrent) * concurrent);
  for (const s of rt.sequences) await s.clear();
  let release = (): void => undefined;
  const stop = new Promise<void>((r) => (release = r));
  const background = decodeUntil(rt.sequences.slice(concurrent, concurrent + decoding), vocab, stop);
  await rt.synchronize();
  const s0 = { ...rt.stepStats };
  const t0 = performance.now();
  let next = 0;
  await Promise.all(
    rt.sequences.slice(0, concurrent).map(async (seq) => {
      while (next < prompts) {
        const i = next++;
        await seq.clear();
        await firstToken(seq, randomTokens(promptTokens, 10_000 + i, vocab));
      }
    }),
  );
  await rt.synchronize();
  const wall = (performance.now() - t0) / 1000;
  const s1 = { ...rt.stepStats };
  release();
  await background;
  const tokens = s1.prefillTokens - s0.prefillTokens;
  const counter = tokens / Math.max(1e-9, s1.prefillSeconds - s0.prefillSeconds);
  // Wall-clock: the prompt tokens over the time they took; with decoders beside, their share of
  // the steps is the decode tokens', so the wall rate there is a lower bound.
  const wallRate = (prompts * (promptTokens - 1)) / wall;
  const name = `${promptTokens} tokens, ${concurrent} at a time${decoding ? `, ${decoding} decoding beside` : ""}`;
  console.error(`[prefill-rate] ${name}: counter ${counter.toFixed(0)} tok/s, wall ${wallRate.toFixed(0)} tok/s (${prompts} prompts, ${wall.toFixed(1)} s)`);
  return { name, promptTokens, concurrent, decoding, prompts, counterTokensPerSecond: counter, wallTokensPerSecond: wallRate, ratio: counter / wallRate };
}

async function main(): Promise<void> {
  const preset = SYNTHETIC_PRESETS[args.preset ?? "8b"];
  if (!preset) throw new Error(`no preset ${args.preset}`);
  const model = args.model ? resolve(args.model) : await writeSyntheticModel(join(tmpdir(), "llmfleet-gpu", `synthetic-${args.preset}.gguf`), preset);
  const maxPrompt = Math.min(MAX_PROMPT, preset.contextLength - 64);
  const rt = await NativeRuntime.load({ modelPath: model, threads: 8, contextSize: maxPrompt + 64, parallel: PARALLEL, batchSize: 2048, flashAttention: !args.cpu, gpuLayers: args.cpu ? 0 : -1 });
  try {
    await runCase(rt, Math.min(512, maxPrompt), 1, 0); // warm-up
    const sizes = [512, 2048, 8192].filter((n) => n <= maxPrompt);
    const cases: Case[] = [];
    for (const n of sizes) cases.push(await runCase(rt, n, 1, 0), await runCase(rt, n, 4, 0), await runCase(rt, n, 4, 4));
    const out = args.out ?? "bench/results/prefill-rate.json";
    await mkdir(dirname(out), { recursive: true });
    await writeFile(out, `${JSON.stringify({ date: new Date().toISOString(), model: rt.engine.info().description, cases }, null, 2)}\n`);
  } finally {
    await rt[Symbol.asyncDispose]();
  }
}

await main();
