/**
 * `npm run bench:kv-mooncake [-- --quick]`: a scaled-down replay of the Mooncake trace
 * (/work/shared/traces/mooncake_synthetic.jsonl, FAST'25; its hash_ids name 512-token blocks)
 * against the real engine (default model, CPU), once with a KV store and once without.
 * Scaling, so that two CPU cores can run it in minutes:
 * - sessions: only requests whose first hash_id is a multiple of SAMPLE_EVERY (sampling whole
 *   prefix trees keeps the trace's reuse structure; sampling requests would destroy it);
 * - tokens: each 512-token block becomes BLOCK_TOKENS tokens of deterministic text made from its
 *   hash_id (shared ids share text, so shared prefixes really are shared), at most MAX_BLOCKS
 *   blocks per prompt; the store's block is one trace block;
 * - time: requests are sent one at a time in trace order (closed loop), and a request's
 *   write-back finishes before the next one starts (trace gaps are seconds; a write is less).
 * Each prompt gets a request-specific last line, as real requests differ after the shared part.
 * Block hit rate = prompt tokens loaded from the store / prompt tokens (the pod's store counter);
 * prefix reuse rate = prompt tokens not recomputed for any reason (store or the pod's own
 * sequence) / prompt tokens. The trace's ideal (every earlier block cached) is alongside.
 * Writes bench/results/kv-mooncake.json (BENCH_OUT: another file).
 * BENCH_CODEC names the store's codec (default: the store's default); BENCH_CAPACITY_BYTES fixes
 * the memory tier's capacity (default 8 GiB, above the working set): below the working set, a
 * smaller coding keeps more of it (the codec issue's capacity question).
 */
import { readFile, writeFile } from "node:fs/promises";
import { availableParallelism, cpus } from "node:os";
import { createKvStorePod } from "../engine/kvstore-pod.ts";
import { DEFAULT_CODEC } from "../engine/kvcodec/codec.ts";
import { ensureDefaultModel } from "../engine/model/fetch.ts";
import { listen, metricValue, startPod, type RunningPod, streamTtftMs } from "../testing/engine.ts";
import { fileURLToPath } from "node:url";
import { benchArgs } from "./cli.ts";

const quick = benchArgs({ options: { quick: { type: "boolean" } } }).values.quick === true;
/** The shared Mooncake trace, beside the repository (../shared/traces), unless MOONCAKE_TRACE names another. */
const TRACE = process.env.MOONCAKE_TRACE ?? fileURLToPath(new URL("../../shared/traces/mooncake_synthetic.jsonl", import.meta.url));
const SAMPLE_EVERY = quick ? 100 : 60;
const TRACE_BLOCK = 512;
const BLOCK_TOKENS = 32;
const MAX_BLOCKS = 48;
const threads = Number(process.env.BENCH_THREADS ?? availableParallelism());
const CAPACITY_BYTES = Number(process.env.BENCH_CAPACITY_BYTES ?? 8 * 2 ** 30);
const WORDS = "harbour lamp keeper stone ledger tide signal north rope storm lantern chart beacon shore anchor gull cliff wave salt mast".split(" ");

interface TraceRow {
  timestamp: number;
  input_length: number;
  output_length: number;
  hash_ids: number[];
}

/** A deterministic pseudo-random word stream per hash_id (xorshift32). */
function blockWords(id: number, count: number): string[] {
  let s = (id * 2654435761) >>> 0 || 1;
  const words: string[] = [];
  for (let i = 0; i < count; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    words.push(WORDS[s % WORDS.length]!);
  }
  return words;
}

/** Text of one block: exactly BLOCK_TOKENS tokens on its own, starting with a newline and its id. */
function blockText(pod: RunningPod, id: number): string {
  const words = blockWords(id, BLOCK_TOKENS * 2);
  let n = BLOCK_TOKENS;
  let text = "";
  for (; n > 0; n--) {
    text = `\n${id}: ${words.slice(0, n).join(" ")}.`;
    if (pod.pod.service.runtime.tokenize(text).length <= BLOCK_TOKENS) break;
  }
  return text;
}

interface Sample {
  prompt: string;
  blocks: number;
  traceInput: number;
}

function samples(pod: RunningPod, rows: TraceRow[]): Sample[] {
  const cache = new Map<number, string>();
  const text = (id: number): string => cache.get(id) ?? cache.set(id, blockText(pod, id)).get(id)!;
  return rows.map((r, i) => {
    const ids = r.hash_ids.slice(0, MAX_BLOCKS);
    return { prompt: `${ids.map(text).join("")}\nRequest ${i}: summarise the log above.`, blocks: ids.length, traceInput: r.input_length };
  });
}

const ttftMs = (url: string, prompt: string): Promise<number> => streamTtftMs(url, prompt, 2);

const percentile = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;

interface RequestRecord {
  promptTokens: number;
  ttftMs: number;
  storeTokens: number;
  reusedTokens: number;
}

const reusedMetrics = async (pod: RunningPod): Promise<[number, number]> => [
  pod.pod.kvCache ? await metricValue(pod.url, "llmfleet_kv_store_reused_tokens_total") : 0,
  await metricValue(pod.url, "llmfleet_prefix_hit_tokens_total"),
];

async function replay(pod: RunningPod, work: Sample[]): Promise<RequestRecord[]> {
  const records: RequestRecord[] = [];
  let [store0, reused0] = await reusedMetrics(pod);
  for (const s of work) {
    const promptTokens = pod.pod.service.runtime.tokenize(s.prompt).length;
    const ttft = await ttftMs(pod.url, s.prompt);
    await pod.pod.kvCache?.settled();
    const [store, reused] = await reusedMetrics(pod);
    records.push({ promptTokens, ttftMs: ttft, storeTokens: store - (store0 || 0), reusedTokens: reused - (reused0 || 0) });
    [store0, reused0] = [store, reused];
  }
  return records;
}

function summary(r: RequestRecord[]): Record<string, number> {
  const sum = (f: (x: RequestRecord) => number): number => r.reduce((a, x) => a + f(x), 0);
  const ttft = r.map((x) => x.ttftMs);
  return {
    ttft_p50_ms: percentile(ttft, 0.5),
    ttft_p90_ms: percentile(ttft, 0.9),
    ttft_mean_ms: sum((x) => x.ttftMs) / r.length,
    block_hit_rate: sum((x) => x.storeTokens) / sum((x) => x.promptTokens),
    prefix_reuse_rate: sum((x) => x.reusedTokens) / sum((x) => x.promptTokens),
  };
}

/** The trace's own prefix reuse over the sampled requests (an unbounded cache, whole blocks). */
function idealHitRate(rows: TraceRow[]): number {
  const seen = new Set<number>();
  let hit = 0;
  let total = 0;
  for (const r of rows) {
    const ids = r.hash_ids.slice(0, MAX_BLOCKS);
    let n = 0;
    while (n < ids.length && seen.has(ids[n]!)) n++;
    hit += n;
    total += ids.length;
    ids.forEach((id) => seen.add(id));
  }
  return hit / total;
}

async function main(): Promise<void> {
  const all = (await readFile(TRACE, "utf8"))
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as TraceRow);
  const rows = all.filter((r) => r.hash_ids.length > 0 && r.hash_ids[0]! % SAMPLE_EVERY === 0);
  const model = await ensureDefaultModel();
  const ctxSize = (MAX_BLOCKS + 2) * BLOCK_TOKENS + 64;
  await using store = await createKvStorePod({
    blockTokens: BLOCK_TOKENS,
    codec: process.env.BENCH_CODEC ?? "default",
    tenantSalt: "bench",
    tiers: [{ name: "ram", medium: "memory", capacityBytes: CAPACITY_BYTES, ttlMs: undefined }],
  });
  await using storeHttp = await listen(store.app);
  let without: RequestRecord[];
  let work: Sample[];
  {
    await using pod = await startPod({ model, threads, ctxSize, parallel: 1 });
    work = samples(pod, rows);
    without = await replay(pod, work);
  }
  await using pod = await startPod({ model, threads, ctxSize, parallel: 1, kvStore: storeHttp.url, kvStoreTimeoutMs: 30_000 });
  const withStore = await replay(pod, work);
  const storeMetrics = await (await fetch(`${storeHttp.url}/metrics`)).text();
  const storeFigure = (name: string): number => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(storeMetrics)?.[1] ?? NaN);
  const a = summary(without);
  const b = summary(withStore);
  const out = {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? "unknown", threads },
    model: "gemma-3-270m Q4_K_M",
    quick,
    codec: process.env.BENCH_CODEC ?? `default (${DEFAULT_CODEC})`,
    capacity_bytes: CAPACITY_BYTES,
    store_bytes_held: storeFigure("llmfleet_kv_bytes"),
    store_evictions: storeFigure("llmfleet_kv_evictions_total"),
    scaling: {
      trace: TRACE.split("/").pop(),
      traceRequests: all.length,
      sessionsSampled: `first hash_id % ${SAMPLE_EVERY} == 0`,
      requests: rows.length,
      tokensPerTraceBlock: BLOCK_TOKENS,
      tokenScale: BLOCK_TOKENS / TRACE_BLOCK,
      maxBlocksPerPrompt: MAX_BLOCKS,
      arrival: "closed loop, trace order, one request at a time",
      meanPromptTokens: withStore.reduce((a, x) => a + x.promptTokens, 0) / rows.length,
    },
    trace_ideal_block_hit_rate: idealHitRate(rows),
    without_store: a,
    with_store: b,
    ttft_p50_ratio: a.ttft_p50_ms! / b.ttft_p50_ms!,
    ttft_p90_ratio: a.ttft_p90_ms! / b.ttft_p90_ms!,
    ratioOf: "TTFT without the store / with it (same requests, same engine)",
    requests: { without_store: without, with_store: withStore },
  };
  await writeFile(process.env.BENCH_OUT ?? new URL("./results/kv-mooncake.json", import.meta.url), `${JSON.stringify(out, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
}

await main();
