/**
 * The "qrans" codecs: every F16 K/V tensor through qrans-tensor.ts with a step (as a fraction of
 * the tensor's standard deviation) chosen per layer and K/V by a policy, the most recent tokens
 * (what the next tokens attend to most) split off and coded with their own, finer step; the rest
 * of the state (header, cell metadata) Brotli-compressed.
 * Container: per part u8 kind (0 Brotli bytes, 1 tensor) | u32 length | body; a tensor body is
 * rows u32, cols u32, token axis u8, recent tokens u32, bulk length u32, bulk, recent.
 */
import { brotliCompressSync, brotliDecompressSync, constants } from "node:zlib";
import type { KvCodec } from "./codec-names.ts";
import { decodeQransTensor, encodeQransTensor, type TensorShape } from "./qrans-tensor.ts";
import { isTensor, splitState, type KvTensor } from "./state-tensors.ts";

export interface QransPolicy {
  /** Quantiser step of a tensor's older tokens, as a fraction of its standard deviation; 0 keeps the tensor exact. */
  step(t: Pick<KvTensor, "kind" | "layer" | "layers">): number;
  /** How many of the last tokens get `recentStep` instead. */
  recentTokens: number;
  recentStep: number;
}

const brotli = (b: Buffer): Buffer => brotliCompressSync(b, { params: { [constants.BROTLI_PARAM_QUALITY]: 5, [constants.BROTLI_PARAM_SIZE_HINT]: b.length } });

const tokensOf = (t: TensorShape): number => (t.tokenAxis === 0 ? t.rows : t.cols);

/** Tokens [from, to) of a tensor, as a tensor of its own. */
function sliceTokens(data: Buffer, t: TensorShape, from: number, to: number): { data: Buffer; shape: TensorShape } {
  if (t.tokenAxis === 0) return { data: data.subarray(from * t.cols * 2, to * t.cols * 2), shape: { ...t, rows: to - from } };
  const out = Buffer.alloc(t.rows * (to - from) * 2);
  for (let j = 0; j < t.rows; j++) data.copy(out, j * (to - from) * 2, (j * t.cols + from) * 2, (j * t.cols + to) * 2);
  return { data: out, shape: { ...t, cols: to - from } };
}

/** Inverse of two sliceTokens at `split`. */
function joinTokens(bulk: Buffer, recent: Buffer, t: TensorShape, split: number): Buffer {
  if (t.tokenAxis === 0) return Buffer.concat([bulk, recent]);
  const out = Buffer.alloc(bulk.length + recent.length);
  const tail = t.cols - split;
  for (let j = 0; j < t.rows; j++) {
    bulk.copy(out, j * t.cols * 2, j * split * 2, (j + 1) * split * 2);
    recent.copy(out, (j * t.cols + split) * 2, j * tail * 2, (j + 1) * tail * 2);
  }
  return out;
}

export function encodeTensor(t: KvTensor, policy: QransPolicy): Buffer {
  const recent = Math.min(policy.recentTokens, tokensOf(t) - 1);
  const split = tokensOf(t) - recent;
  const head = Buffer.alloc(17);
  head.writeUInt32LE(t.rows, 0);
  head.writeUInt32LE(t.cols, 4);
  head[8] = t.tokenAxis;
  head.writeUInt32LE(recent, 9);
  const old = sliceTokens(t.data, t, 0, split);
  const bulk = encodeQransTensor(old.data, old.shape, policy.step(t));
  head.writeUInt32LE(bulk.length, 13);
  if (recent === 0) return Buffer.concat([head, bulk]);
  const last = sliceTokens(t.data, t, split, tokensOf(t));
  return Buffer.concat([head, bulk, encodeQransTensor(last.data, last.shape, policy.recentStep)]);
}

export function decodeTensor(body: Buffer): Buffer {
  const t: TensorShape = { rows: body.readUInt32LE(0), cols: body.readUInt32LE(4), tokenAxis: body[8] as 0 | 1 };
  const recent = body.readUInt32LE(9);
  const split = tokensOf(t) - recent;
  const bulkEnd = 17 + body.readUInt32LE(13);
  const along = (n: number): TensorShape => (t.tokenAxis === 0 ? { ...t, rows: n } : { ...t, cols: n });
  const bulk = decodeQransTensor(body.subarray(17, bulkEnd), along(split));
  if (recent === 0) return bulk;
  return joinTokens(bulk, decodeQransTensor(body.subarray(bulkEnd), along(recent)), t, split);
}

function header(kind: number, body: Buffer): Buffer {
  const h = Buffer.alloc(5);
  h[0] = kind;
  h.writeUInt32LE(body.length, 1);
  return h;
}

export function qransCodec(name: string, policy: QransPolicy): KvCodec {
  return {
    name,
    encode(state) {
      const out: Buffer[] = [];
      for (const part of splitState(state)) {
        const exact = !isTensor(part) || policy.step(part) === 0;
        const body = exact ? brotli(isTensor(part) ? part.data : part) : encodeTensor(part as KvTensor, policy);
        out.push(header(exact ? 0 : 1, body), body);
      }
      return Buffer.concat(out);
    },
    decode(payload) {
      const out: Buffer[] = [];
      for (let o = 0; o < payload.length;) {
        const kind = payload[o]!;
        const body = payload.subarray(o + 5, o + 5 + payload.readUInt32LE(o + 1));
        o += 5 + body.length;
        out.push(kind === 0 ? brotliDecompressSync(body) : decodeTensor(body));
      }
      return Buffer.concat(out);
    },
  };
}
