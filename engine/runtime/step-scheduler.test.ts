// Standalone (no model): the batching loop's prefill accounting, on a fake native engine.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { NativeEngine } from "../native/binding.ts";
import { StepScheduler } from "./step-scheduler.ts";

/** A native engine whose step takes `ms` and samples token 7 for every entry that asks. */
function fakeEngine(ms: number): NativeEngine {
  const step = async (...args: [Int32Array, Int32Array, Int32Array, Int32Array, Uint8Array]): Promise<Int32Array> => {
    const [seqs, , , , sample] = args;
    const until = performance.now() + ms;
    while (performance.now() < until) await new Promise((r) => setImmediate(r));
    return Int32Array.from(seqs, (_, i) => (sample[i] ? 7 : -1));
  };
  return { step } as unknown as NativeEngine;
}

test("prefill counters: a prompt-only step is all prefill, a mixed step is split by its tokens, a decode step adds none", async () => {
  const s = new StepScheduler(fakeEngine(20), 64);
  await s.evaluate({ seq: 0, pos: 0, tokens: [1, 2, 3, 4], sample: true });
  assert.equal(s.stats.prefillTokens, 4);
  assert.equal(s.stats.prefillSeconds, s.stats.busySeconds);

  // One decoding sequence (1 token) and a 3-token prompt in one step: 3 of its 4 tokens are prompt.
  const before = { busy: s.stats.busySeconds, prefill: s.stats.prefillSeconds };
  await Promise.all([s.evaluate({ seq: 0, pos: 4, tokens: [7], sample: true }), s.evaluate({ seq: 1, pos: 0, tokens: [1, 2, 3], sample: true })]);
  assert.equal(s.stats.calls, 2);
  assert.equal(s.stats.prefillTokens, 7);
  const stepSeconds = s.stats.busySeconds - before.busy;
  assert.ok(stepSeconds > 0.015);
  assert.ok(Math.abs(s.stats.prefillSeconds - before.prefill - 0.75 * stepSeconds) < 1e-9);

  const prefill = s.stats.prefillSeconds;
  await s.evaluate({ seq: 0, pos: 5, tokens: [7], sample: true });
  assert.equal(s.stats.prefillSeconds, prefill);
  assert.equal(s.stats.prefillTokens, 7);
});

test("prefill counters: a prompt longer than a step is counted chunk by chunk", async () => {
  const s = new StepScheduler(fakeEngine(1), 4);
  await s.evaluate({ seq: 0, pos: 0, tokens: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], sample: true });
  assert.equal(s.stats.calls, 3);
  assert.equal(s.stats.prefillTokens, 10);
  assert.ok(Math.abs(s.stats.prefillSeconds - s.stats.busySeconds) < 1e-12);
});
