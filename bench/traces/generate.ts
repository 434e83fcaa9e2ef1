// `npm run bench:autoscale-traces`: writes the autoscaling benchmark's own request traces to
// bench/traces/*.jsonl.gz, in the form of /work/shared/traces/mooncake_synthetic.jsonl (one JSON
// object a line: timestamp in ms, input_length, output_length, hash_ids naming 512-token prompt
// blocks; requests that share leading ids share that prefix), gzipped to keep the repository small.
// Deterministic: the same seed writes the same bytes. Each trace is one tenant of its kind for 30
// minutes (one to two H100 prefill replicas of work); the benchmark replays ten tenants of each.
//
// The shapes follow public descriptions of real workloads, not any one trace:
// - chat: multi-turn sessions (ShareGPT / LMSYS-Chat-1M, Mooncake's conversation trace): each turn's
//   prompt carries the session so far, so prompts grow within a session and share its prefix;
//   sessions arrive as a Poisson process whose rate drifts slowly; think time between turns.
// - code: IDE completion (Azure LLM inference trace 2023, code: Splitwise, ISCA'24): prompts of
//   ~2k tokens with a long tail, outputs of tens of tokens, arrivals in bursts (typing sessions)
//   on top of a base rate.
// - rag: retrieval-augmented QA: 1–3 documents of 3–12k tokens from a Zipf-popular corpus placed
//   after a shared system prompt, then the question: long prompts, heavy prefix sharing.
// - batch: a trickle of interactive requests plus offline jobs (summarisation, extraction) that
//   submit hundreds to thousands of requests within a minute, several times an hour.
import { mkdirSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { benchArgs } from "../cli.ts";
import { gzipSync } from "node:zlib";
import { prng } from "../../engine/model/synthetic-gguf.ts";

const BLOCK = 512;
const SPAN_SECONDS = 1800;

export interface Row {
  timestamp: number;
  input_length: number;
  output_length: number;
  hash_ids: number[];
}

class Rng {
  private readonly u: () => number;
  private spare: number | undefined;

  constructor(seed: number) {
    this.u = prng(seed);
  }

  uniform(): number {
    return this.u();
  }

  normal(): number {
    if (this.spare !== undefined) {
      const s = this.spare;
      this.spare = undefined;
      return s;
    }
    const r = Math.sqrt(-2 * Math.log(1 - this.u()));
    const a = 2 * Math.PI * this.u();
    this.spare = r * Math.sin(a);
    return r * Math.cos(a);
  }

  /** Log-normal with the given median and log-space sigma, rounded, within [lo, hi]. */
  lognormal(median: number, sigma: number, lo: number, hi: number): number {
    return Math.round(Math.min(hi, Math.max(lo, median * Math.exp(sigma * this.normal()))));
  }

  exponential(mean: number): number {
    return -Math.log(1 - this.u()) * mean;
  }

  /** Poisson arrival times in [from, to) with rate rate(t), by thinning against rateMax. */
  arrivals(from: number, to: number, rate: (t: number) => number, rateMax: number): number[] {
    const out: number[] = [];
    for (let t = from + this.exponential(1 / rateMax); t < to; t += this.exponential(1 / rateMax)) if (this.u() * rateMax < rate(t)) out.push(t);
    return out;
  }
}

/** Fresh block ids, and the ids of a prompt made of shared blocks followed by its own. */
class Blocks {
  private next = 0;

  fresh(tokens: number): number[] {
    return Array.from({ length: Math.ceil(tokens / BLOCK) }, () => this.next++);
  }
}

const row = (t: number, input: number, output: number, ids: number[]): Row => ({
  timestamp: Math.round(t * 1000),
  input_length: input,
  output_length: output,
  hash_ids: ids.slice(0, Math.ceil(input / BLOCK)),
});

/** Slow drift of a rate over the trace: ±amp around 1, two periods of unequal length. */
const drift = (t: number, amp: number): number => 1 + amp * (0.6 * Math.sin((2 * Math.PI * t) / 1500) + 0.4 * Math.sin((2 * Math.PI * t) / 530 + 1));

function chat(rng: Rng): Row[] {
  const blocks = new Blocks();
  const systems = Array.from({ length: 4 }, () => blocks.fresh(BLOCK));
  const rows: Row[] = [];
  for (const start of rng.arrivals(0, SPAN_SECONDS, (t) => 3.2 * drift(t, 0.3), 3.2 * 1.3)) {
    const system = systems[Math.floor(rng.uniform() * systems.length)] ?? [];
    let context = BLOCK;
    let ids = [...system];
    let t = start;
    const turns = 1 + Math.floor(rng.exponential(3));
    for (let k = 0; k < turns && t < SPAN_SECONDS && context < 32000; k++) {
      const user = rng.lognormal(90, 1.1, 4, 4000);
      const prompt = context + user;
      ids = [...ids.slice(0, Math.floor(context / BLOCK)), ...blocks.fresh(prompt - Math.floor(context / BLOCK) * BLOCK)];
      const output = rng.lognormal(220, 0.8, 1, 2048);
      rows.push(row(t, prompt, output, ids));
      context = prompt + output;
      t += 5 + rng.lognormal(25, 0.9, 2, 600);
    }
  }
  return rows;
}

function code(rng: Rng): Row[] {
  const blocks = new Blocks();
  const rows: Row[] = [];
  // Typing sessions: each sends completions every 0.3–3 s for 5–60 s, with a file's context.
  for (const start of rng.arrivals(0, SPAN_SECONDS, (t) => 0.45 * drift(t, 0.4), 0.45 * 1.4)) {
    const file = blocks.fresh(16000);
    const length = 5 + rng.exponential(20);
    const base = rng.lognormal(1500, 0.9, 50, 16000);
    for (let t = start; t < Math.min(SPAN_SECONDS, start + length); t += 0.3 + rng.exponential(1.2)) {
      const prompt = Math.min(16000, Math.max(20, Math.round(base * (0.9 + 0.2 * rng.uniform()))));
      rows.push(row(t, prompt, rng.lognormal(18, 1, 1, 600), file));
    }
  }
  // Background: single completions (other users, chat in the IDE).
  for (const t of rng.arrivals(0, SPAN_SECONDS, (x) => 2 * drift(x, 0.3), 2.6))
    rows.push(row(t, rng.lognormal(1800, 1, 20, 16000), rng.lognormal(25, 1.1, 1, 800), blocks.fresh(16000)));
  return rows;
}

function rag(rng: Rng): Row[] {
  const blocks = new Blocks();
  const system = blocks.fresh(BLOCK);
  const docs = Array.from({ length: 300 }, () => {
    const tokens = rng.lognormal(6000, 0.45, 3000, 12000);
    return { tokens, ids: blocks.fresh(tokens) };
  });
  // Zipf(1) popularity over the corpus.
  const weights = docs.map((_, i) => 1 / (i + 1));
  const total = weights.reduce((a, b) => a + b, 0);
  const pick = (): (typeof docs)[number] => {
    let u = rng.uniform() * total;
    for (const [i, w] of weights.entries()) if ((u -= w) <= 0) return docs[i] ?? docs[0]!;
    return docs[docs.length - 1]!;
  };
  return rng.arrivals(0, SPAN_SECONDS, (t) => 1.1 * drift(t, 0.35), 1.1 * 1.35).map((t) => {
    const chosen = Array.from({ length: 1 + Math.floor(rng.uniform() * 3) }, pick);
    const question = rng.lognormal(60, 0.7, 8, 600);
    const ids = [...system, ...chosen.flatMap((d) => d.ids), ...blocks.fresh(question)];
    const prompt = BLOCK + chosen.reduce((s, d) => s + Math.ceil(d.tokens / BLOCK) * BLOCK, 0) + question;
    return row(t, prompt, rng.lognormal(200, 0.6, 10, 1500), ids);
  });
}

function batch(rng: Rng): Row[] {
  const blocks = new Blocks();
  const rows: Row[] = [];
  for (const t of rng.arrivals(0, SPAN_SECONDS, () => 3, 3)) rows.push(row(t, rng.lognormal(700, 0.9, 10, 8000), rng.lognormal(150, 0.8, 1, 1500), blocks.fresh(8000)));
  // Jobs: a job's requests share its instruction prompt; submitted at 5–20 requests/s.
  for (const start of rng.arrivals(0, SPAN_SECONDS, () => 1 / 150, 1 / 150)) {
    const instruction = blocks.fresh(BLOCK);
    const count = rng.lognormal(800, 0.6, 100, 3000);
    const rate = 5 + 15 * rng.uniform();
    const doc = rng.lognormal(2500, 0.5, 300, 8000);
    for (let k = 0, t = start; k < count && t < SPAN_SECONDS; k++, t += rng.exponential(1 / rate)) {
      const prompt = BLOCK + rng.lognormal(doc, 0.4, 100, 12000);
      rows.push(row(t, prompt, rng.lognormal(250, 0.5, 10, 1000), [...instruction, ...blocks.fresh(prompt - BLOCK)]));
    }
  }
  return rows;
}

export const GENERATORS = { chat, code, rag, batch } as const;

export function generate(kind: keyof typeof GENERATORS, seed: number): Row[] {
  return GENERATORS[kind](new Rng(seed)).sort((a, b) => a.timestamp - b.timestamp);
}

function main(): void {
  const { values } = benchArgs({ options: { seed: { type: "string", default: "2026" }, out: { type: "string" } } });
  const seed = Number(values.seed);
  const dir = values.out ?? resolve(import.meta.dirname);
  mkdirSync(dir, { recursive: true });
  for (const [i, kind] of (Object.keys(GENERATORS) as Array<keyof typeof GENERATORS>).entries()) {
    const rows = generate(kind, seed + i);
    const text = rows.map((r) => JSON.stringify(r).replaceAll(",", ", ").replaceAll(":", ": ")).join("\n") + "\n";
    const gz = gzipSync(text, { level: 9 });
    const path = resolve(dir, `${kind}.jsonl.gz`);
    writeFileSync(path, gz);
    const tokens = rows.reduce((s, r) => s + r.input_length, 0);
    console.log(`${path}: ${rows.length} requests, ${(tokens / SPAN_SECONDS).toFixed(0)} prompt tokens/s, mean prompt ${(tokens / rows.length).toFixed(0)}; ${(gz.length / 1024).toFixed(0)} KiB`);
  }
}

if (process.argv[1] === import.meta.filename) main();
