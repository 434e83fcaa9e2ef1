/**
 * One F16 K or V tensor, quantised and entropy coded (CacheGen-style):
 * - per channel, a uniform quantiser centred on the channel mean with a step that is a fraction
 *   of the channel's standard deviation (the caller picks the fraction per layer and K/V);
 * - per channel, the quantised values are delta-coded along tokens when that makes them smaller
 *   (low-frequency RoPE channels drift slowly; others do not);
 * - symbols (|delta| <= RANGE) are rANS-coded with one frequency table per mode (delta, direct);
 *   everything else (outliers such as attention-sink tokens) escapes to its exact F16 value.
 * Quantisation happens before the delta, so errors never accumulate along tokens. Decoding is a
 * rANS pass and a table lookup per element (no float maths, no allocation per element).
 * Body: channel flags u8[C] | mean f16[C] | step f16[C] | qmin i8[C] | qmax i8[C] | escapes u32 +
 * f16[escapes] | freqs u16[ALPHABET] per mode | rANS stream.
 */
import { decodeTables, normaliseCounts, ransDecode, ransEncode } from "./rans.ts";
import { F16_TO_F32, f32ToF16 } from "./state-tensors.ts";

const RANGE = 24;
const ESC = 2 * RANGE + 1;
const ALPHABET = ESC + 1;
const QMAX = 127;

export interface TensorShape {
  rows: number;
  cols: number;
  tokenAxis: 0 | 1;
}

/** tokens x channels, and the memory stride of each (element (i, j) is at i * tokenStride + j * channelStride). */
function geometry(t: TensorShape): { tokens: number; channels: number; tokenStride: number; channelStride: number } {
  return t.tokenAxis === 0
    ? { tokens: t.rows, channels: t.cols, tokenStride: t.cols, channelStride: 1 }
    : { tokens: t.cols, channels: t.rows, tokenStride: 1, channelStride: t.cols };
}

interface Quantised {
  mean: Uint16Array;
  step: Uint16Array;
  q: Int32Array;
}

/** Channel means and variances along tokens. */
function channelMoments(x: Uint16Array, t: TensorShape): { mean: Float64Array; variance: Float64Array } {
  const g = geometry(t);
  const mean = new Float64Array(g.channels);
  const variance = new Float64Array(g.channels);
  for (let j = 0; j < g.channels; j++) {
    let s = 0;
    let s2 = 0;
    for (let i = 0, k = j * g.channelStride; i < g.tokens; i++, k += g.tokenStride) {
      const v = F16_TO_F32[x[k]!]!;
      s += v;
      s2 += v * v;
    }
    mean[j] = s / g.tokens;
    variance[j] = Math.max(s2 / g.tokens - mean[j]! * mean[j]!, 0);
  }
  return { mean, variance };
}

/**
 * Channel means and one step for the whole tensor (rounded to F16, as the decoder sees them),
 * and the quantised values. One step for all channels, not one per channel: for a given rate,
 * equal absolute error in every channel minimises the tensor's squared error.
 */
function quantise(x: Uint16Array, t: TensorShape, stepFraction: number): Quantised {
  const g = geometry(t);
  const moments = channelMoments(x, t);
  const sd = Math.sqrt(moments.variance.reduce((a, b) => a + b, 0) / g.channels);
  const mean = new Uint16Array(g.channels);
  const step = new Uint16Array(g.channels).fill(f32ToF16(Math.max(sd * stepFraction, 1e-3)));
  const q = new Int32Array(x.length);
  const d = F16_TO_F32[step[0]!]!;
  for (let j = 0; j < g.channels; j++) {
    mean[j] = f32ToF16(moments.mean[j]!);
    const m = F16_TO_F32[mean[j]!]!;
    for (let i = 0, k = j * g.channelStride; i < g.tokens; i++, k += g.tokenStride) q[k] = Math.round((F16_TO_F32[x[k]!]! - m) / d);
  }
  return { mean, step, q };
}

/** Delta along tokens for the channels where the sum of |delta| is below the sum of |q|. */
function deltaFlags(q: Int32Array, t: TensorShape): Uint8Array {
  const g = geometry(t);
  const flags = new Uint8Array(g.channels);
  for (let j = 0; j < g.channels; j++) {
    let direct = 0;
    let delta = 0;
    for (let i = 0, k = j * g.channelStride, prev = 0; i < g.tokens; i++, k += g.tokenStride) {
      direct += Math.abs(q[k]!);
      delta += Math.abs(q[k]! - prev);
      prev = q[k]!;
    }
    flags[j] = delta < direct ? 1 : 0;
  }
  return flags;
}

interface Symbols {
  symbols: Uint8Array;
  contexts: Uint8Array;
  escapes: number[];
  qmin: Int8Array;
  qmax: Int8Array;
}

function toSymbols(x: Uint16Array, qt: Quantised, flags: Uint8Array, t: TensorShape): Symbols {
  const g = geometry(t);
  const { q } = qt;
  const symbols = new Uint8Array(q.length);
  const contexts = new Uint8Array(q.length);
  const escapes: number[] = [];
  const qmin = new Int8Array(g.channels).fill(QMAX);
  const qmax = new Int8Array(g.channels).fill(-QMAX);
  // Escapes are listed in memory order, the order the decoder meets them.
  const prev = new Int32Array(g.channels);
  for (let k = 0; k < q.length; k++) {
    const j = t.tokenAxis === 0 ? k % g.channels : Math.floor(k / g.tokens);
    contexts[k] = flags[j]!;
    const sym = q[k]! - prev[j]! * flags[j]!;
    if (Math.abs(sym) > RANGE || Math.abs(q[k]!) > QMAX) {
      symbols[k] = ESC;
      escapes.push(x[k]!);
      prev[j] = 0;
      continue;
    }
    symbols[k] = sym + RANGE;
    prev[j] = q[k]!;
    qmin[j] = Math.min(qmin[j]!, q[k]!);
    qmax[j] = Math.max(qmax[j]!, q[k]!);
  }
  return { symbols, contexts, escapes, qmin, qmax };
}

function freqTables(s: Symbols): Uint16Array[] {
  const counts = [new Uint32Array(ALPHABET), new Uint32Array(ALPHABET)];
  for (let k = 0; k < s.symbols.length; k++) counts[s.contexts[k]!]![s.symbols[k]!]!++;
  return counts.map(normaliseCounts);
}

const bytesOf = (a: ArrayBufferView): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

export function encodeQransTensor(data: Buffer, t: TensorShape, stepFraction: number): Buffer {
  const x = new Uint16Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.length));
  const qt = quantise(x, t, stepFraction);
  const flags = deltaFlags(qt.q, t);
  const s = toSymbols(x, qt, flags, t);
  const freqs = freqTables(s);
  const escapes = Buffer.alloc(4 + 2 * s.escapes.length);
  escapes.writeUInt32LE(s.escapes.length);
  s.escapes.forEach((h, i) => escapes.writeUInt16LE(h, 4 + 2 * i));
  const stream = ransEncode(s.symbols, s.contexts, freqs);
  return Buffer.concat([bytesOf(flags), bytesOf(qt.mean), bytesOf(qt.step), bytesOf(s.qmin), bytesOf(s.qmax), escapes, ...freqs.map(bytesOf), stream]);
}

class Cursor {
  offset = 0;
  constructor(readonly buf: Buffer) {}
  take(n: number): Buffer {
    // A copy, so typed-array views are aligned.
    const b = Buffer.from(this.buf.subarray(this.offset, this.offset + n));
    this.offset += n;
    return b;
  }
  u16s(n: number): Uint16Array {
    const b = this.take(2 * n);
    return new Uint16Array(b.buffer, b.byteOffset, n);
  }
}

/** Per channel, the F16 value of each quantised level from qmin to qmax; base[j] + q indexes it. */
function levelTables(mean: Uint16Array, step: Uint16Array, qmin: Int8Array, qmax: Int8Array): { lut: Uint16Array; base: Int32Array } {
  const base = new Int32Array(mean.length);
  let size = 0;
  for (let j = 0; j < mean.length; j++) {
    base[j] = size - qmin[j]!;
    size += Math.max(qmax[j]! - qmin[j]! + 1, 0);
  }
  const lut = new Uint16Array(size);
  for (let j = 0; j < mean.length; j++) {
    const m = F16_TO_F32[mean[j]!]!;
    const d = F16_TO_F32[step[j]!]!;
    for (let q = qmin[j]!; q <= qmax[j]!; q++) lut[base[j]! + q] = f32ToF16(m + q * d);
  }
  return { lut, base };
}

export function decodeQransTensor(body: Buffer, t: TensorShape): Buffer {
  const g = geometry(t);
  const n = t.rows * t.cols;
  const c = new Cursor(body);
  const flags = new Uint8Array(c.take(g.channels));
  const mean = c.u16s(g.channels);
  const step = c.u16s(g.channels);
  const qb = c.take(2 * g.channels);
  const qmin = new Int8Array(qb.buffer, qb.byteOffset, g.channels);
  const qmax = new Int8Array(qb.buffer, qb.byteOffset + g.channels, g.channels);
  const escapes = c.u16s(c.take(4).readUInt32LE());
  const freqs = [c.u16s(ALPHABET), c.u16s(ALPHABET)];
  const contexts = new Uint8Array(n);
  if (t.tokenAxis === 0) for (let i = 0; i < g.tokens; i++) contexts.set(flags, i * g.channels);
  else for (let j = 0; j < g.channels; j++) contexts.fill(flags[j]!, j * g.tokens, (j + 1) * g.tokens);
  const symbols = new Uint8Array(n);
  ransDecode(body.subarray(c.offset), contexts, decodeTables(freqs), symbols);
  const { lut, base } = levelTables(mean, step, qmin, qmax);
  const out = new Uint16Array(n);
  const reconstruct = t.tokenAxis === 0 ? reconstructTokenRows : reconstructChannelRows;
  reconstruct(symbols, { flags, lut, base, escapes, channels: g.channels, out });
  return Buffer.from(out.buffer);
}

interface Reconstruction {
  flags: Uint8Array;
  lut: Uint16Array;
  base: Int32Array;
  escapes: Uint16Array;
  channels: number;
  out: Uint16Array;
}

/** Memory order token-major: element k is channel k % channels. */
function reconstructTokenRows(symbols: Uint8Array, r: Reconstruction): void {
  const { flags, lut, base, escapes, channels, out } = r;
  const prev = new Int32Array(channels);
  for (let k = 0, j = 0, e = 0; k < symbols.length; k++, j = j + 1 === channels ? 0 : j + 1) {
    const s = symbols[k]!;
    if (s === ESC) {
      out[k] = escapes[e++]!;
      prev[j] = 0;
    } else {
      const q = prev[j]! * flags[j]! + s - RANGE;
      prev[j] = q;
      out[k] = lut[base[j]! + q]!;
    }
  }
}

/** Memory order channel-major (transposed V): each row is one channel along tokens. */
function reconstructChannelRows(symbols: Uint8Array, r: Reconstruction): void {
  const { flags, lut, base, escapes, channels, out } = r;
  const tokens = symbols.length / channels;
  for (let j = 0, k = 0, e = 0; j < channels; j++) {
    const b = base[j]!;
    const f = flags[j]!;
    for (let i = 0, prev = 0; i < tokens; i++, k++) {
      const s = symbols[k]!;
      if (s === ESC) {
        out[k] = escapes[e++]!;
        prev = 0;
      } else {
        prev = prev * f + s - RANGE;
        out[k] = lut[b + prev]!;
      }
    }
  }
}
