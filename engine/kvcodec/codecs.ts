/**
 * The codecs (CacheGen-inspired), over the F16 K/V tensors of a sequence state:
 * - lossless: delta of the F16 bit patterns along tokens (mod 2^16), split into high/low byte
 *   planes, Brotli. Bit-exact.
 * - int8: per-channel symmetric 8-bit quantisation (a f32 scale per channel). The baseline.
 * - qdelta: per-channel quantisation with a per-layer bit budget (8 bits for the first third
 *   of the layers, where errors propagate furthest, 6 after), quantised values delta-coded along
 *   tokens (mod 256), Brotli. Lossy.
 * Container: per part u8 kind (0 bytes, 1 tensor) | u32 length | body; a tensor body starts with
 * rows u32, cols u32, token axis u8.
 */
import { brotliCompressSync, brotliDecompressSync, constants } from "node:zlib";
import { F16_TO_F32, f32ToF16, isTensor, splitState, type KvTensor } from "./state-tensors.ts";
import type { KvCodec } from "./codec-names.ts";

interface TensorCodec {
  encode(t: KvTensor): Buffer;
  decode(body: Buffer, rows: number, cols: number, tokenAxis: 0 | 1): Buffer;
}

const brotli = (b: Buffer): Buffer => brotliCompressSync(b, { params: { [constants.BROTLI_PARAM_QUALITY]: 1, [constants.BROTLI_PARAM_SIZE_HINT]: b.length } });

/** Index of element (token i, channel j) in a rows x cols matrix with the given token axis. */
const at = (tokenAxis: 0 | 1, rows: number, cols: number): ((i: number, j: number) => number) =>
  tokenAxis === 0 ? (i: number, j: number) => i * cols + j : (i: number, j: number) => j * cols + i;
const dims = (t: { rows: number; cols: number; tokenAxis: 0 | 1 }): [number, number] => (t.tokenAxis === 0 ? [t.rows, t.cols] : [t.cols, t.rows]);

const lossless: TensorCodec = {
  encode(t) {
    const x = new Uint16Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.length));
    const [tokens, channels] = dims(t);
    const idx = at(t.tokenAxis, t.rows, t.cols);
    const planes = Buffer.alloc(x.length * 2);
    for (let i = 0; i < tokens; i++) {
      for (let j = 0; j < channels; j++) {
        const k = idx(i, j);
        const d = (x[k]! - (i > 0 ? x[idx(i - 1, j)]! : 0)) & 0xffff;
        planes[k] = d >> 8;
        planes[x.length + k] = d & 0xff;
      }
    }
    return brotli(planes);
  },
  decode(body, rows, cols, tokenAxis) {
    const planes = brotliDecompressSync(body);
    const n = rows * cols;
    const x = new Uint16Array(n);
    const [tokens, channels] = dims({ rows, cols, tokenAxis });
    const idx = at(tokenAxis, rows, cols);
    for (let i = 0; i < tokens; i++) {
      for (let j = 0; j < channels; j++) {
        const k = idx(i, j);
        x[k] = ((planes[k]! << 8) | planes[n + k]!) + (i > 0 ? x[idx(i - 1, j)]! : 0);
      }
    }
    return Buffer.from(x.buffer);
  },
};

function channelScales(t: KvTensor, levels: number): Float32Array {
  const x = new Uint16Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.length));
  const [tokens, channels] = dims(t);
  const idx = at(t.tokenAxis, t.rows, t.cols);
  const scales = new Float32Array(channels);
  for (let j = 0; j < channels; j++) {
    let max = 0;
    for (let i = 0; i < tokens; i++) max = Math.max(max, Math.abs(F16_TO_F32[x[idx(i, j)]!]!));
    scales[j] = max / levels || 1;
  }
  return scales;
}

/** Per-channel quantisation to `bits`; `delta` codes each value as the difference to the previous token's (mod 256). */
function quantCodec(bitsFor: (layer: number, layers: number) => number, delta: boolean): TensorCodec {
  return {
    encode(t) {
      const levels = 2 ** (bitsFor(t.layer, t.layers) - 1) - 1;
      const scales = channelScales(t, levels);
      const x = new Uint16Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.length));
      const [tokens, channels] = dims(t);
      const idx = at(t.tokenAxis, t.rows, t.cols);
      const q = Buffer.alloc(x.length);
      for (let i = 0; i < tokens; i++) {
        for (let j = 0; j < channels; j++) {
          const v = Math.round(F16_TO_F32[x[idx(i, j)]!]! / scales[j]!) & 0xff;
          q[idx(i, j)] = delta && i > 0 ? (v - Math.round(F16_TO_F32[x[idx(i - 1, j)]!]! / scales[j]!)) & 0xff : v;
        }
      }
      const head = Buffer.from(scales.buffer);
      return delta ? Buffer.concat([head, brotli(q)]) : Buffer.concat([head, q]);
    },
    decode(body, rows, cols, tokenAxis) {
      const [tokens, channels] = dims({ rows, cols, tokenAxis });
      const scales = new Float32Array(body.buffer.slice(body.byteOffset, body.byteOffset + channels * 4));
      const q = delta ? brotliDecompressSync(body.subarray(channels * 4)) : body.subarray(channels * 4);
      const idx = at(tokenAxis, rows, cols);
      const out = new Uint16Array(rows * cols);
      const prev = new Int32Array(channels);
      for (let i = 0; i < tokens; i++) {
        for (let j = 0; j < channels; j++) {
          const u = delta && i > 0 ? (q[idx(i, j)]! + prev[j]!) & 0xff : q[idx(i, j)]!;
          prev[j] = u;
          out[idx(i, j)] = f32ToF16(((u << 24) >> 24) * scales[j]!);
        }
      }
      return Buffer.from(out.buffer);
    },
  };
}

function containerCodec(name: string, tc: TensorCodec): KvCodec {
  return {
    name,
    encode(state) {
      const out: Buffer[] = [];
      for (const part of splitState(state)) {
        const body = isTensor(part) ? Buffer.concat([u32s(part.rows, part.cols), Buffer.from([part.tokenAxis]), tc.encode(part)]) : part;
        out.push(Buffer.from([isTensor(part) ? 1 : 0]), u32s(body.length), body);
      }
      return Buffer.concat(out);
    },
    decode(payload) {
      const out: Buffer[] = [];
      for (let o = 0; o < payload.length;) {
        const kind = payload[o]!;
        const len = payload.readUInt32LE(o + 1);
        const body = payload.subarray(o + 5, o + 5 + len);
        o += 5 + len;
        out.push(kind === 0 ? body : tc.decode(body.subarray(9), body.readUInt32LE(0), body.readUInt32LE(4), body[8] as 0 | 1));
      }
      return Buffer.concat(out);
    },
  };
}

function u32s(...vs: number[]): Buffer {
  const b = Buffer.alloc(4 * vs.length);
  vs.forEach((v, i) => b.writeUInt32LE(v, i * 4));
  return b;
}

export const LOSSLESS = containerCodec("lossless", lossless);
export const INT8 = containerCodec(
  "int8",
  quantCodec(() => 8, false),
);
export const QDELTA = containerCodec(
  "qdelta",
  quantCodec((layer, layers) => (layer < layers / 3 ? 8 : 6), true),
);
