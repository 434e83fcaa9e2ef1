/**
 * bench:kv-importance's coder: qsink8's transform (attention sink exact, keys un-rotated and
 * scaled by their query gains, a step per tensor from the measured sensitivities) with the step of
 * each token scaled by how much attention it gets: multiplier (importance / median)^-ALPHA,
 * clamped to [LO, HI] and rounded to a power of two; each power of two is one qpre block. Sizes
 * are the real coded bytes (blocks, exact sink rows, a 4-bit tier per row, the rest of the state
 * Brotli'd). Mutates the state it codes: the result is what a decoder would rebuild.
 */
import { brotliCompressSync } from "node:zlib";
import { ROPES } from "../../engine/kvcodec/codec.ts";
import { decodeBlock, encodeBlock } from "../../engine/kvcodec/qpre-block.ts";
import { intoTensor, offsetOf, prepare, scaleChannels, type QpreOptions } from "../../engine/kvcodec/qpre.ts";
import { GEMMA3_270M_SINK, sensitivityPolicy } from "../../engine/kvcodec/qpre-policy.ts";
import { gemma3QueryGains } from "../../engine/kvcodec/query-gains.ts";
import { ropeTables, rotateRows } from "../../engine/kvcodec/rope.ts";
import { isTensor, splitState, type KvTensor } from "../../engine/kvcodec/state-tensors.ts";

export const ALPHA = 0.5;
export const LO = 0.25;
export const HI = 16;
/** qsink8's options without its recency tier (importance covers the recent tokens). */
const OPTIONS: QpreOptions = { ropes: ROPES, policy: sensitivityPolicy(1.1, 0, 1, GEMMA3_270M_SINK), sinkPositions: 1, gains: gemma3QueryGains };

/** Per row of a tensor, the attention it gets (undefined: every row alike, qsink8 without tiers). */
export type Importance = (t: KvTensor) => Float32Array | undefined;

/** Power-of-two step exponent per row. */
function tiersOf(weights: Float32Array | undefined, rows: number): Int8Array {
  if (!weights) return new Int8Array(rows);
  const median = [...weights].sort((a, b) => a - b)[rows >> 1]! || 1e-9;
  return Int8Array.from(weights, (w) => Math.round(Math.log2(Math.min(HI, Math.max(LO, (Math.max(w, 1e-9) / median) ** -ALPHA)))));
}

function groups(tiers: Int8Array, skip: (i: number) => boolean): Map<number, number[]> {
  const out = new Map<number, number[]>();
  tiers.forEach((e, i) => {
    if (!skip(i)) (out.get(e) ?? out.set(e, []).get(e)!).push(i);
  });
  return out;
}

/** Codes one tensor in place (unless dry); returns its coded bytes. */
function codeTensor(t: KvTensor, weights: Float32Array | undefined, scale: number, dry: boolean): number {
  const sinks = [...t.positions.keys()].filter((i) => t.positions[i]! < OPTIONS.sinkPositions!);
  const gains = OPTIONS.gains!(t);
  const { x, channels, rope, rms } = prepare(t, OPTIONS, { exactRows: sinks, gains });
  const step = OPTIONS.policy(t).step * rms * scale;
  const rows = x.length / channels;
  let bytes = 22 + Math.ceil(rows / 2) + sinks.length * (4 + 2 * channels) + (gains ? channels / 2 : 0);
  for (const [e, idx] of groups(tiersOf(weights, rows), (i) => sinks.includes(i))) {
    const y = new Float32Array(idx.length * channels);
    idx.forEach((i, r) => y.set(x.subarray(i * channels, (i + 1) * channels), r * channels));
    const block = encodeBlock(y, channels, step * 2 ** e);
    bytes += block.length + 8;
    const back = dry ? y : decodeBlock(block, idx.length, channels);
    idx.forEach((i, r) => x.set(back.subarray(r * channels, (r + 1) * channels), i * channels));
  }
  if (dry) return bytes;
  if (gains) scaleChannels(x, gains, -1);
  if (rope) rotateRows(x, ropeTables(t.positions, channels, rope.base), rope.style, 1);
  // The sink rows stay exact: kept as they are while the rest is rewritten.
  const exact = sinks.map((i) => Array.from({ length: channels }, (_, j) => t.data.readUInt16LE(offsetOf(t, channels, i, j))));
  intoTensor(x, t);
  sinks.forEach((i, r) => exact[r]!.forEach((h, j) => t.data.writeUInt16LE(h, offsetOf(t, channels, i, j))));
  return bytes;
}

/** Codes every K/V tensor of `state` in place (a copy when dry) with steps × `scale`; returns the coded size. */
export function codeState(state: Buffer, importance: Importance, scale: number, dry = false): number {
  let bytes = 0;
  for (const part of splitState(dry ? Buffer.from(state) : state)) {
    bytes += isTensor(part) ? codeTensor(part, importance(part), scale, dry) : brotliCompressSync(part).length + 5;
  }
  return bytes;
}

/** The step scale at which `state` codes to its size / `ratio` (bisection on a log scale). */
export function scaleFor(state: Buffer, importance: Importance, ratio: number): number {
  let [lo, hi] = [0.05, 20];
  for (let it = 0; it < 14; it++) {
    const mid = Math.sqrt(lo * hi);
    if (state.length / codeState(state, importance, mid, true) > ratio) hi = mid;
    else lo = mid;
  }
  return hi;
}
