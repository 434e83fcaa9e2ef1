/**
 * Issue 26 feasibility probe (a diagnostic, not the product path): can documents whose KV was
 * computed on their own ([BOS] + document) be joined in a new order, with a fraction of their tokens
 * recomputed, and answer like a full prefill? In-process on the native engine, Gemma 3 270M, CPU,
 * unified KV; 6 of 12 documents (256-500 tokens of this repository's docs) in a random order plus a
 * question, 4 trials. The joined sequence is built in position order (cached cells moved with
 * seqAdd and shared with seqCp from a scratch sequence; selected runs decoded in place): llama.cpp
 * accepts a sequence's new tokens only at its next position (Y = X + 1), and Gemma's sliding-window
 * layers keep only the last window's cells, so recomputing in the middle after the whole join is
 * built is not possible through its API.
 * Selections at 5/15/30 %: oracle (the tokens whose K/V deviate most from full prefill's, all
 * layers: a ceiling no real selector reaches), oracleL1 (the same at layer 1: CacheBlend's signal),
 * prefix (the first tokens of each document), random. Quality: teacher-forced greedy agreement and
 * KL over the 64 tokens full prefill generates. Writes bench/results/rag-probe.json.
 *   tsx bench/rag-probe.ts          (STRATS=none,oracle to run some)
 */
import { writeFile } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { loadNativeAddon } from "../engine/native/binding.ts";
import { splitState, isTensor, F16_TO_F32, type KvTensor } from "../engine/kvcodec/state-tensors.ts";
import { compareLogits, GEN, prefill as prefillAt, rng } from "./rag-join.ts";

const MODEL = process.env.RAG_PROBE_MODEL ?? `${process.env.HOME}/.cache/llmfleet/models/gemma-3-270m-q4_k_m.gguf`;
const addon = await loadNativeAddon();
const e = await addon.load(MODEL, { contextSize: 16384, sequences: 70, threads: 2, kvUnified: true, batchSize: 512 });
const info = e.info();
const V = info.nVocab;
const bos = info.bos;
const tok = (s: string): number[] => Array.from(e.tokenize(s, false, false) as Int32Array);
// Paragraph docs from the repo's docs.
const text = ["docs/kv-store.md", "docs/api.md", "README.md", "engine/README.md", "docs/reference.md"].map((f) => readFileSync(f, "utf8")).join("\n\n");
const paras = text.split(/\n\n+/).filter((p) => p.length > 200);
const docs: number[][] = [];
let cur = "";
for (const p of paras) {
  cur += `${p}\n\n`;
  const t = tok(cur);
  if (t.length >= 256) {
    docs.push(t.slice(0, 500));
    cur = "";
  }
  if (docs.length >= 12) break;
}
console.error(`docs: ${docs.map((d) => d.length).join(",")}`);
const I32 = (a: number[]): Int32Array => Int32Array.from(a);
const prefill = (seq: number, pos: number, tokens: number[]): Promise<void> => prefillAt(e, seq, pos, tokens);
// chunk states: BOS + doc
const states: Buffer[] = [];
for (const d of docs) {
  e.seqRm(3, -1, -1);
  await prefill(3, 0, [bos, ...d]);
  states.push(await e.stateGetFile(3, I32([bos, ...d])));
  e.seqRm(3, -1, -1);
}
const question = tok("\n\nQuestion: Summarise what the documents above say about the KV cache and how it is stored. Answer:");
const stats = (ref: Float32Array, got: Float32Array): { agree: number; kl: number } => {
  const q = compareLogits(ref, got, V);
  return { agree: q.agreement, kl: q.kl };
};

/** Squared difference and squared norm of one token's row/column of two F16 tensors. */
function tokenDiff(x: KvTensor, y: KvTensor, i: number, j: number): [number, number] {
  const X = new Uint16Array(x.data.buffer, x.data.byteOffset, x.data.length / 2);
  const Y = new Uint16Array(y.data.buffer, y.data.byteOffset, y.data.length / 2);
  const n = x.tokenAxis === 0 ? x.cols : x.rows;
  const at = (k: number, t: number, cols: number): number => (x.tokenAxis === 0 ? t * cols + k : k * cols + t);
  let nu = 0;
  let de = 0;
  for (let k = 0; k < n; k++) {
    const u = F16_TO_F32[X[at(k, i, x.cols)]!]!;
    const v = F16_TO_F32[Y[at(k, j, y.cols)]!]!;
    nu += (u - v) ** 2;
    de += u * u;
  }
  return [nu, de];
}

/** Per position: relative K/V deviation between two states of the same positions (all layers, or layer `only`). */
function deviation(a: Buffer, b: Buffer, n: number, only?: number): Float64Array {
  const ta = splitState(a).filter(isTensor);
  const tb = splitState(b).filter(isTensor);
  const num = new Float64Array(n);
  const den = new Float64Array(n);
  ta.forEach((x, t) => {
    const y = tb[t]!;
    if (only !== undefined && x.layer !== only) return;
    const rowOf = new Map<number, number>();
    y.positions.forEach((p, i) => rowOf.set(p, i));
    x.positions.forEach((p, i) => {
      const j = rowOf.get(p);
      if (j === undefined || p >= n) return;
      const [nu, de] = tokenDiff(x, y, i, j);
      num[p]! += nu;
      den[p]! += de;
    });
  });
  return num.map((v, i) => (den[i]! > 0 ? v / den[i]! : 0));
}

async function join(pick: number[]): Promise<number> {
  e.seqRm(1, -1, -1);
  await prefill(1, 0, [bos]);
  let p = 1;
  for (const i of pick) {
    const d = docs[i]!;
    e.stateSetFile(3, states[i]!);
    e.seqRm(3, 0, 1);
    e.seqAdd(3, 1, -1, p - 1);
    e.seqCp(3, 1, -1, -1);
    e.seqRm(3, -1, -1);
    p += d.length;
  }
  return p;
}

// Interleaved build: A (seq 1) in position order; cached chunk cells copied from scratch 3, selected runs decoded into A.
async function buildInterleaved(pick: number[], prompt: number[], sel: number[]): Promise<{ p: number; runs: number }> {
  const runs: [number, number][] = [];
  for (const q of sel) {
    const r = runs.at(-1);
    if (r && q <= r[1] + 2) r[1] = q + 1;
    else runs.push([q, q + 1]);
  }
  e.seqRm(1, -1, -1);
  await prefill(1, 0, [bos]);
  let a = 1;
  let ri = 0;
  for (const i of pick) {
    const d = docs[i]!,
      b = a + d.length;
    e.stateSetFile(3, states[i]!);
    e.seqRm(3, 0, 1);
    e.seqAdd(3, 1, -1, a - 1);
    let p = a;
    while (ri < runs.length && runs[ri]![0] < b) {
      const [s0, t0] = runs[ri]!;
      const t = Math.min(t0, b);
      if (s0 > p) e.seqCp(3, 1, p, s0);
      e.seqRm(3, s0, t);
      await prefill(1, s0, prompt.slice(s0, t));
      p = t;
      if (t0 > b) {
        runs[ri] = [b, t0];
        break;
      } else ri++;
    }
    if (p < b) e.seqCp(3, 1, p, b);
    e.seqRm(3, -1, -1);
    a = b;
  }
  return { p: a, runs: runs.length };
}
const fractions = (process.env.FRACTIONS ?? "0.05,0.15,0.3").split(",").map(Number);
type Deviations = Record<"oracle" | "oracleL1", Float64Array>;

/** The positions (sorted) a strategy recomputes at fraction f of the documents' tokens. */
function selection(strat: string, f: number, t: { dev: Deviations; docEnd: number; pick: number[]; trial: number }): number[] {
  const n = Math.round(f * (t.docEnd - 1));
  const positions = [...Array(t.docEnd).keys()].slice(1);
  const ascending = (a: number, b: number): number => a - b;
  if (strat === "oracle" || strat === "oracleL1") {
    const d = t.dev[strat];
    return positions
      .sort((a, b) => d[b]! - d[a]!)
      .slice(0, n)
      .sort(ascending);
  }
  if (strat === "random") {
    const rr = rng(99 + t.trial);
    return positions
      .sort(() => rr() - 0.5)
      .slice(0, n)
      .sort(ascending);
  }
  if (strat === "suffix") return positions.slice(positions.length - n);
  if (strat === "prefix") {
    let start = 1;
    return t.pick.flatMap((i) => {
      const first = [...Array(Math.round(f * docs[i]!.length)).keys()].map((o) => start + o);
      start += docs[i]!.length;
      return first;
    });
  }
  return [];
}
const strategies = (process.env.STRATS ?? "none,oracle,oracleL1,prefix,random").split(",");
const res: Record<string, { agree: number[]; kl: number[]; ms: number[] }> = {};
const fullMs: number[] = [];
for (let trial = 0; trial < 4; trial++) {
  const r = rng(trial + 7);
  const pick = [...docs.keys()].sort(() => r() - 0.5).slice(0, 6);
  const prompt = [bos, ...pick.flatMap((i) => docs[i]!), ...question];
  const ctx = prompt.slice(0, -1),
    last = prompt.at(-1)!;
  const docEnd = prompt.length - question.length;
  e.seqRm(0, -1, -1);
  e.seqRm(2, -1, -1);
  let t0 = performance.now();
  await prefill(0, 0, ctx);
  const first = await e.step(I32([0]), I32([ctx.length]), I32([1]), I32([last]), Uint8Array.from([1]));
  fullMs.push(performance.now() - t0);
  e.seqRm(0, ctx.length, -1);
  const cont: number[] = [first[0]!];
  e.seqCp(0, 2, -1, -1);
  let pos = ctx.length + 1;
  await e.step(I32([2]), I32([ctx.length]), I32([1]), I32([last]), Uint8Array.from([0]));
  while (cont.length < GEN) cont.push((await e.step(I32([2]), I32([pos++]), I32([1]), I32([cont.at(-1)!]), Uint8Array.from([1])))[0]!);
  e.seqRm(2, -1, -1);
  const ref = await e.evalLogits(0, ctx.length, I32([last, ...cont.slice(0, GEN - 1)]));
  e.seqRm(0, docEnd, -1);
  const fullState = await e.stateGetFile(0, I32(prompt.slice(0, docEnd)));
  await join(pick);
  // force the shift by a no-op? states of joined seq: apply pending shift via a 1-token decode in scratch seq 3
  await prefill(3, 0, [bos]);
  e.seqRm(3, -1, -1);
  const joinState = await e.stateGetFile(1, I32(prompt.slice(0, docEnd)));
  const dev: Deviations = { oracle: deviation(fullState, joinState, docEnd), oracleL1: deviation(fullState, joinState, docEnd, 1) };
  e.seqRm(0, -1, -1);
  for (const strat of strategies)
    for (const f of strat === "none" ? [0] : fractions) {
      t0 = performance.now();
      const sel = selection(strat, f, { dev, docEnd, pick, trial });
      const built = await buildInterleaved(pick, prompt, sel);
      let p = built.p;
      const nruns = built.runs;
      await prefill(1, p, question.slice(0, -1));
      p += question.length - 1;
      await e.step(I32([1]), I32([p]), I32([1]), I32([last]), Uint8Array.from([1]));
      const ms = performance.now() - t0;
      e.seqRm(1, p, -1);
      const got = await e.evalLogits(1, p, I32([last, ...cont.slice(0, GEN - 1)]));
      const s = stats(ref, got);
      const key = `${strat}@${f}`;
      (res[key] ??= { agree: [], kl: [], ms: [] }).agree.push(s.agree);
      res[key]!.kl.push(s.kl);
      res[key]!.ms.push(ms);
      console.error(
        `trial ${trial} ${key}: agree ${s.agree.toFixed(3)} kl ${s.kl.toFixed(4)} ${ms.toFixed(0)} ms, ${nruns} runs (full ${fullMs.at(-1)!.toFixed(0)} ms, ${prompt.length} tokens)`,
      );
    }
}
const mean = (x: number[]): number => x.reduce((a, b) => a + b, 0) / x.length;
const summary = Object.fromEntries(
  Object.entries(res).map(([k, v]) => [
    k,
    {
      agreement: +mean(v.agree).toFixed(3),
      kl: +mean(v.kl).toFixed(4),
      ttft_ms: Math.round(mean(v.ms)),
      ttft_ratio_vs_full: +(mean(fullMs) / mean(v.ms)).toFixed(2),
    },
  ]),
);
await writeFile(
  process.env.RAG_PROBE_OUT ?? "bench/results/rag-probe.json",
  `${JSON.stringify({ date: new Date().toISOString(), model: "gemma-3-270m-q4_k_m", machine: "2-core VM (shared)", full_prefill_ms: Math.round(mean(fullMs)), docs: docs.map((d) => d.length), results: summary }, null, 2)}\n`,
);
for (const [k, v] of Object.entries(res))
  console.log(
    `${k}: agree ${mean(v.agree).toFixed(3)} kl ${mean(v.kl).toFixed(4)} ttft ${mean(v.ms).toFixed(0)} ms vs full ${mean(fullMs).toFixed(0)} (${(mean(fullMs) / mean(v.ms)).toFixed(2)}x)`,
  );
await e.dispose();
