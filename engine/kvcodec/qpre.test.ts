/**
 * The qpre pieces, standalone: RoPE undone and redone is the identity within F16 rounding; the
 * encoder finds the RoPE a tensor was rotated with; a block is within half a step everywhere
 * (outliers exact to F16), narrow and wide channels alike; a tensor round-trips in both token
 * layouts with its recent tokens finer; a sink tensor keeps its sink rows exact, scales its
 * channels' errors by their gains and keeps its format. (codec.test.ts loads decoded states into llama.cpp.)
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { decodeBlock, encodeBlock } from "./qpre-block.ts";
import { decodeQpreTensor, decodeSinkTensor, encodeQpreTensor, encodeSinkTensor, type QpreOptions } from "./qpre.ts";
import { ropeTables, rotateRows } from "./rope.ts";
import { F16_TO_F32, f32ArrayToF16, f32ToF16, type KvTensor } from "./state-tensors.ts";
import { rng } from "../../testing/rng.ts";
import { createHash } from "node:crypto";

/** The sink tensor body of the fixed input below (its format is what stored qsink entries hold). */
const SINK_BODY_SHA = "fc035f78d70ac7b6";

const positions = (n: number, from = 0): Int32Array => Int32Array.from({ length: n }, (_, i) => from + i);
const roundF16 = (x: Float32Array): Float32Array => x.map((v) => F16_TO_F32[f32ToF16(v)]!);

/** tokens x channels rows whose channels have fixed means and spreads (what un-rotated keys look like). */
function stableRows(tokens: number, channels: number, seed: number): Float32Array {
  const rand = rng(seed);
  const mean = Array.from({ length: channels }, () => (rand() - 0.5) * 20);
  const sd = Array.from({ length: channels }, () => 0.05 + rand() * 2);
  return roundF16(Float32Array.from({ length: tokens * channels }, (_, k) => mean[k % channels]! + sd[k % channels]! * (rand() - 0.5)));
}

test("RoPE undone and redone is the identity within F16 rounding, both styles, gaps in positions", () => {
  const x = stableRows(300, 64, 1);
  const pos = Int32Array.from(positions(300), (p) => (p < 150 ? p : p + 37));
  for (const style of ["neox", "norm"] as const) {
    const y = Float32Array.from(x);
    const tables = ropeTables(pos, 64, 10_000);
    rotateRows(y, tables, style, -1);
    rotateRows(y, tables, style, 1);
    const h = new Uint16Array(y.length);
    f32ArrayToF16(y, h);
    h.forEach((v, k) => assert.ok(Math.abs(F16_TO_F32[v]! - x[k]!) <= Math.abs(x[k]!) * 2 ** -10 + 1e-6, `${style} ${k}`));
  }
});

test("f32ArrayToF16 agrees with f32ToF16, normals, subnormals, ties and overflow", () => {
  const rand = rng(2);
  const x = Float32Array.from({ length: 20_000 }, (_, i) => (rand() - 0.5) * 2 ** ((i % 40) - 24));
  x.set([0, -0, 65504, 70000, -1e9, 2 ** -25, 1 + 2 ** -11, 1 + 3 * 2 ** -11]);
  const h = new Uint16Array(x.length);
  f32ArrayToF16(x, h);
  x.forEach((v, k) => assert.equal(h[k], f32ToF16(v), `${v}`));
});

test("a block is within half a step of its input everywhere, narrow and wide channels, outliers exact", () => {
  const tokens = 400;
  const channels = 8;
  const x = stableRows(tokens, channels, 3);
  x[5 * channels + 2] = 5000;
  for (const step of [0.001, 0.05, 1, 30]) {
    const body = encodeBlock(x, channels, step);
    const y = decodeBlock(body, tokens, channels);
    x.forEach((v, k) =>
      assert.ok(Math.abs(y[k]! - v) <= Math.max(step / 2 + Math.abs(v) * 2 ** -11, Math.abs(v) * 2 ** -10), `step ${step} element ${k}: ${v} -> ${y[k]}`),
    );
  }
});

const options = (step: number): QpreOptions => ({
  ropes: [
    { style: "neox", base: 10_000 },
    { style: "neox", base: 1_000_000 },
  ],
  policy: () => ({ step, recentTokens: 16, recentScale: 0.01 }),
});

/** Keys rotated with neox RoPE, base 10,000, F16. */
function rotatedKeys(tokens: number, channels: number): KvTensor {
  const x = stableRows(tokens, channels, 4);
  rotateRows(x, ropeTables(positions(tokens, 7), channels, 10_000), "neox", 1);
  const h = new Uint16Array(x.length);
  f32ArrayToF16(x, h);
  return { rows: tokens, cols: channels, tokenAxis: 0, kind: "k", layer: 0, layers: 1, positions: positions(tokens, 7), data: Buffer.from(h.buffer) };
}

test("the encoder finds the RoPE the keys were rotated with", () => {
  const t = rotatedKeys(512, 64);
  const body = encodeQpreTensor(t, options(0.3));
  assert.equal(body[9], 1, "neox");
  assert.equal(body.readFloatLE(10), 10_000);
  assert.equal(encodeQpreTensor(t, { ...options(0.3), ropes: [] })[9], 0, "none without candidates");
});

test("a tensor round-trips in both layouts with its recent tokens finer", () => {
  const [tokens, channels] = [200, 16];
  const keys = rotatedKeys(tokens, channels);
  const rows = new Uint16Array(keys.data.buffer, keys.data.byteOffset, tokens * channels);
  const columns = new Uint16Array(tokens * channels);
  for (let i = 0; i < tokens; i++) for (let j = 0; j < channels; j++) columns[j * tokens + i] = rows[i * channels + j]!;
  const values: KvTensor = { ...keys, kind: "v", rows: channels, cols: tokens, tokenAxis: 1, data: Buffer.from(columns.buffer) };
  for (const t of [keys, values]) {
    const out = { ...t, data: Buffer.alloc(t.data.length) };
    decodeQpreTensor(encodeQpreTensor(t, options(1)), out);
    const error = (i: number): number => {
      let e = 0;
      for (let j = 0; j < channels; j++) {
        const k = 2 * (t.tokenAxis === 0 ? i * channels + j : j * tokens + i);
        e = Math.max(e, Math.abs(F16_TO_F32[t.data.readUInt16LE(k)]! - F16_TO_F32[out.data.readUInt16LE(k)]!));
      }
      return e;
    };
    const old = Math.max(...Array.from({ length: tokens - 16 }, (_, i) => error(i)));
    const recent = Math.max(...Array.from({ length: 16 }, (_, i) => error(tokens - 16 + i)));
    assert.ok(old > 0.05 && old < 10, `${t.kind} older tokens coarse: ${old}`);
    assert.ok(recent < 0.05, `${t.kind} recent tokens fine: ${recent}`);
  }
});

test("sink rows are exact and channel gains make a channel's error 1/gain as large", () => {
  const [tokens, channels] = [300, 16];
  const x = stableRows(tokens, channels, 5);
  x.fill(40, 0, channels);
  const h = new Uint16Array(x.length);
  f32ArrayToF16(x, h);
  const t: KvTensor = { rows: tokens, cols: channels, tokenAxis: 0, kind: "v", layer: 0, layers: 1, positions: positions(tokens), data: Buffer.from(h.buffer) };
  const gains = Int8Array.from({ length: channels }, (_, j) => (j < 8 ? 64 : -32));
  const body = encodeSinkTensor(t, { ...options(1), sinkPositions: 1, gains: () => gains });
  const coded = body.readUInt32LE(0);
  assert.equal(body.readUInt32LE(4 + coded), 1, "one sink row");
  assert.equal(body.readUInt32LE(4 + coded + 4 + 4 + 2 * channels), channels, "a gain per channel");
  const step = body.readFloatLE(4 + 15 + 8 * body[4 + 14]!);
  const out = { ...t, data: Buffer.alloc(t.data.length) };
  decodeSinkTensor(body, out);
  assert.deepEqual(out.data.subarray(0, 2 * channels), t.data.subarray(0, 2 * channels), "sink row exact");
  let coarse = 0;
  for (let i = 1; i < tokens - 16; i++) {
    for (let j = 0; j < channels; j++) {
      const [a, b] = [F16_TO_F32[t.data.readUInt16LE(2 * (i * channels + j))]!, F16_TO_F32[out.data.readUInt16LE(2 * (i * channels + j))]!];
      const bound = step / 2 / 2 ** (gains[j]! / 32) + Math.abs(a) * 2 ** -10 + 1e-6;
      assert.ok(Math.abs(a - b) <= bound, `token ${i} channel ${j}: ${a} -> ${b}, bound ${bound}`);
      if (j >= 8) coarse = Math.max(coarse, Math.abs(a - b));
    }
  }
  assert.ok(coarse > step / 4, `channels of gain 1/2 are coded coarser than those of gain 4: ${coarse} vs step ${step}`);
  assert.equal(createHash("sha256").update(body).digest("hex").slice(0, 16), SINK_BODY_SHA, "format changed: entries already stored would no longer decode");
});
