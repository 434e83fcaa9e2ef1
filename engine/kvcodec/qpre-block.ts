/**
 * A block of a K or V tensor as f32 (tokens x channels, token-major; keys already un-rotated),
 * quantised per channel and rANS-coded with one frequency table per channel class:
 * - channel c: value = mean_c + q * step, one step for all channels (for a given rate, equal
 *   absolute error in every channel minimises the block's squared error);
 * - the class of a channel is its spread in steps, sd_c / step, in half-octaves: channels that
 *   barely move cost almost nothing, wide ones get their own table;
 * - a channel wider than WIDE steps splits q into a high part (coded like a narrow channel) and
 *   `shift` low bits (a table per shift), so the alphabet stays small at fine steps;
 * - a high part beyond RANGE escapes to the f32 value rounded to F16 (attention-sink rows).
 * Body: step f32 | per channel mean f16, class u8 (bucket | shift << 4) | escapes u32 +
 * f16[] | per context lo u8, hi u8, freqs u16[hi - lo + 1] (lo > hi: unused) | rANS stream (rans.ts:
 * the two-state stream, or the wide one where the caller says so; the block does not record which).
 */
import { decodeTables, normaliseCounts, ransDecode, ransDecodeWide, ransEncode, ransEncodeWide, wideDecodeTables } from "./rans.ts";
import { F16_TO_F32, f32ToF16 } from "./state-tensors.ts";

const RANGE = 100;
const ESC = 2 * RANGE + 1;
const WIDE = 16;
const BUCKETS = 14;
// Low parts stay below ESC, so one alphabet serves both.
const MAX_SHIFT = 7;
const CONTEXTS = BUCKETS + MAX_SHIFT;

interface ChannelPlan {
  mean: Uint16Array;
  classes: Uint8Array;
}

/** Per-channel mean and standard deviation of a token-major block (x[token * channels + channel]). */
export function channelMoments(x: Float32Array, channels: number): { mean: Float64Array; sd: Float64Array } {
  const tokens = x.length / channels;
  const sum = new Float64Array(channels);
  const sum2 = new Float64Array(channels);
  for (let k = 0, j = 0; k < x.length; k++, j = j + 1 === channels ? 0 : j + 1) {
    sum[j] = sum[j]! + x[k]!;
    sum2[j] = sum2[j]! + x[k]! * x[k]!;
  }
  const mean = sum.map((v) => v / tokens);
  return { mean, sd: mean.map((m, j) => Math.sqrt(Math.max(sum2[j]! / tokens - m * m, 0))) };
}

function planChannels(x: Float32Array, channels: number, step: number): ChannelPlan {
  const { mean: m, sd } = channelMoments(x, channels);
  const mean = new Uint16Array(channels);
  const classes = new Uint8Array(channels);
  for (let j = 0; j < channels; j++) {
    mean[j] = f32ToF16(m[j]!);
    classes[j] = classOf(sd[j]! / step);
  }
  return { mean, classes };
}

function classOf(ratio: number): number {
  const shift = ratio > WIDE ? Math.min(Math.ceil(Math.log2(ratio / WIDE)), MAX_SHIFT) : 0;
  const r = ratio / 2 ** shift;
  const bucket = Math.max(0, Math.min(BUCKETS - 1, Math.round(2 * Math.log2(Math.max(r, 1e-6))) + 5));
  return bucket | (shift << 4);
}

/** The context of each coded symbol, in stream order: per element its high part, then its low bits when shifted. */
function contextsOf(classes: Uint8Array, tokens: number): Uint8Array {
  let perToken = 0;
  for (const c of classes) perToken += c >> 4 ? 2 : 1;
  const out = new Uint8Array(perToken * tokens);
  const row = new Uint8Array(perToken);
  let k = 0;
  for (const c of classes) {
    row[k++] = c & 15;
    if (c >> 4) row[k++] = BUCKETS + (c >> 4) - 1;
  }
  for (let t = 0; t < tokens; t++) out.set(row, t * perToken);
  return out;
}

interface Coded {
  symbols: Uint8Array;
  escapes: number[];
}

function quantise(x: Float32Array, step: number, plan: ChannelPlan, symbolCount: number): Coded {
  const channels = plan.mean.length;
  const symbols = new Uint8Array(symbolCount);
  const escapes: number[] = [];
  const inv = 1 / step;
  const mean = Float64Array.from(plan.mean, (h) => F16_TO_F32[h]!);
  for (let k = 0, s = 0, j = 0; k < x.length; k++, j = j + 1 === channels ? 0 : j + 1) {
    const q = Math.round((x[k]! - mean[j]!) * inv);
    const shift = plan.classes[j]! >> 4;
    const hi = q >> shift;
    if (Math.abs(hi) > RANGE) {
      symbols[s++] = ESC;
      escapes.push(f32ToF16(x[k]!));
      if (shift) symbols[s++] = 0;
      continue;
    }
    symbols[s++] = hi + RANGE;
    if (shift) symbols[s++] = q - (hi << shift);
  }
  return { symbols, escapes };
}

function tablesBytes(freqs: Uint16Array[]): Buffer {
  const parts: Buffer[] = [];
  for (const f of freqs) {
    let lo = 0;
    while (lo < f.length && f[lo] === 0) lo++;
    let hi = f.length - 1;
    while (hi >= 0 && f[hi] === 0) hi--;
    const b = Buffer.alloc(2 + 2 * Math.max(hi - lo + 1, 0));
    b[0] = lo < f.length ? lo : 1;
    b[1] = lo < f.length ? hi : 0;
    for (let s = lo; s <= hi; s++) b.writeUInt16LE(f[s]!, 2 + 2 * (s - lo));
    parts.push(b);
  }
  return Buffer.concat(parts);
}

/** Codes tokens x channels f32 rows (token-major) with quantiser step `step`; `wide`: the wide rANS stream. */
export function encodeBlock(x: Float32Array, channels: number, stepSize: number, wide = false): Buffer {
  const tokens = x.length / channels;
  const step = Math.fround(stepSize);
  const plan = planChannels(x, channels, step);
  const contexts = contextsOf(plan.classes, tokens);
  const coded = quantise(x, step, plan, contexts.length);
  const counts = Array.from({ length: CONTEXTS }, () => new Uint32Array(ESC + 1));
  for (let k = 0; k < contexts.length; k++) counts[contexts[k]!]![coded.symbols[k]!]!++;
  const freqs = counts.map(normaliseCounts);
  const head = Buffer.alloc(4 + 3 * channels + 4 + 2 * coded.escapes.length);
  head.writeFloatLE(step, 0);
  for (let j = 0; j < channels; j++) {
    head.writeUInt16LE(plan.mean[j]!, 4 + 3 * j);
    head[6 + 3 * j] = plan.classes[j]!;
  }
  const e = 4 + 3 * channels;
  head.writeUInt32LE(coded.escapes.length, e);
  coded.escapes.forEach((h, i) => head.writeUInt16LE(h, e + 4 + 2 * i));
  return Buffer.concat([head, tablesBytes(freqs), (wide ? ransEncodeWide : ransEncode)(coded.symbols, contexts, freqs)]);
}

function readTables(body: Buffer, offset: number): { freqs: Uint16Array[]; end: number } {
  const freqs: Uint16Array[] = [];
  let o = offset;
  for (let c = 0; c < CONTEXTS; c++) {
    const f = new Uint16Array(ESC + 1);
    const [lo, hi] = [body[o]!, body[o + 1]!];
    o += 2;
    for (let s = lo; s <= hi; s++, o += 2) f[s] = body.readUInt16LE(o);
    freqs.push(f);
  }
  return { freqs, end: o };
}

/** Decodes a block of `tokens` rows from `body` (the block's bytes and nothing else); `wide`: its stream is the wide one. */
export function decodeBlock(body: Buffer, tokens: number, channels: number, wide = false): Float32Array {
  const step = body.readFloatLE(0);
  const mean = new Float32Array(channels);
  const classes = new Uint8Array(channels);
  for (let j = 0, o = 4; j < channels; j++, o += 3) {
    mean[j] = F16_TO_F32[body.readUInt16LE(o)]!;
    classes[j] = body[o + 2]!;
  }
  const e = 4 + 3 * channels;
  const escapes = body.readUInt32LE(e);
  const { freqs, end } = readTables(body, e + 4 + 2 * escapes);
  const contexts = contextsOf(classes, tokens);
  const symbols = new Uint8Array(contexts.length);
  if (wide) ransDecodeWide(body.subarray(end), contexts, wideDecodeTables(freqs), symbols);
  else ransDecode(body.subarray(end), contexts, decodeTables(freqs), symbols);
  const out = new Float32Array(tokens * channels);
  const shifts = Uint8Array.from(classes, (c) => c >> 4);
  for (let k = 0, s = 0, j = 0, x = 0; k < out.length; k++, j = j + 1 === channels ? 0 : j + 1) {
    const hi = symbols[s++]!;
    const lo = shifts[j] ? symbols[s++]! : 0;
    out[k] = hi === ESC ? F16_TO_F32[body.readUInt16LE(e + 4 + 2 * x++)]! : mean[j]! + (((hi - RANGE) << shifts[j]!) + lo) * step;
  }
  return out;
}
