/**
 * The "qpre" codecs: keys rotated back to before RoPE, then every F16 K/V tensor quantised per
 * channel and rANS-coded by qpre-block.ts, with a step per tensor from a policy (measured
 * sensitivities), the most recent tokens in a block of their own with a finer step.
 * Tensor body: rows u32 | cols u32 | token axis u8 | rope style u8 (0 none, 1 neox, 2 norm) |
 * rope base f32 | recent u32 | bulk length u32 | bulk block | recent block. Other parts of the
 * state: Brotli. Container: per part u8 kind (0 Brotli bytes, 1 tensor) | u32 length | body.
 */
import { brotliCompressSync, brotliDecompressSync, constants } from "node:zlib";
import type { KvCodec } from "./codec-names.ts";
import { channelMoments, decodeBlock, encodeBlock } from "./qpre-block.ts";
import { ropeTables, rotateRows, type Rope, type RopeStyle } from "./rope.ts";
import { F16_TO_F32, f32ArrayToF16, isTensor, splitState, type KvTensor } from "./state-tensors.ts";

export interface TensorPolicy {
  /** Step of the older tokens as a fraction of the tensor's RMS channel spread; 0 keeps the tensor exact. */
  step: number;
  recentTokens: number;
  /** Step of the recent tokens relative to `step`. */
  recentScale: number;
}

export interface QpreOptions {
  policy(t: Pick<KvTensor, "kind" | "layer" | "layers" | "positions">): TensorPolicy;
  /** RoPE candidates for keys; the encoder keeps the one that leaves the least channel variance. */
  ropes: readonly Rope[];
}

const STYLES: (RopeStyle | undefined)[] = [undefined, "neox", "norm"];

const brotli = (b: Buffer): Buffer => brotliCompressSync(b, { params: { [constants.BROTLI_PARAM_QUALITY]: 5, [constants.BROTLI_PARAM_SIZE_HINT]: b.length } });

const tokensOf = (t: Pick<KvTensor, "rows" | "cols" | "tokenAxis">): number => (t.tokenAxis === 0 ? t.rows : t.cols);

/** The tensor as f32, tokens x channels, token-major. */
function toRows(t: KvTensor): Float32Array {
  const h = new Uint16Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.length));
  const x = new Float32Array(h.length);
  if (t.tokenAxis === 0) for (let k = 0; k < h.length; k++) x[k] = F16_TO_F32[h[k]!]!;
  else for (let j = 0, k = 0; j < t.rows; j++) for (let i = 0; i < t.cols; i++, k++) x[i * t.rows + j] = F16_TO_F32[h[k]!]!;
  return x;
}

/** Writes token-major f32 rows into an F16 tensor of the given layout. */
function intoTensor(x: Float32Array, t: KvTensor): void {
  const out = new Uint16Array(t.data.buffer, t.data.byteOffset, t.data.length / 2);
  if (t.tokenAxis === 0) return f32ArrayToF16(x, out);
  const h = new Uint16Array(x.length);
  f32ArrayToF16(x, h);
  for (let j = 0, k = 0; j < t.rows; j++) for (let i = 0; i < t.cols; i++, k++) out[k] = h[i * t.rows + j]!;
}

const channelSpread = (x: Float32Array, channels: number): Float64Array => channelMoments(x, channels).sd;

const sumLog = (sd: Float64Array): number => sd.reduce((a, v) => a + Math.log(v + 1e-6), 0);

/** Un-rotates keys with the candidate RoPE that minimises the channels' log spread (none if none helps). */
function unrope(x: Float32Array, channels: number, positions: Int32Array, ropes: readonly Rope[]): Rope | undefined {
  let best: { rope: Rope | undefined; score: number; x: Float32Array } = { rope: undefined, score: sumLog(channelSpread(x, channels)), x };
  for (const rope of ropes) {
    const y = Float32Array.from(x);
    rotateRows(y, ropeTables(positions, channels, rope.base), rope.style, -1);
    const score = sumLog(channelSpread(y, channels));
    if (score < best.score) best = { rope, score, x: y };
  }
  x.set(best.x);
  return best.rope;
}

const rmsOf = (sd: Float64Array): number => Math.sqrt(sd.reduce((a, v) => a + v * v, 0) / sd.length) || 1;

export function encodeQpreTensor(t: KvTensor, options: QpreOptions): Buffer {
  const p = options.policy(t);
  const channels = t.tokenAxis === 0 ? t.cols : t.rows;
  const tokens = tokensOf(t);
  const x = toRows(t);
  const rope = t.kind === "k" ? unrope(x, channels, t.positions, options.ropes) : undefined;
  const rms = rmsOf(channelSpread(x, channels));
  const recent = Math.min(p.recentTokens, tokens - 1);
  const split = tokens - recent;
  const bulk = encodeBlock(x.subarray(0, split * channels), channels, p.step * rms);
  const last = recent > 0 ? encodeBlock(x.subarray(split * channels), channels, p.step * p.recentScale * rms) : Buffer.alloc(0);
  const head = Buffer.alloc(HEAD);
  head.writeUInt32LE(t.rows, 0);
  head.writeUInt32LE(t.cols, 4);
  head[8] = t.tokenAxis;
  head[9] = STYLES.indexOf(rope?.style);
  head.writeFloatLE(rope?.base ?? 0, 10);
  head.writeUInt32LE(recent, 14);
  head.writeUInt32LE(bulk.length, 18);
  return Buffer.concat([head, bulk, last]);
}

const HEAD = 22;
const shapeOf = (body: Buffer): Pick<KvTensor, "rows" | "cols" | "tokenAxis"> => ({
  rows: body.readUInt32LE(0),
  cols: body.readUInt32LE(4),
  tokenAxis: body[8] as 0 | 1,
});

/** Decodes a tensor body into `t.data` (a tensor of the state being rebuilt, with its cell positions). */
export function decodeQpreTensor(body: Buffer, t: KvTensor): void {
  const channels = t.tokenAxis === 0 ? t.cols : t.rows;
  const tokens = tokensOf(t);
  const recent = body.readUInt32LE(14);
  const bulkLength = body.readUInt32LE(18);
  const x = new Float32Array(tokens * channels);
  x.set(decodeBlock(body.subarray(HEAD, HEAD + bulkLength), tokens - recent, channels));
  if (recent > 0) x.set(decodeBlock(body.subarray(HEAD + bulkLength), recent, channels), (tokens - recent) * channels);
  const style = STYLES[body[9]!];
  if (style) rotateRows(x, ropeTables(t.positions, channels, body.readFloatLE(10)), style, 1);
  intoTensor(x, t);
}

function header(kind: number, body: Buffer): Buffer {
  const h = Buffer.alloc(5);
  h[0] = kind;
  h.writeUInt32LE(body.length, 1);
  return h;
}

/** Part kinds in the container. */
const BYTES = 0;
const CODED = 1;
const EXACT_TENSOR = 2;

function encodePart(part: Buffer | KvTensor, options: QpreOptions): Buffer {
  const kind = !isTensor(part) ? BYTES : options.policy(part).step === 0 ? EXACT_TENSOR : CODED;
  const body = isTensor(part) ? (kind === CODED ? encodeQpreTensor(part, options) : brotli(part.data)) : brotli(part);
  return Buffer.concat([header(kind, body), body]);
}

export function qpreCodec(name: string, options: QpreOptions): KvCodec {
  return {
    name,
    encode: (state) => Buffer.concat(splitState(state).map((part) => encodePart(part, options))),
    decode(payload) {
      // Exact parts and zeroed tensors first: the rebuilt state's own layout then gives each tensor its place and cell positions.
      const parts: Buffer[] = [];
      const tensors: { kind: number; body: Buffer }[] = [];
      for (let o = 0; o < payload.length;) {
        const kind = payload[o]!;
        const body = payload.subarray(o + 5, o + 5 + payload.readUInt32LE(o + 1));
        o += 5 + body.length;
        if (kind !== BYTES) tensors.push({ kind, body });
        parts.push(kind === CODED ? Buffer.alloc(shapeOf(body).rows * shapeOf(body).cols * 2) : brotliDecompressSync(body));
      }
      const state = Buffer.concat(parts);
      const slots = splitState(state).filter(isTensor);
      tensors.forEach((t, i) => t.kind === CODED && decodeQpreTensor(t.body, slots[i]!));
      return state;
    },
  };
}
