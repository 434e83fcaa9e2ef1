/**
 * Model-dependent tests of the native backend (engine/native + StepScheduler) on the real default
 * model (Gemma 3 270M), on CPU. The addon is built on first use (scripts/native/build.sh: a few
 * minutes on a fresh machine, progress on stderr, then cached).
 *
 * Every path here follows the serving invariant: evaluate prompt[0..n-1) without sampling, then
 * feed prompt[n-1] to the sampler. Batched numerics on CPU may differ slightly from
 * single-sequence numerics (other batch shapes pick other kernels), and so may a sequence whose
 * KV cells sit elsewhere in the cache: Gemma 3 270M has near-ties in some continuations
 * ("Once upon a time, in a small village," gave seven different 16-token greedy outputs across
 * cache layouts, batches and flash-attention settings). The prompts below, except the one
 * compared with node-llama-cpp on a fresh cache, were chosen for giving one output under all of
 * them.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { ensureDefaultModel } from "../model/fetch.ts";
import { nativeAddonPath } from "../native/binding.ts";
import { normaliseSeqState, summariseSeqState } from "./seq-state.ts";
import { LlamaRuntime } from "./llama-runtime.ts";
import { NativeRuntime } from "./native-runtime.ts";
import type { ChatMessage, RuntimeSequence, Sampling, Token } from "./runtime.ts";

const GREEDY: Sampling = { temperature: 0, topK: 1, topP: 1 };
const PARIS = "The capital of France is the city of";
const WEEKDAYS = "Monday, Tuesday, Wednesday,";
const MONTHS = "January, February, March, April,";
const COUNT = "1, 2, 3, 4, 5, 6, 7, 8,";
const THREADS = 1;

let rt: NativeRuntime;
let llama: LlamaRuntime;
let modelPath: string;

before(async () => {
  modelPath = await ensureDefaultModel();
  const started = performance.now();
  process.stderr.write(`native addon: ${await nativeAddonPath()} (${Math.round(performance.now() - started)} ms)\n`);
  rt = await NativeRuntime.load({ modelPath, threads: THREADS, contextSize: 256, parallel: 4 });
  llama = await LlamaRuntime.load({ modelPath, threads: THREADS, contextSize: 256, parallel: 1 });
});
after(async () => {
  await rt?.[Symbol.asyncDispose]();
  await llama?.[Symbol.asyncDispose]();
});

/** Takes `n` sampled tokens from the sequence, feeding `next` first, then stops the generator. */
async function take(seq: RuntimeSequence, next: readonly Token[], n: number): Promise<Token[]> {
  const out: Token[] = [];
  for await (const token of seq.generate(next, GREEDY)) {
    out.push(token);
    if (out.length >= n) break;
  }
  return out;
}

/** The serving path: prompt[0..n-1) without sampling, then prompt[n-1] to the sampler. */
async function complete(seq: RuntimeSequence, prompt: readonly Token[], n: number): Promise<{ tokens: Token[]; reused: number }> {
  const reused = await seq.evaluatePrefix(prompt.slice(0, -1));
  return { tokens: await take(seq, prompt.slice(-1), n), reused };
}

async function clearAll(): Promise<void> {
  for (const seq of rt.sequences) await seq.clear();
}

const seq = (i: number): RuntimeSequence => rt.sequences[i]!;

/** Each prompt's greedy continuation (n tokens, or lengths[i]) computed alone on a fresh cache: the reference for batched runs. */
async function alone(prompts: readonly Token[][], n: number | number[]): Promise<Token[][]> {
  const reference: Token[][] = [];
  await clearAll();
  for (const [i, prompt] of prompts.entries()) {
    reference.push((await complete(seq(0), prompt, typeof n === "number" ? n : n[i]!)).tokens);
    await clearAll();
  }
  return reference;
}

test("greedy continuation and tokens are identical to node-llama-cpp's (LlamaRuntime)", async () => {
  await clearAll();
  assert.deepEqual(rt.tokenize(PARIS), llama.tokenize(PARIS));
  const native = await complete(seq(0), rt.tokenize(PARIS), 24);
  const reference = await complete(llama.sequences[0]!, llama.tokenize(PARIS), 24);
  assert.deepEqual(native.tokens, reference.tokens);
  assert.match(rt.detokenize(native.tokens), /^ Paris/);
  assert.equal(rt.detokenize(native.tokens), llama.detokenize(reference.tokens));
});

test("the default model's GGUF has no chat template: native renders Gemma turns as node-llama-cpp's Gemma wrapper does", () => {
  const conversations: ChatMessage[][] = [
    [{ role: "user", content: "hello" }],
    [
      { role: "user", content: "hi" },
      { role: "assistant", content: "Hello! How can I help?" },
      { role: "user", content: "Tell me a joke" },
    ],
  ];
  for (const messages of conversations) assert.deepEqual(rt.tokenizeChat(messages).tokens, llama.tokenizeChat(messages).tokens);
  // A system message is merged into the first user turn by both, with "\n\n" (llama.cpp) or "\n\n---\n\n" (node-llama-cpp).
  const system = rt.detokenize(rt.tokenizeChat([{ role: "system", content: "Be brief." }, { role: "user", content: "2+2?" }]).tokens);
  assert.match(system, /^user\nBe brief\.\n\n2\+2\?\nmodel\n$/);
});

test("a state exported from one sequence and imported into another continues identically", async () => {
  await clearAll();
  const prompt = rt.tokenize(WEEKDAYS);
  await seq(0).evaluatePrefix(prompt.slice(0, -1));
  const state = await seq(0).exportState();
  const original = await take(seq(0), prompt.slice(-1), 16);
  // Nothing left to share: the imported sequence has only the state's KV to go on.
  await seq(0).clear();
  await seq(1).importState(state);
  assert.deepEqual(seq(1).contextTokens(), prompt.slice(0, -1));
  assert.deepEqual(await take(seq(1), prompt.slice(-1), 16), original);
});

test("the exported state is llama.cpp's sequence state file, which node-llama-cpp loads and continues identically", async () => {
  await clearAll();
  const prompt = rt.tokenize(WEEKDAYS);
  await seq(0).evaluatePrefix(prompt.slice(0, -1));
  const state = await seq(0).exportState();
  const original = await take(seq(0), prompt.slice(-1), 16);
  // One section per KV cache (Gemma 3: base and sliding-window), each with the context's stream
  // count (one per sequence) and the sequence's n-1 cells.
  const summary = summariseSeqState(state);
  assert.deepEqual(summary.tokens, prompt.slice(0, -1));
  assert.deepEqual(
    summary.sections.map((s) => [s.streams, s.cells]),
    summary.sections.map(() => [rt.info.kvStreams, prompt.length - 1]),
  );
  const { kvStreams, flashAttention } = llama.info;
  await llama.sequences[0]!.importState(normaliseSeqState(state, { streams: kvStreams, vTransposed: !flashAttention }));
  assert.deepEqual(await take(llama.sequences[0]!, prompt.slice(-1), 16), original);
});

test("a sequence reuses the prefix another one holds and continues as a fresh computation would", async () => {
  const shared = "The capital of Germany is Berlin. The capital of Italy is Rome. The capital of";
  const donorPrompt = rt.tokenize(`${shared} Russia is`);
  const prompt = rt.tokenize(`${shared} Spain is`);
  let common = 0;
  while (donorPrompt[common] === prompt[common]) common++;
  assert.ok(common > 16, `the prompts share ${common} tokens`);

  await clearAll();
  const fresh = await complete(seq(2), prompt, 16);
  assert.equal(fresh.reused, 0);
  const donorFresh = await complete(seq(0), donorPrompt, 8);

  await clearAll();
  await complete(seq(0), donorPrompt, 8);
  const shared1 = await complete(seq(1), prompt, 16);
  assert.equal(shared1.reused, common, "seq 1 got the common prefix from seq 0");
  assert.deepEqual(shared1.tokens, fresh.tokens);
  // The donor's own KV is intact after the borrower trimmed and extended its copy.
  const donorAgain = await complete(seq(0), donorPrompt, 8);
  assert.equal(donorAgain.reused, donorPrompt.length - 1);
  assert.deepEqual(donorAgain.tokens, donorFresh.tokens);
});

test("multi-step decoding (lookahead 4) matches lookahead 1, and an early stop trims the KV decoded ahead", async () => {
  const prompt = rt.tokenize(MONTHS);
  await clearAll();
  rt.lookahead = 1;
  const reference = (await complete(seq(0), prompt, 16)).tokens;
  try {
    rt.lookahead = 4;
    await clearAll();
    assert.deepEqual((await complete(seq(0), prompt, 16)).tokens, reference);

    await clearAll();
    const first = (await complete(seq(0), prompt, 5)).tokens;
    // The 5th token came from a 4-token step: the KV of the 3 decoded after it must be gone.
    assert.deepEqual(seq(0).contextTokens(), [...prompt, ...first.slice(0, -1)]);
    assert.equal(rt.engine.seqPosMax(seq(0).id), prompt.length + first.length - 2);
    const rest = await take(seq(0), first.slice(-1), 11);
    assert.deepEqual([...first, ...rest], reference);
  } finally {
    rt.lookahead = 1;
  }
});

test("four sequences decoding together share scheduler steps", async () => {
  const prompt = rt.tokenize(COUNT);
  await clearAll();
  const before = rt.scheduler.stats.steps;
  const outputs = await Promise.all(rt.sequences.map(async (s) => (await complete(s, prompt, 16)).tokens));
  const steps = rt.scheduler.stats.steps - before;
  assert.ok(steps >= 16 && steps <= 20, `4 × 16 tokens took ${steps} steps (one per token would be 64)`);
  for (const out of outputs) assert.deepEqual(out, outputs[0]);
});

test("ten greedy sequences in one step are sampled on the engine's pool and each continues as it would alone", async () => {
  const wide = await NativeRuntime.load({ modelPath, threads: 2, contextSize: 512, parallel: 10 });
  try {
    const prompts = [MONTHS, COUNT, WEEKDAYS].map((p) => rt.tokenize(p));
    const reference = await alone(prompts, 12);
    const before = wide.scheduler.stats.steps;
    const outputs = await Promise.all(wide.sequences.map(async (s, i) => (await complete(s, prompts[i % 3]!, 12)).tokens));
    assert.equal(outputs.length, 10);
    for (const [i, out] of outputs.entries()) assert.deepEqual(out, reference[i % 3], `sequence ${i}`);
    const steps = wide.scheduler.stats.steps - before;
    assert.ok(steps <= 16, `10 × 12 tokens took ${steps} steps: the sequences did not share steps`);
  } finally {
    await wide[Symbol.asyncDispose]();
  }
});

test("greedy sampling on the device (llama.cpp's backend sampler) gives the same tokens; a sequence with a temperature still samples", async () => {
  const dev = await NativeRuntime.load({ modelPath, threads: THREADS, contextSize: 256, parallel: 4, deviceGreedy: true, pipelineDecode: true });
  try {
    assert.equal(dev.engine.info().deviceGreedy, true);
    const prompts = [MONTHS, COUNT, WEEKDAYS].map((p) => rt.tokenize(p));
    const reference = await alone(prompts, 10);
    const warm: Sampling = { temperature: 0.8, topK: 40, topP: 0.95 };
    const sampled: Token[] = [];
    const [outputs] = await Promise.all([
      Promise.all(prompts.map(async (p, i) => (await complete(dev.sequences[i]!, p, 10)).tokens)),
      (async () => {
        const s = dev.sequences[3]!;
        await s.evaluatePrefix(prompts[0]!.slice(0, -1));
        for await (const t of s.generate(prompts[0]!.slice(-1), warm)) if (sampled.push(t) >= 10) break;
      })(),
    ]);
    assert.deepEqual(outputs, reference);
    assert.equal(sampled.length, 10);
    for (const t of sampled) assert.ok(Number.isInteger(t) && t >= 0 && t < dev.engine.info().nVocab, `sampled token ${t}`);
    // Back to greedy on the sequence that sampled: it continues as the CPU argmax would.
    await dev.sequences[3]!.clear();
    assert.deepEqual((await complete(dev.sequences[3]!, prompts[1]!, 10)).tokens, reference[1]);
  } finally {
    await dev[Symbol.asyncDispose]();
  }
});

test("pipelined decoding (the next decode launched before tokens come back) gives the same tokens, and rolls back what nobody asked for", async () => {
  const piped = await NativeRuntime.load({ modelPath, threads: THREADS, contextSize: 256, parallel: 4, pipelineDecode: true });
  try {
    assert.equal(piped.engine.info().pipeline, true);
    assert.equal(rt.engine.info().pipeline, false, "off by default on CPU");
    const prompts = [MONTHS, COUNT, WEEKDAYS, MONTHS].map((p) => rt.tokenize(p));
    const lengths = [16, 5, 11, 8];
    const reference = await alone(prompts, lengths);

    // One sequence: every step after the first was speculated; an early stop leaves no speculated cell behind.
    const one = piped.sequences[0]!;
    const first = (await complete(one, prompts[1]!, 5)).tokens;
    assert.deepEqual(first, reference[1]);
    assert.equal(piped.engine.seqPosMax(0), prompts[1]!.length + first.length - 2);
    assert.deepEqual(one.contextTokens(), [...prompts[1]!, ...first.slice(0, -1)]);
    await one.clear();

    // Four sequences that stop at different lengths, one joining late: every mismatch rolls back.
    const outputs = await Promise.all(
      piped.sequences.map(async (s, i) => {
        if (i === 3) await new Promise((r) => setTimeout(r, 50));
        return (await complete(s, prompts[i]!, lengths[i]!)).tokens;
      }),
    );
    assert.deepEqual(outputs, reference);
    for (const [i, s] of piped.sequences.entries()) assert.equal(piped.engine.seqPosMax(s.id), prompts[i]!.length + lengths[i]! - 2);
    const { speculatedUsed, speculatedDropped } = piped.engine.info();
    assert.ok(speculatedUsed >= 10, `${speculatedUsed} speculated decodes used`);
    assert.ok(speculatedDropped >= 3, `${speculatedDropped} rolled back`);
  } finally {
    await piped[Symbol.asyncDispose]();
  }
});

test("a generation with a limit starts no decode past it (nothing to roll back) and gives the same tokens", async () => {
  const piped = await NativeRuntime.load({ modelPath, threads: THREADS, contextSize: 256, parallel: 2, pipelineDecode: true });
  try {
    const prompt = rt.tokenize(COUNT);
    const [reference] = await alone([prompt], 5);
    const s = piped.sequences[0]!;
    for (const limit of [1, 5]) {
      const dropped = piped.engine.info().speculatedDropped;
      await s.evaluatePrefix(prompt.slice(0, -1));
      const got: Token[] = [];
      for await (const t of s.generate(prompt.slice(-1), GREEDY, undefined, limit)) got.push(t);
      assert.deepEqual(got, reference!.slice(0, limit));
      assert.equal(piped.engine.info().speculatedDropped, dropped, `limit ${limit}: no decode was started past it`);
      assert.deepEqual(s.contextTokens(), [...prompt, ...got.slice(0, -1)]);
      await s.clear();
    }
  } finally {
    await piped[Symbol.asyncDispose]();
  }
});
