// Request traces for the autoscaling replay: Azure LLM inference CSV (TIMESTAMP, ContextTokens,
// GeneratedTokens) and Mooncake JSONL (timestamp ms, input_length, output_length, hash_ids),
// either of them optionally gzipped (bench/traces/*.jsonl.gz).
import { prng } from "../../engine/model/synthetic-gguf.ts";
import { readFileSync } from "node:fs";
import { gunzipSync } from "node:zlib";

export interface TraceRequest {
  /** Arrival, seconds from the trace's first request. */
  at: number;
  promptTokens: number;
  outputTokens: number;
}

function parseAzure(text: string): TraceRequest[] {
  const lines = text.trim().split("\n").slice(1);
  const rows = lines.map((line) => {
    const [ts = "", ctx = "0", gen = "0"] = line.split(",");
    // "2023-11-16 18:15:46.6805900": seven fractional digits; Date takes milliseconds.
    const [date, frac = "0"] = ts.split(".");
    const ms = Date.parse(`${date?.replace(" ", "T")}Z`) + Number(`0.${frac}`) * 1000;
    return { ms, promptTokens: Number(ctx), outputTokens: Number(gen) };
  });
  const t0 = rows[0]?.ms ?? 0;
  return rows.map((r) => ({ at: (r.ms - t0) / 1000, promptTokens: r.promptTokens, outputTokens: r.outputTokens }));
}

function parseMooncake(text: string): TraceRequest[] {
  const rows = text
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { timestamp: number; input_length: number; output_length: number });
  const t0 = rows[0]?.timestamp ?? 0;
  return rows.map((r) => ({ at: (r.timestamp - t0) / 1000, promptTokens: r.input_length, outputTokens: r.output_length }));
}

export function loadTrace(path: string): TraceRequest[] {
  const raw = readFileSync(path);
  const text = (raw[0] === 0x1f && raw[1] === 0x8b ? gunzipSync(raw) : raw).toString("utf8");
  const reqs = text.trimStart().startsWith("{") ? parseMooncake(text) : parseAzure(text);
  return reqs.sort((a, b) => a.at - b.at);
}

/** Deterministic uniform [0, 1) (mulberry32), so every scaler replays the very same requests. */
export const seededRandom = prng;

export interface Shaping {
  /** Copies of every request (independent tenants with the same traffic shape). Default 1. */
  amplify?: number;
  /** Spread of the copies' arrival offsets, seconds. Default 2. */
  jitterSeconds?: number;
  /** Divide arrival times by this (time compression). Default 1. */
  speedup?: number;
  /** Keep only the first `limitSeconds` of (shaped) trace. */
  limitSeconds?: number;
  /** Drop the (shaped) trace before this and start the clock there. Default 0. */
  fromSeconds?: number;
  seed?: number;
}

/** Scales a trace's load: copies with seeded jitter multiply the rate and keep its shape over minutes. */
export function shapeTrace(reqs: TraceRequest[], s: Shaping): TraceRequest[] {
  const rnd = seededRandom(s.seed ?? 1);
  const copies = s.amplify ?? 1;
  const jitter = s.jitterSeconds ?? 2;
  const speedup = s.speedup ?? 1;
  const out: TraceRequest[] = [];
  for (const r of reqs) {
    for (let k = 0; k < copies; k++) out.push({ ...r, at: r.at / speedup + (k === 0 ? 0 : rnd() * jitter) });
  }
  const limit = s.limitSeconds ?? Infinity;
  const from = s.fromSeconds ?? 0;
  return out
    .filter((r) => r.at >= from && r.at < limit)
    .map((r) => ({ ...r, at: r.at - from }))
    .sort((a, b) => a.at - b.at);
}
