/**
 * The "qpre" codecs: keys rotated back to before RoPE, then every F16 K/V tensor quantised per
 * channel and rANS-coded by qpre-block.ts, with a step per tensor from a policy (measured
 * sensitivities), the most recent tokens in a block of their own with a finer step.
 * Tensor body: rows u32 | cols u32 | token axis u8 | rope style u8 (0 none, 1 neox, 2 norm) |
 * rope base f32 | recent u32 | bulk length u32 | bulk block | recent block. Other parts of the
 * state: Brotli. Container: per part u8 kind (0 Brotli bytes, 1 tensor, 2 exact tensor, 3 tensor
 * with sink rows) | u32 length | body. A tensor with sink rows (the cells below `sinkPositions`,
 * BOS: the attention sink every later token attends to, whose error reaches every output) keeps
 * them exact: count u32 | per row token index u32, F16[channels] | tensor body, the rows coded
 * there as their channel means (no cost).
 */
import { brotliCompressSync, brotliDecompressSync, constants } from "node:zlib";
import type { KvCodec } from "./codec-names.ts";
import { channelMoments, decodeBlock, encodeBlock } from "./qpre-block.ts";
import { decodeTensorsNatively, encodeTensorsNatively, nativeKvCodec, type CodedTensor, type NativeKvCodecAddon, type TensorToEncode } from "./native-codec.ts";
import { ropeTables, rotateRows, type Rope, type RopeStyle } from "./rope.ts";
import { F16_TO_F32, f32ArrayToF16, isTensor, splitState, type KvTensor } from "./state-tensors.ts";

export interface TensorPolicy {
  /** Step of the older tokens as a fraction of the tensor's RMS channel spread; 0 keeps the tensor exact. */
  step: number;
  recentTokens: number;
  /** Step of the recent tokens relative to `step`. */
  recentScale: number;
  /** Tensors with sink rows (kind 3): steps by recency, newest tier first; recentTokens/recentScale are then unused. */
  tiers?: readonly Tier[];
}

/** `tokens` cells (counted back from the newest, after the tiers before it) coded with step × `scale`. */
export interface Tier {
  tokens: number;
  scale: number;
}

export interface QpreOptions {
  policy(t: Pick<KvTensor, "kind" | "layer" | "layers" | "positions">): TensorPolicy;
  /** RoPE candidates for keys; the encoder keeps the one that leaves the least channel variance. */
  ropes: readonly Rope[];
  /** Cells at positions below this are kept exact (attention sinks); default 0, none. */
  sinkPositions?: number;
  /**
   * Per-channel gain codes (gain 2^(code/32)) for a tensor, or undefined: the channel is scaled
   * by its gain before quantisation (a step 1/gain as large), back after. Needs sinkPositions.
   */
  gains?(t: Pick<KvTensor, "kind" | "layer" | "layers" | "rows" | "cols" | "tokenAxis">): Int8Array | undefined;
  /** Blocks carry the wide rANS stream (rans.ts; sink tensors of kind WIDE_SINK_CODED, block codec compact2b). */
  wide?: boolean;
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
export function intoTensor(x: Float32Array, t: KvTensor): void {
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

/** Overwrites the given rows with the mean of the other rows, channel by channel. */
function fillRows(x: Float32Array, channels: number, rows: readonly number[]): void {
  const sum = new Float64Array(channels);
  for (let k = 0, j = 0; k < x.length; k++, j = j + 1 === channels ? 0 : j + 1) sum[j] = sum[j]! + x[k]!;
  for (const r of rows) for (let j = 0; j < channels; j++) sum[j] = sum[j]! - x[r * channels + j]!;
  const others = x.length / channels - rows.length;
  for (const r of rows) for (let j = 0; j < channels; j++) x[r * channels + j] = others > 0 ? sum[j]! / others : 0;
}

/** Multiplies channel j of every row by 2^(sign · gains[j] / 32). */
export function scaleChannels(x: Float32Array, gains: Int8Array, sign: 1 | -1): void {
  const g = Float32Array.from(gains, (c) => 2 ** ((sign * c) / 32));
  for (let k = 0, j = 0; k < x.length; k++, j = j + 1 === g.length ? 0 : j + 1) x[k] = x[k]! * g[j]!;
}

export interface TensorExtras {
  /** Token indexes stored elsewhere (exact); coded as their channel means. */
  exactRows?: readonly number[];
  /** Channel gain codes, applied after un-rotating (see QpreOptions.gains). */
  gains?: Int8Array;
}

/** The tensor as token-major f32 rows ready to quantise: sinks filled, keys un-rotated, channels scaled. */
export function prepare(t: KvTensor, options: QpreOptions, extras: TensorExtras): { x: Float32Array; channels: number; rope: Rope | undefined; rms: number } {
  const channels = t.tokenAxis === 0 ? t.cols : t.rows;
  const x = toRows(t);
  fillRows(x, channels, extras.exactRows ?? []);
  const rope = t.kind === "k" ? unrope(x, channels, t.positions, options.ropes) : undefined;
  if (extras.gains) scaleChannels(x, extras.gains, 1);
  return { x, channels, rope, rms: rmsOf(channelSpread(x, channels)) };
}

function ropeHead(t: KvTensor, rope: Rope | undefined, bytes: number): Buffer {
  const head = Buffer.alloc(bytes);
  head.writeUInt32LE(t.rows, 0);
  head.writeUInt32LE(t.cols, 4);
  head[8] = t.tokenAxis;
  head[9] = STYLES.indexOf(rope?.style);
  head.writeFloatLE(rope?.base ?? 0, 10);
  return head;
}

export function encodeQpreTensor(t: KvTensor, options: QpreOptions): Buffer {
  const p = options.policy(t);
  const tokens = tokensOf(t);
  const { x, channels, rope, rms } = prepare(t, options, {});
  const recent = Math.min(p.recentTokens, tokens - 1);
  const split = tokens - recent;
  const bulk = encodeBlock(x.subarray(0, split * channels), channels, p.step * rms);
  const last = recent > 0 ? encodeBlock(x.subarray(split * channels), channels, p.step * p.recentScale * rms) : Buffer.alloc(0);
  const head = ropeHead(t, rope, HEAD);
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
  finish(x, body, t);
}

/** Re-rotates keys (rope in the head) and writes the rows into the F16 tensor. */
function finish(x: Float32Array, head: Buffer, t: KvTensor): void {
  const style = STYLES[head[9]!];
  if (style) rotateRows(x, ropeTables(t.positions, x.length / tokensOf(t), head.readFloatLE(10)), style, 1);
  intoTensor(x, t);
}

/** Segment sizes, oldest first: the bulk, then the tiers from oldest to newest (empty ones dropped). */
function segmentsOf(tokens: number, tiers: readonly Tier[]): { tokens: number; scale: number }[] {
  const out: { tokens: number; scale: number }[] = [];
  let left = tokens;
  for (const tier of tiers) {
    const n = Math.min(tier.tokens, left);
    if (n > 0) out.unshift({ tokens: n, scale: tier.scale });
    left -= n;
  }
  if (left > 0) out.unshift({ tokens: left, scale: 1 });
  return out;
}

/**
 * Tiered tensor body (inside a sink tensor): rows u32 | cols u32 | token axis u8 | rope style u8
 * | rope base f32 | segments u8 | per segment tokens u32, length u32 | blocks, oldest first.
 */
export function encodeTieredTensor(t: KvTensor, options: QpreOptions, extras: TensorExtras): Buffer {
  const p = options.policy(t);
  const { x, channels, rope, rms } = prepare(t, options, extras);
  const segments = segmentsOf(tokensOf(t), p.tiers ?? [{ tokens: p.recentTokens, scale: p.recentScale }]);
  const head = ropeHead(t, rope, TIERED_HEAD + 8 * segments.length);
  head[14] = segments.length;
  const blocks: Buffer[] = [];
  let from = 0;
  segments.forEach((s, i) => {
    blocks.push(encodeBlock(x.subarray(from * channels, (from + s.tokens) * channels), channels, p.step * s.scale * rms, options.wide));
    from += s.tokens;
    head.writeUInt32LE(s.tokens, TIERED_HEAD + 8 * i);
    head.writeUInt32LE(blocks[i]!.length, TIERED_HEAD + 8 * i + 4);
  });
  return Buffer.concat([head, ...blocks]);
}

const TIERED_HEAD = 15;

export function decodeTieredTensor(body: Buffer, t: KvTensor, gains?: Int8Array, wide = false): void {
  const channels = t.tokenAxis === 0 ? t.cols : t.rows;
  const x = new Float32Array(tokensOf(t) * channels);
  let o = TIERED_HEAD + 8 * body[14]!;
  for (let i = 0, from = 0; i < body[14]!; i++) {
    const [tokens, length] = [body.readUInt32LE(TIERED_HEAD + 8 * i), body.readUInt32LE(TIERED_HEAD + 8 * i + 4)];
    x.set(decodeBlock(body.subarray(o, o + length), tokens, channels, wide), from * channels);
    from += tokens;
    o += length;
  }
  if (gains) scaleChannels(x, gains, -1);
  finish(x, body, t);
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
export const SINK_CODED = 3;
/** A sink tensor whose blocks carry the wide rANS stream (rans.ts): v2 blocks of compact2b only. */
export const WIDE_SINK_CODED = 4;

/** Byte offset of element (token i, channel j) in the tensor's data. */
export const offsetOf = (t: Pick<KvTensor, "cols" | "tokenAxis">, channels: number, i: number, j: number): number =>
  2 * (t.tokenAxis === 0 ? i * channels + j : j * t.cols + i);

/**
 * A tensor with exact sink rows and channel gains: coded length u32 | qpre tensor body | sink
 * count u32 | per sink token index u32, F16[channels] | gain count u32 (0 or channels) | i8[].
 */
export function encodeSinkTensor(t: KvTensor, options: QpreOptions): Buffer {
  const channels = t.tokenAxis === 0 ? t.cols : t.rows;
  const rows = sinkRows(t, options);
  const gains = options.gains?.(t) ?? new Int8Array(0);
  const coded = encodeTieredTensor(t, options, { exactRows: rows, gains: gains.length > 0 ? gains : undefined });
  const exact = Buffer.alloc(4 + rows.length * (4 + 2 * channels) + 4);
  exact.writeUInt32LE(rows.length, 0);
  rows.forEach((i, r) => {
    const o = 4 + r * (4 + 2 * channels);
    exact.writeUInt32LE(i, o);
    for (let j = 0; j < channels; j++) exact.writeUInt16LE(t.data.readUInt16LE(offsetOf(t, channels, i, j)), o + 4 + 2 * j);
  });
  exact.writeUInt32LE(gains.length, exact.length - 4);
  return Buffer.concat([u32(coded.length), coded, exact, Buffer.from(gains.buffer, gains.byteOffset, gains.length)]);
}

export function decodeSinkTensor(body: Buffer, t: KvTensor, wide = false): void {
  const channels = t.tokenAxis === 0 ? t.cols : t.rows;
  const end = 4 + body.readUInt32LE(0);
  const count = body.readUInt32LE(end);
  const size = 4 + 2 * channels;
  const g = end + 4 + count * size;
  const gains = new Int8Array(body.buffer, body.byteOffset + g + 4, body.readUInt32LE(g));
  decodeTieredTensor(body.subarray(4, end), t, gains.length > 0 ? gains : undefined, wide);
  for (let r = 0, o = end + 4; r < count; r++, o += size) {
    const i = body.readUInt32LE(o);
    for (let j = 0; j < channels; j++) t.data.writeUInt16LE(body.readUInt16LE(o + 4 + 2 * j), offsetOf(t, channels, i, j));
  }
}

/** The tensor's cells below sinkPositions (kept exact). */
const sinkRows = (t: KvTensor, options: QpreOptions): number[] => [...t.positions.keys()].filter((i) => t.positions[i]! < (options.sinkPositions ?? 0));

const u32 = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v, 0);
  return b;
};

function tensorKind(t: KvTensor, options: QpreOptions): number {
  if (options.policy(t).step === 0) return EXACT_TENSOR;
  return options.sinkPositions ? SINK_CODED : CODED;
}

function encodePart(part: Buffer | KvTensor, options: QpreOptions): Buffer {
  const kind = isTensor(part) ? tensorKind(part, options) : BYTES;
  const coders: Record<number, (t: KvTensor) => Buffer> = {
    [CODED]: (t) => encodeQpreTensor(t, options),
    [SINK_CODED]: (t) => encodeSinkTensor(t, options),
    [EXACT_TENSOR]: (t) => brotli(t.data),
  };
  const body = isTensor(part) ? coders[kind]!(part) : brotli(part);
  return Buffer.concat([header(kind, body), body]);
}

/** The policy's decisions for a coded tensor, for the native encoder (what encodeQpreTensor and encodeSinkTensor decide). */
export function toEncode(t: KvTensor, kind: number, options: QpreOptions): TensorToEncode {
  const p = options.policy(t);
  const tokens = tokensOf(t);
  if (kind === CODED) {
    const recent = Math.min(p.recentTokens, tokens - 1);
    return {
      kind,
      t,
      step: p.step,
      segments: [
        { tokens: tokens - recent, scale: 1 },
        { tokens: recent, scale: p.recentScale },
      ],
      ropes: options.ropes,
    };
  }
  const segments = segmentsOf(tokens, p.tiers ?? [{ tokens: p.recentTokens, scale: p.recentScale }]);
  return { kind, t, step: p.step, segments, exactRows: sinkRows(t, options), gains: options.gains?.(t) ?? new Int8Array(0), ropes: options.ropes };
}

/** The coded tensors of the state's parts encoded by the addon, framed, by part index. */
function encodeCodedNatively(native: NativeKvCodecAddon, parts: readonly (Buffer | KvTensor)[], options: QpreOptions): Map<number, Buffer> {
  const items: { index: number; job: TensorToEncode }[] = [];
  parts.forEach((part, index) => {
    const kind = isTensor(part) ? tensorKind(part, options) : BYTES;
    if (kind === CODED || kind === SINK_CODED) items.push({ index, job: toEncode(part as KvTensor, kind, options) });
  });
  const bodies = encodeTensorsNatively(
    native,
    items.map((i) => i.job),
  );
  return new Map(items.map((item, k) => [item.index, Buffer.concat([header(item.job.kind, bodies[k]!), bodies[k]!])]));
}

/** The bytes of the F16 tensor a coded part decodes into (its shape leads the qpre tensor body). */
function tensorBytes(kind: number, body: Buffer): number {
  const shape = shapeOf(kind === SINK_CODED ? body.subarray(4) : body);
  return shape.rows * shape.cols * 2;
}

const decoders: Record<number, ((body: Buffer, t: KvTensor) => void) | undefined> = { [CODED]: decodeQpreTensor, [SINK_CODED]: decodeSinkTensor };

export function qpreCodec(name: string, options: QpreOptions): KvCodec {
  return {
    name,
    encode(state) {
      const parts = splitState(state);
      const native = nativeKvCodec();
      const coded = native ? encodeCodedNatively(native, parts, options) : new Map<number, Buffer>();
      return Buffer.concat(parts.map((part, i) => coded.get(i) ?? encodePart(part, options)));
    },
    decode(payload) {
      const { state, coded } = rebuildState(payload);
      const native = nativeKvCodec();
      if (native) decodeTensorsNatively(native, coded);
      else decodeTensorsInJs(coded);
      return state;
    },
  };
}

/**
 * The state with its exact parts in place and its coded tensors zeroed, and each coded tensor with
 * its place in it. Exact parts and zeroed tensors first: the rebuilt state's own layout then gives
 * each tensor its place and cell positions.
 */
export function rebuildState(payload: Buffer): { state: Buffer; coded: CodedTensor[] } {
  const parts: (Buffer | number)[] = [];
  const tensors: { kind: number; body: Buffer }[] = [];
  for (let o = 0; o < payload.length;) {
    const kind = payload[o]!;
    const body = payload.subarray(o + 5, o + 5 + payload.readUInt32LE(o + 1));
    o += 5 + body.length;
    if (kind !== BYTES) tensors.push({ kind, body });
    parts.push(decoders[kind] ? tensorBytes(kind, body) : brotliDecompressSync(body));
  }
  // One allocation, the exact parts copied in and the coded tensors left zero (not a concatenation
  // of zeroed tensors: a copy of the whole state for nothing).
  const state = Buffer.alloc(parts.reduce<number>((a, p) => a + (typeof p === "number" ? p : p.length), 0));
  let at = 0;
  for (const p of parts) at += typeof p === "number" ? p : p.copy(state, at);
  const slots = splitState(state).filter(isTensor);
  const coded = tensors.flatMap((t, i) => (decoders[t.kind] ? [{ ...t, slot: slots[i]! }] : []));
  return { state, coded };
}

/** Decodes the coded tensors into their places in JavaScript (what the native decoder must match). */
export function decodeTensorsInJs(coded: readonly CodedTensor[]): void {
  coded.forEach((t) => decoders[t.kind]!(t.body, t.slot));
}
