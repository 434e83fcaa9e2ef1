/**
 * `npm run bench:kv-link [-- --quick] [--repeats N] [--sizes 8192] [--tiers memory] [--s3-server moto|seaweedfs] [--out FILE]`: what the KV
 * codec buys end to end. TTFT of a
 * ~64-token question after a cached context of 1K/4K/8K tokens (--quick: 1K/4K) loaded from the
 * KV store, per codec (compact against none), from the object-store tier (S3 = moto, or SeaweedFS
 * with --s3-server seaweedfs, behind a bandwidth-shaping proxy on loopback: 100 Mbit/s and
 * 1 Gbit/s; the proxy in its own process, as a link is no part of a pod's event loop) and from the
 * memory tier; the
 * real default model (Gemma 3 270M) on CPU.
 *
 * Per tier, both codecs side by side, their loads alternating run by run (so the other work on a
 * shared machine falls on both alike); per codec: the kvstore pod runs as its own process (engine/main.ts --role
 * kvstore, one tier only, so the memory tier never serves an S3 run); two engine pods in this
 * process, with --kv-store (native backend, so the compact decoder is the addon's; v2 blocks move
 * over the native TCP stream: `none`'s raw, compact's coded per block as compact2b and decoded as
 * they arrive). Pod A answers
 * context+question on a store miss (that TTFT is the recompute baseline) and writes the context
 * back, unshaped; pod B, its sequences cleared before each run (an empty KV), answers the same
 * prompt: it loads the context from the store, decodes it, imports it and prefills the rest. Every
 * timed load is checked to be a hit of the whole cached context. Medians of --repeats runs.
 * Decode GB/s: the engine's load-path decode of the 8K compact entry's stored blocks (StateJoiner,
 * CODED_BATCH per pass, the addon on every core, as BlockSink decodes them once arrived), F16 state
 * bytes out per second. Quality is not re-measured: the keys are copied from bench:kv-codec's
 * results (see `quality_source`).
 * Writes bench/results/kv-link.json (or --out) after every tier.
 */
import { readFile, writeFile } from "node:fs/promises";
import { availableParallelism, cpus, loadavg } from "node:os";
import { benchArgs, intList } from "./cli.ts";
import { s3ServerKind, startS3ServerOf } from "../scripts/s3/servers.ts";
import { kvBlockHashes, requestSalt } from "../engine/kvstore/block-keys.ts";
import { decodeManifest, isManifest, type KvManifest } from "../engine/kvstore/kv-blocks.ts";
import { joinCodedBlocks } from "./coded-blocks.ts";
import { kvBlockCodec } from "../engine/kvcodec/block-codec.ts";
import { kvStreamAddon } from "../engine/pd/kv-transport.ts";
import { readKvEntry } from "../engine/kvcodec/codec-offload.ts";
import { nativeKvCodecPath } from "../engine/kvcodec/native-codec.ts";
import { ensureDefaultModel } from "../engine/model/fetch.ts";
import { metricValue, startPod, streamTtftMs, type RunningPod } from "../testing/engine.ts";
import { mbitPerSecond } from "../testing/shaped-proxy.ts";
import { startShapedProxyProcess, type ShapedProxyProcess } from "../testing/shaped-proxy-process.ts";
import { linkCheck, startStoreProcess } from "./kv-link-procs.ts";

const { values: v } = benchArgs({
  options: { quick: { type: "boolean" }, repeats: { type: "string" }, sizes: { type: "string" }, tiers: { type: "string" }, "s3-server": { type: "string" }, out: { type: "string" } },
});
const SIZES = v.sizes ? intList("sizes", v.sizes) : v.quick ? [1024, 4096] : [1024, 4096, 8192];
const TIERS = (v.tiers ?? "memory,s3").split(",") as Tier[];
const REPEATS = Number(v.repeats ?? 5);
/** The S3-compatible server behind the object-store tier; moto (an emulator) by default. */
const S3_SERVER = s3ServerKind(v["s3-server"]);
const BLOCK = 256;
const QUESTION_TOKENS = 64;
const threads = Number(process.env.BENCH_THREADS ?? availableParallelism());
const OUT = v.out ?? new URL("./results/kv-link.json", import.meta.url);
const FILLER =
  "The lighthouse stood on the rocks above the harbour, and every night its keeper climbed the stairs to light the lamp. Ships passed in the dark, sailors counted the flashes, and the town slept below. ";
const QUESTION =
  "\n\nQuestion: reading the whole account above, from its first numbered line to its last, what did the keeper see from the lighthouse each night, and what did the town do";
/** The object store's links; "unshaped": the same proxy at loopback speed (what the S3 server and the store cost by themselves). */
const LINKS = { "100mbps": mbitPerSecond(100), "1gbps": mbitPerSecond(1000), unshaped: Infinity } as const;

type Tier = "memory" | "s3";
interface Run {
  tier: Tier;
  link: string;
  codec: string;
  contextTokens: number;
  promptTokens: number;
  loadedTokens: number;
  entryBytes: number;
  ttftMs: number[];
  medianTtftMs: number;
  /** Pod B's own load time (llmfleet_kv_store_load_seconds: lookup, transfer, decode, import), median. */
  medianLoadMs: number;
  /** Pod B's own TTFT (llmfleet_ttft_seconds: arrival to first token sampled, before any text is held back), median. */
  medianPodTtftMs: number;
  /** Pod B's state import (inside the load) and prefill of the rest of the prompt (after it), medians. */
  medianImportMs: number;
  medianPrefillMs: number;
  /** The greedy answer (4 tokens): a lossy load may change it, and with it when the first text event leaves. */
  answer: string;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const tokenize = (pod: RunningPod, text: string): number[] => pod.pod.service.runtime.tokenize(text) as number[];

/** Context text of just over `size` tokens (so its `size` tokens fill whole blocks) and the question after it. */
function promptOf(pod: RunningPod, size: number): { context: string; prompt: string } {
  let context = `Document ${size}.\n`;
  for (let i = 0; tokenize(pod, context).length < size - 60; i++) context += `${i}. ${FILLER}`;
  for (const word of FILLER.repeat(4).split(" ")) {
    if (tokenize(pod, context).length > size) break;
    context += `${word} `;
  }
  let question = QUESTION;
  const base = tokenize(pod, context).length;
  for (const word of " each night while the ships passed".repeat(8).split(" ").filter(Boolean)) {
    if (tokenize(pod, context + question).length - base >= QUESTION_TOKENS) break;
    question += ` ${word}`;
  }
  return { context, prompt: `${context}${question}? Answer:` };
}

async function clearSequences(pod: RunningPod): Promise<void> {
  for (const seq of pod.pod.service.runtime.sequences) await seq.clear();
}

/** A v2 entry's blocks as stored (plaintext here: the bench's pods seal nothing). */
interface StoredBlocks {
  manifest: KvManifest;
  meta: Buffer;
  kv: Buffer[];
}

/** The stored entry of the prompt's cached blocks: its bytes on the wire (a v2 entry: the sum of its blocks) and the entry (v1) or its blocks (v2). */
async function storedEntry(storeUrl: string, pod: RunningPod, prompt: string, tokens: number): Promise<{ bytes: number; entry?: Buffer; blocks?: StoredBlocks }> {
  const ids = tokenize(pod, prompt).slice(0, tokens);
  const key = kvBlockHashes(ids, BLOCK, requestSalt(pod.pod.kvCache!.opts.model, "", "")).at(-1)!;
  const get = async (path: string): Promise<Buffer> => {
    const res = await fetch(`${storeUrl}/v1/kv/${path}`);
    if (!res.ok) throw new Error(`the context was not stored (GET ${path.slice(0, 20)}: HTTP ${res.status})`);
    return Buffer.from(await res.arrayBuffer());
  };
  const buf = await get(key);
  if (!isManifest(buf)) return { bytes: buf.length, entry: buf };
  const manifest = decodeManifest(buf);
  const stored = await Promise.all(manifest.blocks.map((b) => get(`blocks/${b.key}`)));
  const meta = stored[manifest.blocks.findIndex((b) => b.kind === "meta")]!;
  return { bytes: manifest.blocks.reduce((n, b) => n + b.bytes, 0), blocks: { manifest, meta, kv: stored.filter((_, i) => manifest.blocks[i]!.kind === "kv") } };
}

/** F16 state bytes per second of the engine's load-path decode of a v1 entry (best of 5). */
async function decodeGBps(entry: Buffer): Promise<{ gbPerSecond: number; stateBytes: number }> {
  let best = Infinity;
  let stateBytes = 0;
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    const { state } = await readKvEntry(entry);
    best = Math.min(best, (performance.now() - t0) / 1000);
    stateBytes = state.length;
  }
  return { gbPerSecond: stateBytes / best / 1e9, stateBytes };
}

/**
 * The same for a v2 entry: its kv blocks decoded into the state CODED_BATCH per pass, as a load's
 * BlockSink decodes them once they have arrived (StateJoiner.placeCodedMany, the addon's decoder on
 * every core, into the addon's pool block as a load does), best of 10.
 */
async function decodeBlocksGBps(b: StoredBlocks): Promise<{ gbPerSecond: number; stateBytes: number; blockCodec: string }> {
  const codecName = b.manifest.blocks.find((x) => x.kind === "kv")!.codec;
  const codec = kvBlockCodec(codecName);
  if (!codec) throw new Error(`bench:kv-link: the store's blocks carry ${codecName}, which this engine does not decode`);
  const pool = await kvStreamAddon();
  let best = Infinity;
  for (let r = 0; r < 10; r++) {
    const t0 = performance.now();
    const state = joinCodedBlocks({ meta: b.meta, blocks: b.kv, blockTokens: b.manifest.blockTokens }, codec, pool?.kvAlloc?.bind(pool));
    best = Math.min(best, (performance.now() - t0) / 1000);
    pool?.kvRelease?.(state);
  }
  return { gbPerSecond: b.manifest.stateBytes / best / 1e9, stateBytes: b.manifest.stateBytes, blockCodec: codecName };
}

interface Ctx {
  model: string;
  proxy: ShapedProxyProcess;
  s3: { endpoint: string; env: Record<string, string> };
  out: Output;
}

interface Output {
  runs: Run[];
  recomputeTtftMs: Record<string, number[]>;
  decode: { gbPerSecond: number; stateBytes: number; entryBytes: number; contextTokens: number } | undefined;
  linkMBps: Record<string, number>;
}

/** Milliseconds to the first streamed data event, and the streamed text. */
async function streamed(url: string, prompt: string): Promise<{ ttftMs: number; text: string }> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt, max_tokens: 4, temperature: 0, stream: true }),
  });
  let ttftMs = NaN;
  let body = "";
  const decoder = new TextDecoder();
  for await (const chunk of res.body!) {
    const s = decoder.decode(chunk as Uint8Array, { stream: true });
    if (Number.isNaN(ttftMs) && s.includes("data: {")) ttftMs = performance.now() - t0;
    body += s;
  }
  const texts = body.split("\n\n").filter((e) => e.startsWith("data: {")).map((e) => (JSON.parse(e.slice(6)) as { choices: { text: string }[] }).choices[0]?.text ?? "");
  return { ttftMs, text: texts.join("") };
}

/** Times pod B's sequence calls (the model's own work inside a load and after it), last call each. */
function timeSequenceCalls(pod: RunningPod): Record<"importState" | "evaluatePrefix", number> {
  const last = { importState: 0, evaluatePrefix: 0 };
  for (const seq of pod.pod.service.runtime.sequences) {
    for (const name of ["importState", "evaluatePrefix"] as const) {
      const call = (seq[name] as (...args: unknown[]) => Promise<unknown>).bind(seq);
      (seq as unknown as Record<string, unknown>)[name] = async (...args: unknown[]): Promise<unknown> => {
        const t0 = performance.now();
        const out = await call(...args);
        last[name] = performance.now() - t0;
        return out;
      };
    }
  }
  return last;
}

const sumMs = async (pod: RunningPod, name: string): Promise<number> => (await metricValue(pod.url, name)) * 1000;

/** One load by pod B: client TTFT, the pod's own TTFT (first token sampled) and load time, and the answer. */
async function timedLoad(pod: RunningPod, prompt: string, loaded: number, calls: Record<"importState" | "evaluatePrefix", number>): Promise<Sample> {
  await clearSequences(pod);
  const reusedBefore = await metricValue(pod.url, "llmfleet_kv_store_reused_tokens_total");
  const loadBefore = await sumMs(pod, "llmfleet_kv_store_load_seconds_sum");
  const podTtftBefore = await sumMs(pod, "llmfleet_ttft_seconds_sum");
  const { ttftMs, text } = await streamed(pod.url, prompt);
  const reused = (await metricValue(pod.url, "llmfleet_kv_store_reused_tokens_total")) - reusedBefore;
  if (reused !== loaded) throw new Error(`pod B loaded ${reused} tokens, not the ${loaded} cached (a miss or a recompute is not a load)`);
  const loadMs = (await sumMs(pod, "llmfleet_kv_store_load_seconds_sum")) - loadBefore;
  const podTtftMs = (await sumMs(pod, "llmfleet_ttft_seconds_sum")) - podTtftBefore;
  return { ttftMs, loadMs, podTtftMs, importMs: calls.importState, prefillMs: calls.evaluatePrefix, text };
}

interface Sample {
  ttftMs: number;
  loadMs: number;
  podTtftMs: number;
  importMs: number;
  prefillMs: number;
  text: string;
}

/** One codec's side of a tier: its kvstore process, pod A (recomputes, writes back) and pod B (loads). */
interface Side extends AsyncDisposable {
  codec: string;
  storeUrl: string;
  a: RunningPod;
  b: RunningPod;
  calls: Record<"importState" | "evaluatePrefix", number>;
}

async function startSide(ctx: Ctx, tier: Tier, codec: string): Promise<Side> {
  const spec = tier === "memory" ? "name=ram,medium=memory,capacity=8Gi" : `name=s3,medium=objectStore,endpoint=http://127.0.0.1:${ctx.proxy.port},bucket=llmfleet-kv-link-${codec}`;
  const store = await startStoreProcess(codec, [spec], ctx.s3.env);
  const podOpts = { model: ctx.model, threads, ctxSize: Math.max(...SIZES) + 512, parallel: 1, kvStore: store.url, kvStoreTimeoutMs: 120_000 };
  const a = await startPod(podOpts);
  const b = await startPod(podOpts);
  await streamTtftMs(b.url, "Warm up.", 2);
  return {
    ...{ codec, storeUrl: store.url, a, b, calls: timeSequenceCalls(b) },
    async [Symbol.asyncDispose](): Promise<void> {
      await b[Symbol.asyncDispose]();
      await a[Symbol.asyncDispose]();
      await store[Symbol.asyncDispose]();
    },
  };
}

/** Pod A recomputes the prompt (a store miss: the recompute baseline) and writes the context back, unshaped; the stored entry's size. */
async function prepare(ctx: Ctx, tier: Tier, side: Side, size: number): Promise<{ prompt: string; promptTokens: number; loaded: number; bytes: number }> {
  const { prompt } = promptOf(side.a, size);
  const promptTokens = tokenize(side.a, prompt).length;
  const loaded = Math.floor((promptTokens - 1) / BLOCK) * BLOCK;
  await ctx.proxy.setRate(Infinity);
  await clearSequences(side.a);
  (ctx.out.recomputeTtftMs[size] ??= []).push(await streamTtftMs(side.a.url, prompt, 4));
  await side.a.pod.kvCache!.settled();
  const { bytes, entry, blocks } = await storedEntry(side.storeUrl, side.b, prompt, loaded);
  if (side.codec !== "none" && size === Math.max(...SIZES) && (!ctx.out.decode || tier === "memory")) {
    const decode = entry ? await decodeGBps(entry) : await decodeBlocksGBps(blocks!);
    ctx.out.decode = { ...decode, entryBytes: bytes, contextTokens: loaded };
  }
  return { prompt, promptTokens, loaded, bytes };
}

function summarise(base: Omit<Run, "ttftMs" | "medianTtftMs" | "medianLoadMs" | "medianPodTtftMs" | "medianImportMs" | "medianPrefillMs" | "answer">, runs: Sample[]): Run {
  const ttftMs = runs.map((x) => x.ttftMs);
  const med = (k: "loadMs" | "podTtftMs" | "importMs" | "prefillMs"): number => median(runs.map((x) => x[k]));
  return { ...base, ttftMs, medianTtftMs: median(ttftMs), medianLoadMs: med("loadMs"), medianPodTtftMs: med("podTtftMs"), medianImportMs: med("importMs"), medianPrefillMs: med("prefillMs"), answer: runs[0]!.text };
}

/**
 * One tier, both codecs side by side: per size and link, the loads of none and compact alternate
 * run by run, so the other work on a shared machine falls on both alike.
 */
async function measureTier(ctx: Ctx, tier: Tier): Promise<void> {
  await ctx.proxy.setRate(Infinity);
  await using none = await startSide(ctx, tier, "none");
  await using compact = await startSide(ctx, tier, "compact");
  for (const size of SIZES) {
    const prepared = [await prepare(ctx, tier, none, size), await prepare(ctx, tier, compact, size)] as const;
    for (const [link, rate] of tier === "memory" ? [["memory", Infinity] as const] : Object.entries(LINKS)) {
      await ctx.proxy.setRate(rate);
      const samples: [Sample[], Sample[]] = [[], []];
      for (let r = 0; r < REPEATS * 2; r++) {
        const i = r % 2;
        const side = i === 0 ? none : compact;
        samples[i]!.push(await timedLoad(side.b, prepared[i]!.prompt, prepared[i]!.loaded, side.calls));
      }
      for (const [i, side] of [none, compact].entries()) {
        const { promptTokens, loaded, bytes } = prepared[i]!;
        const run = summarise({ tier, link, codec: side.codec, contextTokens: size, promptTokens, loadedTokens: loaded, entryBytes: bytes }, samples[i]!);
        ctx.out.runs.push(run);
        process.stderr.write(`kv-link: ${JSON.stringify(run)}\n`);
      }
    }
  }
}

const find = (out: Output, link: string, codec: string, size: number): Run | undefined =>
  out.runs.find((r) => r.link === link && r.codec === codec && r.contextTokens === size);

function ratio(out: Output, link: string, size: number): number | null {
  const none = find(out, link, "none", size);
  const compact = find(out, link, "compact", size);
  return none && compact ? none.medianTtftMs / compact.medianTtftMs : null;
}

interface CodecResult {
  date: string;
  perturbation_floor: { greedy_agreement: number; logit_kl: number };
  codecs: Record<string, { greedy_agreement: number; logit_kl: number }>;
}

/**
 * The quality keys, from bench:kv-codec's results (measured there; not re-run here): a `compact`
 * store's pods write v2 entries, whose blocks are compact2b, which decodes to the same state as
 * compact1b (another rANS stream of the same values), measured as `compact1b@0.2s` (its scale and the
 * span rule) in kv-codec-block-span*.json.
 */
async function quality(): Promise<Record<string, unknown>> {
  const read = async (f: string): Promise<CodecResult> => JSON.parse(await readFile(new URL(`./results/${f}`, import.meta.url), "utf8")) as CodecResult;
  const f16 = await read("kv-codec-block-span.json");
  const f32 = await read("kv-codec-block-span-f32.json");
  const row = "compact1b@0.2s";
  return {
    quality_source: `copied from bench/results/kv-codec-block-span.json (${f16.date}) and kv-codec-block-span-f32.json (${f32.date}), codecs["${row}"] (compact1b: the values compact2b decodes to, byte for byte) against perturbation_floor; not re-measured by this bench`,
    agreement: f16.codecs[row]!.greedy_agreement,
    agreement_floor: f16.perturbation_floor.greedy_agreement,
    kl: f16.codecs[row]!.logit_kl,
    kl_floor: f16.perturbation_floor.logit_kl,
    agreement_f32: f32.codecs[row]!.greedy_agreement,
    agreement_f32_floor: f32.perturbation_floor.greedy_agreement,
  };
}

function sizeRatio(out: Output, size: number): number | null {
  const none = out.runs.find((r) => r.codec === "none" && r.contextTokens === size);
  const compact = out.runs.find((r) => r.codec === "compact" && r.contextTokens === size);
  return none && compact ? compact.entryBytes / none.entryBytes : null;
}

async function write(out: Output, complete: boolean): Promise<void> {
  const largest = Math.max(...SIZES);
  const k = largest === 8192 ? "8k" : `${largest / 1024}k`;
  const summary = {
    bench: "kv-link",
    date: new Date().toISOString(),
    complete,
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? "unknown", threads, loadavg: loadavg().map((x) => Math.round(x * 100) / 100) },
    model: "gemma-3-270m Q4_K_M",
    s3Server: S3_SERVER,
    repeats: REPEATS,
    [`ttft_ratio_100mbps_${k}`]: ratio(out, "100mbps", largest),
    [`ttft_ratio_1gbps_${k}`]: ratio(out, "1gbps", largest),
    [`ttft_ratio_memory_${k}`]: ratio(out, "memory", largest),
    ratioOf: `none / compact median TTFT, ${largest}-token cached context`,
    decode_gb_s: out.decode?.gbPerSecond ?? null,
    decodeOf:
      "the engine's load-path decode of the largest compact entry, F16 state GB/s: a v2 entry's stored kv blocks decoded CODED_BATCH per pass into the addon's pool block as BlockSink does once they arrived (native addon, every core); a v1 entry by readKvEntry on its codec worker",
    native_decoder: nativeKvCodecPath() !== undefined,
    size_ratio_vs_f16: sizeRatio(out, largest),
    size_ratio_of: "compact entry bytes / none entry bytes (F16 state: v2 blocks and meta block), the largest context, this run",
    ...(await quality()),
    recomputeTtftMs: Object.fromEntries(Object.entries(out.recomputeTtftMs).map(([s, xs]) => [s, { median: median(xs), runs: xs }])),
    decode: out.decode ?? null,
    decode_gb_s_kv_decode: "bench:kv-decode (bench/results/kv-decode.json) times the same per-block decode on a state of docs/, with compact1b beside it",
    link_mb_s: out.linkMBps,
    link_mb_s_of: `one 16 MB S3 GET: straight from ${S3_SERVER}, and through the shaping proxy at each rate`,
    runs: out.runs,
  };
  await writeFile(OUT, `${JSON.stringify(summary, null, 2)}\n`);
}

async function main(): Promise<void> {
  const model = await ensureDefaultModel();
  await using s3 = await startS3ServerOf(S3_SERVER);
  await using proxy = await startShapedProxyProcess("127.0.0.1", Number(new URL(s3.endpoint).port), Infinity);
  const out: Output = { runs: [], recomputeTtftMs: {}, decode: undefined, linkMBps: await linkCheck(s3, proxy, LINKS, S3_SERVER) };
  const ctx: Ctx = { model, proxy, s3: { endpoint: s3.endpoint, env: s3.env }, out };
  for (const tier of TIERS) {
    await measureTier(ctx, tier);
    await write(out, false);
  }
  await write(out, true);
  process.stdout.write(await readFile(OUT, "utf8"));
}

await main();
