/**
 * Standalone: a sequence state imported into scattered KV cells (a unified cache that sequences
 * have come and gone from) gives the same logits as into contiguous ones, and the engine counts
 * llama.cpp's tensor copies: one per contiguous run of cells per layer, K and V (copy-batch.h; on a
 * GPU they are queued and waited for once, here on the CPU they are plain memory copies).
 * Real llama.cpp (the CPU addon, built on first use) on a tiny synthetic GGUF.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { ensureModel } from "../model/fetch.ts";
import { assertCloseLogits } from "../../testing/logits.ts";
import { loadNativeAddon, type NativeEngine } from "./binding.ts";

let engine: NativeEngine;

before(async () => {
  const model = await ensureModel("synthetic://tiny");
  // Flash attention: V is stored untransposed, so a run of cells is one copy for V as for K.
  engine = await (await loadNativeAddon()).load(model, { contextSize: 256, sequences: 2, batchSize: 64, threads: 1, flashAttention: true });
});
after(async () => {
  await engine.dispose();
});

const i32 = (...v: number[]): Int32Array => Int32Array.from(v);
const u8 = (...v: number[]): Uint8Array => Uint8Array.from(v);
const PROMPT = i32(1, 2, 3, 4, 5, 6, 7, 8);

/** Imports the state into sequence 0; returns the copies it took and the next token's logits. */
async function importAndRead(state: Buffer): Promise<{ copies: number; logits: Float32Array }> {
  const before = engine.importStats().copies;
  engine.stateSetFile(0, state);
  const copies = engine.importStats().copies - before;
  const logits = await engine.evalLogits(0, PROMPT.length, i32(9));
  engine.seqRm(0, PROMPT.length, -1);
  return { copies, logits };
}

test("a state imported into scattered cells reads the same, with one tensor copy per run of cells", async () => {
  await engine.step(i32(0), i32(0), i32(PROMPT.length), PROMPT, u8(0));
  const reference = await engine.evalLogits(0, PROMPT.length, i32(9));
  engine.seqRm(0, PROMPT.length, -1);
  const exportsBefore = engine.exportStats().copies;
  const state = await engine.stateGetFile(0, PROMPT);
  const exportCopies = engine.exportStats().copies - exportsBefore;
  assert.ok(exportCopies > 0, "a static build counts the export's copies");

  // Into an empty cache: one run, so one copy per layer for K and one for V.
  engine.seqRm(0, -1, -1);
  const contiguous = await importAndRead(state);
  assert.equal(contiguous.copies, exportCopies);
  assertCloseLogits(contiguous.logits, reference);

  // Sequences 0 and 1 decode side by side for 20 steps (cells 0..39 alternate between them); then
  // sequence 0 leaves, and the free cells before the cache's head are every other one of 0..39.
  engine.seqRm(0, -1, -1);
  for (let pos = 0; pos < 20; pos++) await engine.step(i32(0, 1), i32(pos, pos), i32(1, 1), i32(10 + pos, 40 + pos), u8(0, 0));
  engine.seqRm(0, -1, -1);
  const scattered = await importAndRead(state);
  assert.equal(scattered.copies, PROMPT.length * contiguous.copies, "8 cells in 8 runs");
  assertCloseLogits(scattered.logits, reference);
  engine.seqRm(0, -1, -1);
  engine.seqRm(1, -1, -1);
});
