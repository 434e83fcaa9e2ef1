/**
 * What the KV codec benchmarks share: the contexts (this repository's texts at a pinned commit),
 * the exact state's greedy continuation and its teacher-forced replay, the quality of a replay
 * after loading another state (greedy agreement, first disagreement, logit KL), and the
 * perturbation floor (bench/kv-codec.ts says what each measures).
 */
import { execFileSync } from "node:child_process";
import { readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getLlama, LlamaLogLevel, TokenBias, type ControlledEvaluateInputItem, type LlamaContextSequence, type Token } from "node-llama-cpp";
import { ensureDefaultModel } from "../engine/model/fetch.ts";
import { FLOOR_FLIPS, FLOOR_SEEDS, perturbed } from "./kv-floor.ts";
import { textAtCommit } from "./pinned-texts.ts";

export { FLOOR_FLIPS, FLOOR_SEEDS };

export const GENERATE = 256;
export const KL_EVERY = 16;
export const SOURCES = ["README.md", "engine/README.md", "docs/reference.md", "engine/kvstore/prefix-cache.ts"];
/**
 * The texts are read as they were at this commit, not from the working tree: these files change
 * with the project (a README edit moved qpre8's KL from 0.056 to 0.032 between two runs), and runs
 * only compare on the same contexts. The commit of the 2026-11-23 04:59 run.
 */
const TEXTS_AT = "5485dd3e7cba142c862a38b5b002b50aac6da20e";

interface Replay {
  top: Token[];
  probs: Map<Token, number>[];
}

export interface Quality {
  agreement: number;
  prefix: number;
  kl: number;
}

export interface Context {
  source: string;
  /** The context's tokens (BOS first); the state holds all but the last. */
  tokens: Token[];
  raw: Buffer;
  input: Token[];
  ref: Replay;
  noiseFloor: number;
}

export const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

const tmp = (what: string): string => join(tmpdir(), `llmfleet-kv-codec-${what}-${process.pid}.ggsq`);

export async function importState(seq: LlamaContextSequence, state: Buffer): Promise<void> {
  const path = tmp("load");
  await writeFile(path, state);
  await seq.clearHistory();
  await seq.loadStateFromFile(path, { acceptRisk: true });
  await rm(path, { force: true });
}

async function exportState(seq: LlamaContextSequence): Promise<Buffer> {
  const path = tmp("save");
  await seq.saveStateToFile(path);
  const state = await readFile(path);
  await rm(path, { force: true });
  return state;
}

/** GENERATE greedy tokens (end of text banned, so every context yields the full count). */
async function freeRun(seq: LlamaContextSequence, last: Token): Promise<Token[]> {
  const out: Token[] = [];
  const tokenBias = new TokenBias(seq.model.tokenizer);
  if (seq.model.tokens.eos !== null) tokenBias.set(seq.model.tokens.eos, "never");
  for await (const token of seq.evaluate([last], { temperature: 0, tokenBias })) {
    out.push(token);
    if (out.length >= GENERATE) break;
  }
  return out;
}

export async function replay(seq: LlamaContextSequence, input: Token[]): Promise<Replay> {
  const items: ControlledEvaluateInputItem[] = input.map((t, i) => [t, { generateNext: { token: true, probabilities: i % KL_EVERY === 0 } }]);
  const out = await seq.controlledEvaluate(items);
  return {
    top: out.map((o) => (o?.next.token ?? -1) as Token),
    probs: out.filter((_, i) => i % KL_EVERY === 0).map((o) => o?.next.probabilities ?? new Map<Token, number>()),
  };
}

const commonPrefix = (a: readonly Token[], b: readonly Token[]): number => {
  let n = 0;
  while (n < GENERATE && a[n] === b[n]) n++;
  return n;
};

export function compare(ref: Replay, got: Replay): Quality {
  let kl = 0;
  ref.probs.forEach((p, s) => {
    for (const [tok, v] of p) if (v > 1e-9) kl += (v * Math.log(v / Math.max(got.probs[s]!.get(tok) ?? 0, 1e-12))) / ref.probs.length;
  });
  const agreement = ref.top.filter((t, i) => t === got.top[i]).length / ref.top.length;
  return { agreement, prefix: commonPrefix(ref.top, got.top) / GENERATE, kl };
}

/** Quality after imperceptible perturbations of the exact state (see perturbation_floor above). */
export async function perturbationFloor(seq: LlamaContextSequence, ctx: Context): Promise<Quality> {
  const runs: Quality[] = [];
  for (let seed = 1; seed <= FLOOR_SEEDS; seed++) {
    await importState(seq, perturbed(ctx.raw, FLOOR_FLIPS, seed));
    runs.push(compare(ctx.ref, await replay(seq, ctx.input)));
  }
  return { agreement: mean(runs.map((r) => r.agreement)), prefix: Math.min(...runs.map((r) => r.prefix)), kl: mean(runs.map((r) => r.kl)) };
}

function textAt(source: string): string {
  return textAtCommit(TEXTS_AT, source, "the KV codec benchmarks");
}

export interface Tokenizer {
  tokenize(text: string): Token[];
  bos: Token;
}

export async function prepareContext(seq: LlamaContextSequence, tok: Tokenizer, source: string, contextTokens: number): Promise<Context> {
  let text = textAt(source);
  while (tok.tokenize(text).length < contextTokens) text += `\n\n${text}`;
  const tokens = [tok.bos, ...tok.tokenize(text)].slice(0, contextTokens);
  await seq.clearHistory();
  await seq.evaluateWithoutGeneratingNewTokens(tokens.slice(0, -1));
  const raw = await exportState(seq);
  await importState(seq, raw);
  const greedy = await freeRun(seq, tokens.at(-1)!);
  const input = [tokens.at(-1)!, ...greedy.slice(0, -1)];
  await importState(seq, raw);
  const ref = await replay(seq, input);
  return { source, tokens, raw, input, ref, noiseFloor: commonPrefix(greedy, ref.top) / GENERATE };
}

/** The default model with F32 weights (made once by scripts/kvcodec/dequantize.sh). */
export async function dequantised(): Promise<string> {
  const model = await ensureDefaultModel();
  return execFileSync("bash", [new URL("../scripts/kvcodec/dequantize.sh", import.meta.url).pathname, model], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  }).trim();
}

export interface BenchModel {
  modelPath: string;
  seq: LlamaContextSequence;
  tokenizer: Tokenizer;
  dispose(): Promise<void>;
}

/** The default model (or modelFile's) on the CPU, one sequence of contextTokens + GENERATE cells (full sliding-window cache, no flash attention: the state layout the codecs see). */
export async function openBenchModel(contextTokens: number, threads: number, modelFile?: () => Promise<string>): Promise<BenchModel> {
  const modelPath = await (modelFile ?? ensureDefaultModel)();
  const llama = await getLlama({ gpu: false, build: "never", maxThreads: threads, logLevel: LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath });
  const context = await model.createContext({
    sequences: 1,
    contextSize: contextTokens + GENERATE + 64,
    threads: { ideal: threads, min: threads },
    swaFullCache: true,
    flashAttention: false,
  });
  return {
    modelPath,
    seq: context.getSequence(),
    tokenizer: { tokenize: (text) => model.tokenize(text), bos: model.tokens.bos! },
    async dispose() {
      await context.dispose();
      await model.dispose();
      await llama.dispose();
    },
  };
}
