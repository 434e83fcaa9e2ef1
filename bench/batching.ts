/**
 * `npm run bench:batching`: throughput of one aggregated pod (real default model, loopback)
 * at 1/4/8/16 concurrent requests, as a ratio to one request at a time. Writes
 * bench/results/batching.json.
 */
import { writeFile } from "node:fs/promises";
import { availableParallelism, cpus } from "node:os";
import { ensureDefaultModel } from "../engine/model/fetch.ts";
import { startPod } from "../testing/engine.ts";
import { noOptions } from "./cli.ts";

noOptions();

const MAX_TOKENS = 32;
const LEVELS = [1, 4, 8, 16];

async function one(url: string, i: number): Promise<number> {
  const res = await fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    // distinct prompts: no prefix reuse between requests
    body: JSON.stringify({ prompt: `Request ${i}: write a short story about a lighthouse keeper number ${i}.`, max_tokens: MAX_TOKENS, temperature: 0 }),
  });
  const body = (await res.json()) as { usage: { completion_tokens: number } };
  return body.usage.completion_tokens;
}

async function level(url: string, concurrency: number): Promise<{ concurrency: number; tokens: number; seconds: number; tokensPerSecond: number }> {
  const t0 = performance.now();
  const counts = await Promise.all(Array.from({ length: concurrency }, (_, i) => one(url, concurrency * 100 + i)));
  const seconds = (performance.now() - t0) / 1000;
  const tokens = counts.reduce((a, b) => a + b, 0);
  return { concurrency, tokens, seconds, tokensPerSecond: tokens / seconds };
}

const threads = Number(process.env.BENCH_THREADS ?? availableParallelism());
const model = await ensureDefaultModel();
const pod = await startPod({ model, parallel: 16, ctxSize: 256, threads, maxQueue: 64 });
try {
  await level(pod.url, 2); // warm-up
  const results: Awaited<ReturnType<typeof level>>[] = [];
  for (const c of LEVELS) {
    const r = await level(pod.url, c);
    results.push(r);
    const ratio = r.tokensPerSecond / results[0]!.tokensPerSecond;
    console.log(`concurrency ${String(c).padStart(2)}: ${r.tokensPerSecond.toFixed(1)} tok/s (${ratio.toFixed(2)}x one request)`);
  }
  const out = {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model, threads },
    model,
    maxTokens: MAX_TOKENS,
    results: results.map((r) => ({ ...r, ratioToOne: r.tokensPerSecond / results[0]!.tokensPerSecond })),
  };
  await writeFile(new URL("./results/batching.json", import.meta.url), `${JSON.stringify(out, null, 2)}\n`);
} finally {
  await pod[Symbol.asyncDispose]();
}
