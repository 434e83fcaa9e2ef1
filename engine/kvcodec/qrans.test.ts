/**
 * rANS and the qrans tensor codec, standalone: rANS round-trips any symbols under any mix of
 * tables; a decoded tensor is within half a step of the original everywhere (outliers exact),
 * in both token layouts and across the recent-token split.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { decodeTables, normaliseCounts, ransDecode, ransEncode } from "./rans.ts";
import { decodeQransTensor, encodeQransTensor } from "./qrans-tensor.ts";
import { decodeTensor, encodeTensor } from "./qrans.ts";
import { F16_TO_F32, f32ToF16 } from "./state-tensors.ts";
import { rng } from "../../testing/rng.ts";

test("normalised frequencies sum to 4096 and keep every seen symbol", () => {
  for (const counts of [[1, 0, 0], [5, 1_000_000, 1, 0, 1], Array.from({ length: 200 }, (_, i) => i % 3), [7]]) {
    const freq = normaliseCounts(Uint32Array.from(counts));
    assert.equal(
      freq.reduce((a, b) => a + b, 0),
      4096,
    );
    counts.forEach((c, s) => assert.equal(freq[s]! > 0, c > 0, `symbol ${s}`));
  }
});

test("rANS round-trips skewed, uniform and single-symbol streams under per-symbol tables", () => {
  const rand = rng(7);
  for (const n of [0, 1, 2, 3, 1000, 100_001]) {
    const symbols = new Uint8Array(n);
    const contexts = new Uint8Array(n);
    for (let k = 0; k < n; k++) {
      contexts[k] = k % 5 === 0 ? 1 : k % 7 === 0 ? 2 : 0;
      symbols[k] = contexts[k] === 2 ? 3 : contexts[k] === 1 ? Math.floor(rand() * 64) : Math.floor(rand() ** 4 * 20);
    }
    const counts = [0, 1, 2].map(() => new Uint32Array(64));
    symbols.forEach((s, k) => counts[contexts[k]!]![s]!++);
    const freqs = counts.map(normaliseCounts);
    const stream = ransEncode(symbols, contexts, freqs);
    const out = new Uint8Array(n);
    ransDecode(stream, contexts, decodeTables(freqs), out);
    assert.deepEqual(out, symbols);
  }
});

function randomTensor(tokens: number, channels: number, tokenAxis: 0 | 1, seed: number): Buffer {
  const rand = rng(seed);
  const x = new Uint16Array(tokens * channels);
  for (let i = 0; i < tokens; i++) {
    for (let j = 0; j < channels; j++) {
      // Slow drift in even channels (delta helps), noise in odd ones, a sink token with outliers.
      const v = j % 2 === 0 ? Math.sin(i / 50 + j) * (1 + j / 10) : (rand() - 0.5) * 4;
      x[tokenAxis === 0 ? i * channels + j : j * tokens + i] = f32ToF16(i === 0 ? v * 300 : v);
    }
  }
  return Buffer.from(x.buffer);
}

function maxError(a: Buffer, b: Buffer): number {
  let max = 0;
  for (let k = 0; k < a.length; k += 2) max = Math.max(max, Math.abs(F16_TO_F32[a.readUInt16LE(k)]! - F16_TO_F32[b.readUInt16LE(k)]!));
  return max;
}

test("a decoded tensor is within half a step of the original, in both layouts", () => {
  for (const tokenAxis of [0, 1] as const) {
    const [tokens, channels] = [300, 16];
    const shape = tokenAxis === 0 ? { rows: tokens, cols: channels, tokenAxis } : { rows: channels, cols: tokens, tokenAxis };
    const data = randomTensor(tokens, channels, tokenAxis, 3 + tokenAxis);
    for (const step of [0.05, 0.5, 2]) {
      const decoded = decodeQransTensor(encodeQransTensor(data, shape, step), shape);
      assert.equal(decoded.length, data.length);
      // The step is `step` x the tensor's (pooled) standard deviation, a few units here; plus F16 rounding.
      const sd = Math.sqrt(data.reduce((a, _, k) => (k % 2 === 0 ? a + F16_TO_F32[data.readUInt16LE(k)]! ** 2 : a), 0) / (tokens * channels));
      assert.ok(maxError(data, decoded) <= (step * sd) / 2 + 0.05, `step ${step}, layout ${tokenAxis}: ${maxError(data, decoded)}`);
    }
  }
});

test("coarser steps give smaller payloads", () => {
  const data = randomTensor(512, 32, 0, 9);
  const shape = { rows: 512, cols: 32, tokenAxis: 0 as const };
  const sizes = [0.1, 0.5, 2].map((s) => encodeQransTensor(data, shape, s).length);
  assert.ok(sizes[0]! > sizes[1]! && sizes[1]! > sizes[2]!, `${sizes.join(" > ")}`);
});

test("the most recent tokens get their own, finer step, and join back in place, in both layouts", () => {
  for (const tokenAxis of [0, 1] as const) {
    const [tokens, channels, recent] = [200, 8, 20];
    const data = randomTensor(tokens, channels, tokenAxis, 11);
    const shape = tokenAxis === 0 ? { rows: tokens, cols: channels, tokenAxis } : { rows: channels, cols: tokens, tokenAxis };
    const t = { ...shape, kind: "k" as const, layer: 0, layers: 1, positions: Int32Array.from({ length: tokens }, (_, i) => i), data };
    const decoded = decodeTensor(encodeTensor(t, { step: () => 4, recentTokens: recent, recentStep: 0.01 }));
    const at = (i: number, j: number): number => 2 * (tokenAxis === 0 ? i * channels + j : j * tokens + i);
    const errors = Array.from({ length: tokens }, (_, i) =>
      Math.max(...Array.from({ length: channels }, (_, j) => Math.abs(F16_TO_F32[data.readUInt16LE(at(i, j))]! - F16_TO_F32[decoded.readUInt16LE(at(i, j))]!))),
    );
    const oldError = Math.max(...errors.slice(1, tokens - recent));
    const recentError = Math.max(...errors.slice(tokens - recent));
    assert.ok(oldError > 0.5, `older tokens coarse: ${oldError}`);
    assert.ok(recentError < 0.05, `recent tokens fine: ${recentError}`);
  }
});
