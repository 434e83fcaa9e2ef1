/** A minimal GGUF v3 writer: metadata, tensor infos, then tensor data (32-byte aligned). */
import { open } from "node:fs/promises";

export type GgufValue =
  | { type: "u32"; value: number }
  | { type: "i32"; value: number }
  | { type: "f32"; value: number }
  | { type: "bool"; value: boolean }
  | { type: "string"; value: string }
  | { type: "strings"; value: string[] }
  | { type: "f32s"; value: number[] }
  | { type: "i32s"; value: number[] };

export type GgmlDType = "f32" | "f16";

export interface GgufTensor {
  name: string;
  /** ggml order: dims[0] is the contiguous (inner) dimension. */
  dims: number[];
  dtype: GgmlDType;
  /** Fills `out` (length = product of dims) with the tensor's values. */
  fill(out: Float32Array): void;
  /** f16 only: writes half-precision bit patterns directly (multi-GB models: no float pass). */
  fillHalf?: (out: Uint16Array) => void;
}

function tensorBytes(t: GgufTensor): Buffer {
  if (t.dtype === "f16" && t.fillHalf) {
    const bits = new Uint16Array(elements(t));
    t.fillHalf(bits);
    return Buffer.from(bits.buffer, bits.byteOffset, bits.byteLength);
  }
  const values = new Float32Array(elements(t));
  t.fill(values);
  return encode(values, t.dtype);
}

const ALIGN = 32;
const TYPE_ID = { u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9, u64: 10 } as const;
const GGML_TYPE: Record<GgmlDType, number> = { f32: 0, f16: 1 };

class ByteWriter {
  private parts: Buffer[] = [];
  length = 0;
  push(b: Buffer): void {
    this.parts.push(b);
    this.length += b.length;
  }
  u32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.push(b);
  }
  i32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeInt32LE(v);
    this.push(b);
  }
  f32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeFloatLE(v);
    this.push(b);
  }
  u64(v: number): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b);
  }
  str(s: string): void {
    const b = Buffer.from(s, "utf8");
    this.u64(b.length);
    this.push(b);
  }
  bytes(): Buffer {
    return Buffer.concat(this.parts);
  }
}

function writeValue(w: ByteWriter, v: GgufValue): void {
  const arrays = { strings: ["string", TYPE_ID.string], f32s: ["f32", TYPE_ID.f32], i32s: ["i32", TYPE_ID.i32] } as const;
  if (v.type in arrays) {
    const [elem, id] = arrays[v.type as keyof typeof arrays];
    const items = v.value as (string | number)[];
    w.u32(TYPE_ID.array);
    w.u32(id);
    w.u64(items.length);
    for (const item of items) {
      if (elem === "string") w.str(item as string);
      else if (elem === "f32") w.f32(item as number);
      else w.i32(item as number);
    }
    return;
  }
  const scalar = v as Extract<GgufValue, { type: "u32" | "i32" | "f32" | "bool" | "string" }>;
  w.u32(TYPE_ID[scalar.type]);
  if (scalar.type === "string") w.str(scalar.value);
  else if (scalar.type === "bool") w.push(Buffer.from([scalar.value ? 1 : 0]));
  else if (scalar.type === "u32") w.u32(scalar.value);
  else if (scalar.type === "i32") w.i32(scalar.value);
  else w.f32(scalar.value);
}

const elements = (t: GgufTensor): number => t.dims.reduce((a, b) => a * b, 1);
const byteSize = (t: GgufTensor): number => elements(t) * (t.dtype === "f32" ? 4 : 2);
const pad = (n: number): number => (ALIGN - (n % ALIGN)) % ALIGN;

function encode(values: Float32Array, dtype: GgmlDType): Buffer {
  if (dtype === "f32") return Buffer.from(values.buffer, values.byteOffset, values.byteLength);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = toHalf(values[i]!);
  return Buffer.from(out.buffer, out.byteOffset, out.byteLength);
}

const halfScratch = new Float32Array(1);
const halfBits = new Uint32Array(halfScratch.buffer);

/** float32 -> IEEE half (round to nearest), enough for weights in (-1, 1). No allocation: multi-GB models go through it. */
export function toHalf(v: number): number {
  halfScratch[0] = v;
  const x = halfBits[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = ((x >>> 23) & 0xff) - 127 + 15;
  const mant = x & 0x7fffff;
  if (exp <= 0) return sign;
  if (exp >= 31) return sign | 0x7c00;
  return sign | (exp << 10) | ((mant + 0x1000) >>> 13);
}

export async function writeGguf(path: string, metadata: [string, GgufValue][], tensors: GgufTensor[]): Promise<void> {
  const w = new ByteWriter();
  w.push(Buffer.from("GGUF"));
  w.u32(3);
  w.u64(tensors.length);
  w.u64(metadata.length);
  for (const [key, value] of metadata) {
    w.str(key);
    writeValue(w, value);
  }
  let offset = 0;
  for (const t of tensors) {
    w.str(t.name);
    w.u32(t.dims.length);
    for (const d of t.dims) w.u64(d);
    w.u32(GGML_TYPE[t.dtype]);
    w.u64(offset);
    offset += byteSize(t) + pad(byteSize(t));
  }
  w.push(Buffer.alloc(pad(w.length)));
  const file = await open(path, "w");
  try {
    await file.write(w.bytes());
    for (const t of tensors) {
      await file.write(tensorBytes(t));
      await file.write(Buffer.alloc(pad(byteSize(t))));
    }
  } finally {
    await file.close();
  }
}
