/**
 * LLMFLEET_IMPORT_OVERLAP=1 (runtime/shared-state.ts importFile): a hand-off's import through the
 * addon's detached set (stateSetFileDetached, then copiesDone outside the scheduler's exclusive
 * section). On this CPU there are no device copies to leave running (ticket 0), so what is tested
 * is the path's answers and the addon's calls; what it saves on a GPU is bench:http pd's
 * tcp-overlap. Real pods on the tiny synthetic GGUF (real llama.cpp).
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";

process.env.LLMFLEET_IMPORT_OVERLAP = "1"; // read when the runtime's module loads, below
const { completionText, startPdFleet } = await import("../../testing/engine.ts");
const { loadNativeAddon } = await import("../native/binding.ts");

let fleet: Awaited<ReturnType<typeof startPdFleet>>;
before(async () => {
  fleet = await startPdFleet("synthetic://tiny");
});
after(() => fleet?.[Symbol.asyncDispose]());

test("with the import's copies detached, every answer through the router is the aggregated pod's", async () => {
  for (const body of [
    { prompt: "the capital of France is", max_tokens: 6 },
    { prompt: "a b c d e f g h i j k", max_tokens: 20, stop: [" "] },
    { prompt: "one two three four five six seven", max_tokens: 12 },
  ]) {
    assert.equal(await completionText(fleet.router.url, body), await completionText(fleet.aggregated.url, body), JSON.stringify(body));
  }
});

test("the addon's detached set answers ticket 0 on a CPU (nothing left to wait for), and copiesDone settles for any ticket", async () => {
  const addon = await loadNativeAddon();
  const engine = (fleet.decode.pod.service.runtime as unknown as { engine: import("../native/binding.ts").NativeEngine }).engine;
  assert.ok(addon && engine.stateSetFileDetached && engine.copiesDone, "this addon has the detached import");
  await engine.copiesDone(0);
  await engine.copiesDone(12345); // unknown: settles at once
  assert.throws(() => engine.stateSetFileDetached!(0, Buffer.alloc(4)), /not a llama.cpp sequence state/);
});
