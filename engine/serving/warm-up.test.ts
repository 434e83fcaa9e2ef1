/**
 * The warm-up prompt (serving/warm-up.ts): how many tokens a pod warms with, and that a warmed pod
 * leaves no KV behind and answers as an unwarmed one does. Real llama.cpp on the tiny synthetic GGUF.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { completionWithReuse, startPod } from "../../testing/engine.ts";
import { warmUpTokens } from "./warm-up.ts";

const MODEL = "synthetic://tiny";

test("auto warms with two batches with layers on a GPU, at most what a sequence holds; none on a CPU; a count is taken as given", () => {
  const gpu = { gpuLayers: -1, batchSize: 2048, contextSize: 8704 };
  assert.equal(warmUpTokens("auto", gpu), 4096);
  assert.equal(warmUpTokens("auto", { ...gpu, contextSize: 2176 }), 2174, "room left for the two tokens it decodes");
  assert.equal(warmUpTokens("auto", { ...gpu, gpuLayers: 0 }), 0, "a CPU pod");
  assert.equal(warmUpTokens(64, { ...gpu, gpuLayers: 0 }), 64);
  assert.equal(warmUpTokens(100_000, gpu), 8702);
  assert.equal(warmUpTokens(0, gpu), 0);
});

/** A pod started with these options, and what it wrote to stderr while it started. */
async function startLogged(opts: Omit<Parameters<typeof startPod>[0], "model">): Promise<{ pod: Awaited<ReturnType<typeof startPod>>; log: string }> {
  const lines: string[] = [];
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array, ...rest: never[]): boolean => (lines.push(String(chunk)), write(chunk, ...rest))) as typeof process.stderr.write;
  try {
    return { pod: await startPod({ model: MODEL, ...opts }), log: lines.join("") };
  } finally {
    process.stderr.write = write;
  }
}

test("a pod asked for GPU layers on a build without a GPU backend runs on the CPU and does not warm up (auto)", async () => {
  const { pod, log } = await startLogged({ gpuLayers: -1 });
  try {
    assert.equal(pod.pod.service.runtime.gpu, false, "this CPU build offloads nothing");
    assert.doesNotMatch(log, /warmed up/);
  } finally {
    await pod[Symbol.asyncDispose]();
  }
});

test("a warmed pod holds no KV of its warm-up and answers as a pod that was not warmed", async () => {
  const { pod: starting, log } = await startLogged({ warmUpTokens: 300 });
  const lines = [log];
  await using warmed = starting;
  await using plain = await startPod({ model: MODEL, warmUpTokens: 0 });
  assert.match(lines.join(""), /engine \(aggregated\): warmed up with a prompt of 300 tokens in \d+ ms/);
  for (const seq of warmed.pod.service.runtime.sequences) assert.equal(seq.contextTokens().length, 0, `sequence ${seq.id} holds nothing`);
  assert.equal(await warmed.pod.service.runtime.kvStrayTokens?.(), 0, "no KV cells left over");
  const prompt = "The fleet warms its engines before it serves. ".repeat(8);
  const [a, b] = [await completionWithReuse(warmed.url, prompt), await completionWithReuse(plain.url, prompt)];
  assert.equal(a.text, b.text, "the same greedy answer");
  assert.equal(a.cached, 0, "nothing of the warm-up was reused");
});
