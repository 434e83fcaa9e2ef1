/**
 * A synthetic llama.cpp sequence state shaped like Gemma 3 270M's (a section of 3 full-attention
 * layers and one of 15 sliding-window layers, one KV head of 256 channels), for codec tests and
 * benchmarks that need no model: keys are channels with fixed means and spreads rotated by RoPE
 * (neox by default, the section's base), position 0 is an attention sink far outside the other rows, a few
 * outliers escape, values are channels without rotation. Layout: engine/runtime/seq-state.ts.
 */
import { ropeTables, rotateRows, type RopeStyle } from "../engine/kvcodec/rope.ts";
import { f32ArrayToF16 } from "../engine/kvcodec/state-tensors.ts";
import { rng } from "./rng.ts";

export interface SyntheticStateOptions {
  tokens: number;
  /** V stored transposed (llama.cpp without flash attention); default false. */
  vTransposed?: boolean;
  /** Positions jump by this after the first half (a gap, as after a removed span); default 0. */
  gap?: number;
  seed?: number;
  /** Layers per section; default Gemma 3 270M's [3, 15]. */
  sections?: readonly number[];
  channels?: number;
  /** How keys are rotated; default neox (Gemma's). */
  rope?: RopeStyle;
  /** Per section, how many of the newest cells it holds (a sliding-window cache); 0 or absent: all. */
  windows?: readonly number[];
  /**
   * Per section, its cells rotated by this many (a sliding-window ring buffer that wrapped: the
   * oldest tokens' cells after the newest's); the same rows per position as unrotated. Default none.
   */
  rings?: readonly number[];
}

const BASES: Record<number, number> = { 3: 1_000_000, 15: 10_000 };

function u32s(...vs: number[]): Buffer {
  const b = Buffer.alloc(4 * vs.length);
  vs.forEach((v, i) => b.writeUInt32LE(v >>> 0, 4 * i));
  return b;
}

/** tokens x channels f32 rows, token-major: per channel a mean and a spread; row 0 a sink. */
function rows(tokens: number, channels: number, rand: () => number): Float32Array {
  const mean = Array.from({ length: channels }, () => (rand() - 0.5) * 8);
  const sd = Array.from({ length: channels }, (_, j) => (j % 17 === 0 ? 6 : 0.02 + rand() * 1.5));
  const x = Float32Array.from({ length: tokens * channels }, (_, k) => mean[k % channels]! + sd[k % channels]! * (rand() + rand() + rand() - 1.5));
  for (let j = 0; j < channels; j++) x[j] = (rand() - 0.5) * 120;
  for (let k = 37; k < x.length; k += 9973) x[k] = x[k]! + 300;
  return x;
}

function f16(x: Float32Array): Buffer {
  const h = new Uint16Array(x.length);
  f32ArrayToF16(x, h);
  return Buffer.from(h.buffer);
}

function transpose(x: Float32Array, tokens: number, channels: number): Float32Array {
  const y = new Float32Array(x.length);
  for (let i = 0; i < tokens; i++) for (let j = 0; j < channels; j++) y[j * tokens + i] = x[i * channels + j]!;
  return y;
}

/** Token-major rows in cell order: cell c holds token (c + ring) % tokens. */
function toCells(x: Float32Array, channels: number, ring: number): Float32Array {
  if (ring === 0) return x;
  const tokens = x.length / channels;
  const y = new Float32Array(x.length);
  for (let c = 0; c < tokens; c++) y.set(x.subarray(((c + ring) % tokens) * channels, ((c + ring) % tokens + 1) * channels), c * channels);
  return y;
}

/** A section's cells: its tokens' positions, and its ring rotation (rings). */
function section(layers: number, cells: { positions: Int32Array; ring: number }, o: Required<SyntheticStateOptions>, rand: () => number): Buffer[] {
  const { channels } = o;
  const { positions, ring } = cells;
  const tokens = positions.length;
  const out: Buffer[] = [u32s(1, tokens)];
  for (let c = 0; c < tokens; c++) out.push(u32s(positions[(c + ring) % tokens]!, 1, 0));
  out.push(u32s(o.vTransposed ? 1 : 0, layers));
  const rowHead = Buffer.concat([u32s(1), Buffer.from(new BigUint64Array([BigInt(channels * 2)]).buffer)]);
  for (let l = 0; l < layers; l++) {
    const k = rows(tokens, channels, rand);
    rotateRows(k, ropeTables(positions, channels, BASES[layers] ?? 10_000), o.rope, 1);
    out.push(rowHead, f16(toCells(k, channels, ring)));
  }
  for (let l = 0; l < layers; l++) {
    const v = toCells(rows(tokens, channels, rand), channels, ring);
    out.push(...(o.vTransposed ? [u32s(1, 2, channels), f16(transpose(v, tokens, channels))] : [rowHead, f16(v)]));
  }
  return out;
}

export function syntheticSeqState(options: SyntheticStateOptions): Buffer {
  const o: Required<SyntheticStateOptions> = { vTransposed: false, gap: 0, seed: 1, sections: [3, 15], channels: 256, rope: "neox", windows: [], rings: [], ...options };
  const rand = rng(o.seed);
  const positions = Int32Array.from({ length: o.tokens }, (_, i) => (i < o.tokens / 2 ? i : i + o.gap));
  const tokenIds = Array.from({ length: o.tokens }, (_, i) => 2 + (i % 1000));
  const parts = [u32s(0x67677371, 1, o.tokens, ...tokenIds)];
  o.sections.forEach((layers, s) => {
    const window = o.windows[s] ?? 0;
    const held = window > 0 ? positions.subarray(Math.max(0, o.tokens - window)) : positions;
    parts.push(...section(layers, { positions: held, ring: (o.rings[s] ?? 0) % held.length }, o, rand));
  });
  return Buffer.concat(parts);
}
