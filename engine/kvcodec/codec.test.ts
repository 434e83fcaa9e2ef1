/**
 * Codecs on a real llama.cpp sequence state (tiny synthetic GGUF): lossless is bit-exact in
 * both V layouts, the lossy codecs keep the layout loadable, and truncating a state to a
 * block-aligned prefix loads as that prefix.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { startPod, type RunningPod } from "../../testing/engine.ts";
import { summariseSeqState, truncateSeqState } from "../runtime/seq-state.ts";
import { kvCodec } from "./codec.ts";
import { f32ToF16, F16_TO_F32, splitState } from "./state-tensors.ts";

let rowsPod: RunningPod;
let flashPod: RunningPod;
const tokensOf = (pod: RunningPod): number[] => pod.pod.service.runtime.tokenize(Array.from({ length: 40 }, (_, i) => `t${i}`).join(" "));

async function stateOf(pod: RunningPod): Promise<Buffer> {
  const seq = pod.pod.service.runtime.sequences[0]!;
  await seq.evaluatePrefix(tokensOf(pod));
  return seq.exportState();
}

before(async () => {
  rowsPod = await startPod({ model: "synthetic://tiny", parallel: 1 });
  flashPod = await startPod({ model: "synthetic://tiny", parallel: 1, flashAttention: true });
});
after(async () => {
  await rowsPod?.[Symbol.asyncDispose]();
  await flashPod?.[Symbol.asyncDispose]();
});

test("f16 conversion round-trips every finite half", () => {
  for (let h = 0; h < 0x7c00; h += 7) assert.equal(f32ToF16(F16_TO_F32[h]!), h);
});

test("lossless is bit-exact and the lossy codecs keep a loadable state, in both V layouts", async () => {
  for (const pod of [rowsPod, flashPod]) {
    const state = await stateOf(pod);
    assert.ok(
      splitState(state).some((p) => !Buffer.isBuffer(p)),
      "no F16 tensors found",
    );
    assert.ok(kvCodec("lossless").decode(kvCodec("lossless").encode(state)).equals(state));
    for (const name of ["int8", "qdelta", "qrans", "qrans8", "qpre", "qpre8", "qsink8", "qsink4", "compact", "compact1@0.5", "default"]) {
      const decoded = kvCodec(name).decode(kvCodec(name).encode(state));
      assert.equal(decoded.length, state.length);
      const seq = pod.pod.service.runtime.sequences[0]!;
      await seq.clear();
      await seq.importState(decoded);
      assert.deepEqual([...seq.contextTokens()], tokensOf(pod));
    }
  }
});

test("compact names its concrete codec in what it writes, and every name a stored entry may carry still decodes", async () => {
  const state = await stateOf(rowsPod);
  assert.equal(kvCodec("compact").name, "compact1");
  assert.equal(kvCodec("default").name, "none");
  const payload = kvCodec("compact").encode(state);
  // The tiny synthetic model has only the first layers compact codes finer: about 2x here, 4x on a real model (BENCHMARKS.md).
  assert.ok(payload.length < state.length * 0.6, `compact wrote ${payload.length} of ${state.length} bytes`);
  // A reader resolves an entry by the name it carries: compact1 decodes without knowing compact's scale.
  assert.deepEqual(kvCodec("compact1").decode(payload), kvCodec("compact").decode(payload));
  assert.throws(() => kvCodec("zstd"), /unknown KV codec zstd/);
  // The research variants: compact1@S is compact's rule at scale S; compactu@S without the finer first layers.
  assert.deepEqual(kvCodec("compact1@0.25").encode(state), payload);
  assert.ok(kvCodec("compactu@0.25").encode(state).length < payload.length, "the uniform rule codes the first layers coarser");
});

test("a state truncated to a prefix loads as exactly that prefix", async () => {
  for (const pod of [rowsPod, flashPod]) {
    const state = await stateOf(pod);
    const keep = 16;
    const cut = truncateSeqState(state, keep);
    assert.equal(summariseSeqState(cut).sections[0]!.cells, keep);
    const seq = pod.pod.service.runtime.sequences[0]!;
    await seq.clear();
    await seq.importState(cut);
    assert.deepEqual([...seq.contextTokens()], tokensOf(pod).slice(0, keep));
  }
});
