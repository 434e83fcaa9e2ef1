/**
 * `npm run bench:kv-reuse [-- --quick]`: TTFT of a question after a long context, when the
 * context's KV is loaded from the kvstore (per tier: memory, disk, S3 via moto) vs recomputed,
 * real default model, CPU. One pod with --kv-store and a kvstore, in-process: the first request
 * recomputes (a store miss) and writes the context back; then, per tier, the entry is placed in
 * that tier only, the pod's sequences are cleared (no local prefix reuse), and the same request
 * is timed again. TTFT is measured at the client on streamed responses.
 * Writes bench/results/kv-reuse.json; `ratio` = recompute / cached TTFT, memory tier, largest size.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { availableParallelism, cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { startS3Server } from "../scripts/s3/moto-server.ts";
import { kvBlockHashes } from "../engine/kvstore/block-keys.ts";
import { createKvStorePod, type KvStorePod } from "../engine/kvstore-pod.ts";
import { parseTierSpec } from "../engine/kvstore/tier-spec.ts";
import { ensureDefaultModel } from "../engine/model/fetch.ts";
import { listen, startPod, type RunningPod, streamTtftMs } from "../testing/engine.ts";
import { benchArgs } from "./cli.ts";

const quick = benchArgs({ options: { quick: { type: "boolean" } } }).values.quick === true;
const SIZES = quick ? [1024] : [1024, 4096, 8192];
const REPEATS = 3;
const BLOCK = 256;
const threads = Number(process.env.BENCH_THREADS ?? availableParallelism());
const QUESTION = "\n\nQuestion: what did the keeper see from the lighthouse? Answer:";
const FILLER =
  "The lighthouse stood on the rocks above the harbour, and every night its keeper climbed the stairs to light the lamp. Ships passed in the dark, sailors counted the flashes, and the town slept below. ";

const ttftMs = (url: string, prompt: string): Promise<number> => streamTtftMs(url, prompt, 4);

function contextOf(pod: RunningPod, tokens: number): string {
  let text = "";
  let i = 0;
  while (pod.pod.service.runtime.tokenize(text).length < tokens) text += `${i++}. ${FILLER}`;
  return text;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function clearSequences(pod: RunningPod): Promise<void> {
  for (const seq of pod.pod.service.runtime.sequences) await seq.clear();
}

async function storedKey(pod: RunningPod, store: KvStorePod, prompt: string): Promise<string> {
  const tokens = pod.pod.service.runtime.tokenize(prompt).slice(0, -1);
  const keys = kvBlockHashes(tokens, BLOCK, { model: pod.pod.kvCache!.opts.model, tenant: "bench" });
  const found = await store.store.longest(keys);
  if (found.index < 0) throw new Error("context was not written to the store");
  return keys[found.index]!;
}

interface SizeResult {
  contextTokens: number;
  storedTokens: number;
  entryBytes: number;
  recomputeTtftMs: number;
  cachedTtftMs: Record<string, number>;
  ratio: Record<string, number>;
}

async function measureSize(pod: RunningPod, store: KvStorePod, size: number): Promise<SizeResult> {
  const prompt = contextOf(pod, size) + QUESTION;
  await clearSequences(pod);
  const recomputeTtftMs = await ttftMs(pod.url, prompt);
  await pod.pod.kvCache!.settled();
  const key = await storedKey(pod, store, prompt);
  const entryBytes = (await store.store.get(key))!.value.length;
  const cachedTtftMs: Record<string, number> = {};
  for (const tier of store.store.tiers) {
    const runs: number[] = [];
    for (let r = 0; r < REPEATS; r++) {
      await store.store.placeIn(key, tier.name);
      await clearSequences(pod);
      runs.push(await ttftMs(pod.url, prompt));
    }
    cachedTtftMs[tier.name] = median(runs);
  }
  const ratio = Object.fromEntries(Object.entries(cachedTtftMs).map(([t, ms]) => [t, recomputeTtftMs / ms]));
  const storedTokens = Math.floor((pod.pod.service.runtime.tokenize(prompt).length - 1) / BLOCK) * BLOCK;
  return { contextTokens: size, storedTokens, entryBytes, recomputeTtftMs, cachedTtftMs, ratio };
}

async function main(): Promise<void> {
  const model = await ensureDefaultModel();
  await using s3 = await startS3Server();
  const dir = await mkdtemp(join(tmpdir(), "llmfleet-kv-bench-"));
  const tiers = [
    `name=ram,medium=memory,capacity=8Gi`,
    `name=ssd,medium=disk,capacity=64Gi,path=${dir}`,
    `name=s3,medium=objectStore,endpoint=${s3.endpoint},bucket=llmfleet-kv-bench`,
  ];
  await using store = await createKvStorePod({
    blockTokens: BLOCK,
    codec: process.env.BENCH_CODEC ?? "default",
    tenantSalt: "bench",
    tiers: tiers.map(parseTierSpec),
    env: s3.env,
  });
  await using storeHttp = await listen(store.app);
  const ctxSize = Math.max(...SIZES) + 256;
  await using pod = await startPod({ model, threads, ctxSize, parallel: 1, kvStore: storeHttp.url, kvStoreTimeoutMs: 30_000 });
  const results: SizeResult[] = [];
  for (const size of SIZES) {
    results.push(await measureSize(pod, store, size));
    process.stderr.write(`${JSON.stringify(results.at(-1))}\n`);
  }
  await rm(dir, { recursive: true, force: true });
  const largest = results.at(-1)!;
  const out = {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? "unknown", threads },
    model: "gemma-3-270m Q4_K_M",
    codec: process.env.BENCH_CODEC ?? "default",
    blockTokens: BLOCK,
    quick,
    ratio: largest.ratio.ram,
    ratioOf: `recompute / cached TTFT, memory tier, ${largest.contextTokens}-token context`,
    sizes: results,
  };
  await writeFile(new URL("./results/kv-reuse.json", import.meta.url), `${JSON.stringify(out, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
}

await main();
