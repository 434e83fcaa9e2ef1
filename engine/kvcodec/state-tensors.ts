/**
 * Splits a llama.cpp sequence state (layout in runtime/seq-state.ts) into opaque byte runs and the
 * F16 K/V tensors of each layer, so codecs can work on tensors and copy the rest. A tensor is
 * rows x cols F16 elements; `tokenAxis` says which axis runs along tokens (K and untransposed V:
 * rows = cells; transposed V: cols = cells). `layer` is the layer index within its section.
 */
export interface KvTensor {
  rows: number;
  cols: number;
  tokenAxis: 0 | 1;
  kind: "k" | "v";
  layer: number;
  layers: number;
  /** The position of each cell (token), in the tensor's token order. */
  positions: Int32Array;
  data: Buffer;
}

export type StatePart = Buffer | KvTensor;

const F16 = 1;

class Walker {
  offset = 0;
  mark = 0;
  readonly parts: StatePart[] = [];
  constructor(readonly buf: Buffer) {}
  u32(): number {
    const v = this.buf.readUInt32LE(this.offset);
    this.offset += 4;
    return v;
  }
  skip(n: number): void {
    if (this.offset + n > this.buf.length) throw new Error("KV state truncated");
    this.offset += n;
  }
  /** Ends the current opaque run and emits a tensor of `bytes` at the offset. */
  tensor(t: Omit<KvTensor, "data">, bytes: number): void {
    if (this.offset > this.mark) this.parts.push(this.buf.subarray(this.mark, this.offset));
    this.parts.push({ ...t, data: this.buf.subarray(this.offset, this.offset + bytes) });
    this.skip(bytes);
    this.mark = this.offset;
  }
  finish(): StatePart[] {
    if (this.offset < this.buf.length) this.skip(this.buf.length - this.offset);
    if (this.offset > this.mark) this.parts.push(this.buf.subarray(this.mark, this.offset));
    return this.parts;
  }
}

type TensorId = Pick<KvTensor, "kind" | "layer" | "layers" | "positions">;

function rowsTensor(w: Walker, cells: number, id: TensorId): void {
  const type = w.buf.readInt32LE(w.offset);
  w.skip(4);
  const rowSize = Number(w.buf.readBigUInt64LE(w.offset));
  w.skip(8);
  if (type === F16) w.tensor({ rows: cells, cols: rowSize / 2, tokenAxis: 0, ...id }, cells * rowSize);
  else w.skip(cells * rowSize);
}

function transposedTensor(w: Walker, cells: number, id: TensorId): void {
  const type = w.buf.readInt32LE(w.offset);
  w.skip(4);
  const el = w.u32();
  const nEmbd = w.u32();
  if (type === F16) w.tensor({ rows: nEmbd, cols: cells, tokenAxis: 1, ...id }, nEmbd * cells * el);
  else w.skip(nEmbd * cells * el);
}

function streamBlock(w: Walker, cells: number): void {
  const positions = new Int32Array(cells);
  for (let i = 0; i < cells; i++) {
    positions[i] = w.buf.readInt32LE(w.offset);
    w.skip(4);
    w.skip(4 * w.u32());
  }
  const vTrans = w.u32() === 1;
  const layers = w.u32();
  for (let layer = 0; layer < layers; layer++) rowsTensor(w, cells, { kind: "k", layer, layers, positions });
  for (let layer = 0; layer < layers; layer++) (vTrans ? transposedTensor : rowsTensor)(w, cells, { kind: "v", layer, layers, positions });
}

export function splitState(state: Buffer): StatePart[] {
  const w = new Walker(state);
  w.skip(8);
  w.skip(4 * w.u32());
  while (w.offset < state.length) {
    const streams = w.u32();
    for (let s = 0; s < streams; s++) {
      const cells = w.u32();
      if (cells > 0) streamBlock(w, cells);
    }
  }
  return w.finish();
}

export const isTensor = (p: StatePart): p is KvTensor => !Buffer.isBuffer(p);

/** F16 bits -> f32, by table. */
export const F16_TO_F32 = ((): Float32Array => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    if (e === 0) t[h] = s * m * 2 ** -24;
    else if (e === 31) t[h] = m ? NaN : s * Infinity;
    else t[h] = s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return t;
})();

const f32 = new Float32Array(1);
const u32v = new Uint32Array(f32.buffer);

/** f32 -> F16 bits, round to nearest even (finite inputs in F16 range; KV values are). */
export function f32ToF16(v: number): number {
  f32[0] = v;
  const x = u32v[0]!;
  const sign = (x >>> 16) & 0x8000;
  const e = ((x >>> 23) & 0xff) - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const m = (x & 0x7fffff) | 0x800000;
    return sign | Math.round(m / 2 ** (14 - e));
  }
  const m = x & 0x7fffff;
  const r = (e << 10) | (m >>> 13);
  const rest = m & 0x1fff;
  return sign | (rest > 0x1000 || (rest === 0x1000 && r & 1) ? r + 1 : r);
}

/** f32 -> F16 bits for a whole array, as f32ToF16 does per value; the normal range inline (the decode hot path). */
export function f32ArrayToF16(x: Float32Array, out: Uint16Array): void {
  const bits = new Uint32Array(x.buffer, x.byteOffset, x.length);
  for (let k = 0; k < x.length; k++) {
    const b = bits[k]!;
    const e = (b >>> 23) & 0xff;
    if (e <= 112 || e >= 143) {
      out[k] = f32ToF16(x[k]!);
      continue;
    }
    const h = ((b >>> 16) & 0x8000) | ((e - 112) << 10) | ((b >>> 13) & 0x3ff);
    const rest = b & 0x1fff;
    out[k] = rest > 0x1000 || (rest === 0x1000 && h & 1) ? h + 1 : h;
  }
}
