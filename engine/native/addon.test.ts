/**
 * Standalone: the native addon guards itself (engine/native/src/addon.h). Bad arguments are
 * JavaScript errors, not reads out of bounds; a call on the context while a step runs is refused;
 * dispose() during a step waits for it, and every call after dispose() throws.
 * Real llama.cpp (the CPU addon, built on first use) on a tiny synthetic GGUF.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { ensureModel } from "../model/fetch.ts";
import { loadNativeAddon, type NativeEngine } from "./binding.ts";

let engine: NativeEngine;
let nVocab: number;

async function load(): Promise<NativeEngine> {
  const model = await ensureModel("synthetic://tiny");
  return (await loadNativeAddon()).load(model, { contextSize: 512, sequences: 2, batchSize: 64, threads: 1 });
}

before(async () => {
  engine = await load();
  nVocab = engine.info().nVocab;
});
after(async () => {
  await engine.dispose();
});

const i32 = (...v: number[]): Int32Array => Int32Array.from(v);
const u8 = (...v: number[]): Uint8Array => Uint8Array.from(v);

test("load() refuses bad options with the option's name", async () => {
  const addon = await loadNativeAddon();
  assert.throws(() => addon.load(42 as unknown as string, { contextSize: 64, sequences: 1, threads: 1 }), { name: "TypeError", message: /modelPath/ });
  assert.throws(() => addon.load("x.gguf", { contextSize: 64, sequences: 0, threads: 1 }), { name: "RangeError", message: /options\.sequences/ });
  assert.throws(() => addon.load("x.gguf", { contextSize: 64, sequences: 1, threads: 1, flashAttention: "yes" as unknown as boolean }), {
    name: "TypeError",
    message: /options\.flashAttention/,
  });
  await assert.rejects(addon.load("/nonexistent.gguf", { contextSize: 64, sequences: 1, threads: 1 }), /failed to load model/);
  assert.throws(() => addon.load("x.gguf", { contextSize: 64, sequences: 1, threads: 1, splitMode: "diagonal" as "row" }), { name: "RangeError", message: /options\.splitMode/ });
  assert.throws(() => addon.load("x.gguf", { contextSize: 64, sequences: 1, threads: 1, tensorSplit: [1, -1] }), { name: "RangeError", message: /options\.tensorSplit/ });
  assert.throws(() => addon.load("x.gguf", { contextSize: 64, sequences: 1, threads: 1, tensorSplit: "1,1" as unknown as number[] }), { name: "TypeError", message: /options\.tensorSplit/ });
});

test("a model loads with a split mode and GPU shares (on one device, or none, they change nothing)", async () => {
  const model = await ensureModel("synthetic://tiny");
  const split = await (await loadNativeAddon()).load(model, { contextSize: 256, sequences: 1, threads: 1, splitMode: "row", tensorSplit: [1, 1] });
  assert.ok(split.info().nVocab > 0);
  await split.dispose();
  await assert.rejects(
    (await loadNativeAddon()).load(model, { contextSize: 256, sequences: 1, threads: 1, tensorSplit: Array.from({ length: 4096 }, () => 1) }),
    /tensorSplit has 4096 shares/,
  );
});

test("step() checks its arrays: types, lengths, counts, sequences, positions and token ids", () => {
  const ok = [i32(0), i32(0), i32(1), i32(1), u8(1)] as const;
  const bad: [string, unknown[], RegExp][] = [
    ["a plain array", [[0], ok[1], ok[2], ok[3], ok[4]], /seqs must be a Int32Array/],
    ["lengths differ", [i32(0, 1), ok[1], ok[2], ok[3], ok[4]], /same length/],
    ["counts do not add up", [ok[0], ok[1], i32(2), ok[3], ok[4]], /add up/],
    ["negative count", [ok[0], ok[1], i32(-1), i32(), ok[4]], />= 0/],
    ["sequence out of range", [i32(2), ok[1], ok[2], ok[3], ok[4]], /not a sequence/],
    ["negative position", [ok[0], i32(-5), ok[2], ok[3], ok[4]], />= 0/],
    ["token id past the vocabulary", [ok[0], ok[1], ok[2], i32(nVocab), ok[4]], /not a token id/],
    ["negative token id", [ok[0], ok[1], ok[2], i32(-1), ok[4]], /not a token id/],
    ["lookahead 0", [...ok, 0], /lookahead/],
  ];
  for (const [why, args, message] of bad) {
    assert.throws(() => (engine.step as (...a: unknown[]) => unknown)(...args), message, why);
  }
});

test("the other calls check their arguments", () => {
  assert.throws(() => engine.detokenize(i32(1, nVocab + 5)), { name: "RangeError", message: /tokens\[1\]/ });
  assert.throws(() => engine.detokenize([1, 2] as unknown as Int32Array), { name: "TypeError" });
  assert.throws(() => engine.isEog(-3), { name: "RangeError" });
  assert.throws(() => engine.seqRm(7, 0, -1), { name: "RangeError", message: /seq = 7/ });
  assert.throws(() => engine.seqCp(0, -1, 0, 4), { name: "RangeError", message: /dst/ });
  assert.throws(() => engine.setSampler(0, Number.NaN, 40, 0.9), { name: "RangeError", message: /temperature/ });
  assert.throws(() => engine.setSampler(0, 0.5, 40, 1.5), { name: "RangeError", message: /topP/ });
  assert.throws(() => engine.stateSetFile(0, Buffer.from("not a state at all")), /not a llama.cpp sequence state/);
  assert.throws(() => engine.tokenize(5 as unknown as string, true, false), { name: "TypeError", message: /text/ });
  assert.throws(() => engine.applyChatTemplate(["user"], []), { name: "RangeError" });
  assert.throws(() => engine.seqAdd(7, 0, -1, 4), { name: "RangeError", message: /seq = 7/ });
  assert.throws(() => engine.seqAdd(0, 0, -1, 1.5), { name: "RangeError", message: /delta/ });
  assert.throws(() => engine.evalLogits(0, 0, i32(1, nVocab)), { name: "RangeError", message: /tokens\[1\]/ });
  assert.throws(() => engine.evalLogits(0, 0, [1] as unknown as Int32Array), { name: "TypeError" });
});

test("seqAdd moves a sequence's cells: the same tokens after them see the same relative positions, so the same logits", async () => {
  const argmaxes = (l: Float32Array): number[] =>
    [0, 1].map((r) => {
      const row = l.subarray(r * nVocab, (r + 1) * nVocab);
      return row.indexOf(Math.max(...row));
    });
  engine.seqRm(0, -1, -1);
  await engine.step(i32(0), i32(0), i32(8), i32(1, 2, 3, 4, 5, 6, 7, 8), u8(0));
  const before = await engine.evalLogits(0, 8, i32(9, 10));
  assert.equal(before.length, 2 * nVocab);
  engine.seqRm(0, 8, -1);
  assert.equal(engine.seqAdd(0, 0, -1, 100), true);
  assert.equal(engine.seqPosMax(0), 107);
  const after = await engine.evalLogits(0, 108, i32(9, 10));
  assert.deepEqual(argmaxes(after), argmaxes(before));
  let worst = 0;
  let scale = 0;
  for (let i = 0; i < before.length; i++) {
    worst = Math.max(worst, Math.abs(after[i]! - before[i]!));
    scale = Math.max(scale, Math.abs(before[i]!));
  }
  assert.ok(worst <= 0.02 * scale, `logits moved by ${worst} (largest logit ${scale}) after the shift`);
  engine.seqRm(0, -1, -1);
});

test("a call on the context while a step runs is refused; reads are not", async () => {
  const prompt = engine.tokenize("hello world hello world", true, false);
  const step = engine.step(i32(0), i32(0), i32(prompt.length), prompt, u8(1));
  assert.throws(() => engine.seqRm(0, 0, -1), /busy/);
  assert.throws(() => engine.step(i32(1), i32(0), i32(1), i32(prompt[0]!), u8(1)), /busy/);
  assert.ok(engine.tokenize("hello", true, false).length > 0);
  const [token] = await step;
  assert.ok(token! >= 0 && token! < nVocab);
  assert.equal(engine.seqPosMax(0), prompt.length - 1);
  assert.equal(engine.seqRm(0, 0, -1), true);
  assert.equal(engine.seqPosMax(0), -1);
});

test("dispose() during a step waits for it; every call afterwards throws", async () => {
  const other = await load();
  const prompt = other.tokenize("hello world", true, false);
  const step = other.step(i32(0, 1), i32(0, 0), i32(prompt.length, prompt.length), Int32Array.from([...prompt, ...prompt]), u8(1, 1));
  let stepSettled = false;
  void step.then(() => (stepSettled = true));
  const disposed = other.dispose();
  assert.throws(() => other.tokenize("hello", true, false), /disposed/);
  assert.throws(() => other.info(), /disposed/);
  await disposed;
  assert.ok(stepSettled, "dispose resolved before the step in flight settled");
  const out = await step;
  assert.equal(out.length, 2);
  assert.throws(() => other.seqPosMax(0), /disposed/);
  await other.dispose(); // a second dispose is harmless
});

test("setExtras checks its arguments and refuses a grammar that does not parse; takeLogprobs answers per sequence", () => {
  const none = new Int32Array(0);
  const noBias = new Float32Array(0);
  engine.setSampler(0, 0, 0, 1);
  assert.throws(() => engine.setExtras(0, 3, 0, none, noBias, "", -1), { name: "RangeError", message: /presencePenalty/ });
  assert.throws(() => engine.setExtras(0, 0, 0, i32(1, 2), Float32Array.from([1]), "", -1), { name: "RangeError", message: /same length/ });
  assert.throws(() => engine.setExtras(0, 0, 0, i32(nVocab), Float32Array.from([1]), "", -1), { name: "RangeError", message: /biasTokens\[0\]/ });
  assert.throws(() => engine.setExtras(0, 0, 0, i32(1), Float32Array.from([101]), "", -1), { name: "RangeError", message: /biases\[0\]/ });
  assert.throws(() => engine.setExtras(0, 0, 0, none, noBias, "root ::= (", -1), { name: "RangeError", message: /grammar/ });
  assert.throws(() => engine.setExtras(0, 0, 0, none, noBias, "", 21), { name: "RangeError", message: /logprobs/ });
  assert.throws(() => engine.setExtras(5, 0, 0, none, noBias, "", -1), { name: "RangeError", message: /seq/ });
  engine.setExtras(0, 0.5, 0.5, i32(1), Float32Array.from([-100]), 'root ::= "a"', 2);
  assert.deepEqual(engine.takeLogprobs(0).tokens, new Int32Array(0));
  engine.setSampler(0, 0, 0, 1);
});
