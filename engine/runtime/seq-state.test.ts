// normaliseSeqState on real llama.cpp sequence states (native backend, tiny synthetic GGUF): a
// state already in the target layout comes back as the same buffer (no copy), and one in the
// other V layout is rewritten and round-trips byte for byte.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { ensureModel } from "../model/fetch.ts";
import { NativeRuntime } from "./native-runtime.ts";
import { normaliseSeqState, summariseSeqState } from "./seq-state.ts";

let rt: NativeRuntime;
let state: Buffer;

before(async () => {
  rt = await NativeRuntime.load({ modelPath: await ensureModel("synthetic://tiny"), threads: 1, contextSize: 128, parallel: 1, flashAttention: true });
  const seq = rt.sequences[0]!;
  await seq.evaluatePrefix(rt.tokenize("hello world, the capital of France is"));
  state = await seq.exportState();
});
after(async () => {
  await rt?.[Symbol.asyncDispose]();
});

test("a state already in the target layout is returned as it is", () => {
  const summary = summariseSeqState(state);
  assert.ok(summary.sections.length > 0);
  assert.equal(normaliseSeqState(state, { streams: 1, vTransposed: false }), state);
});

test("a state in the other V layout is rewritten, and rewriting it back gives the original bytes", () => {
  const transposed = normaliseSeqState(state, { streams: 1, vTransposed: true });
  assert.notEqual(transposed, state);
  assert.equal(transposed.length, state.length);
  assert.notDeepEqual(transposed, state);
  assert.deepEqual(normaliseSeqState(transposed, { streams: 1, vTransposed: false }), state);
  // More streams in the target: the same cells, an empty stream added (a new buffer).
  const wider = normaliseSeqState(state, { streams: 2, vTransposed: false });
  assert.equal(wider.length, state.length + 4);
});
