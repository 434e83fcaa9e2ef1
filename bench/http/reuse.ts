/**
 * bench:http's reuse section (issue 19): learn once, as deployed. Engines and a kvstore pod, each
 * the engine's own program in its own process, requests over HTTP, non-streamed, max_tokens 1,
 * usage read from the answer (prompt_tokens_details.cached_tokens says what was reused). For each
 * context length (synthetic `w<N>` words: one token each on the synthetic models):
 *
 *   recompute        a new context on an engine without a store
 *   inpod            the same context + a question on that engine (its own KV in GPU memory)
 *   miss_store       a new context on engine A configured with the store (lookup misses)
 *   during_writeback a new context sent to A right after A answered one (its write-back in flight)
 *   store            the context of A's request + a question on engine B (loaded from the store)
 *
 * then a mix of 100 requests over A and B with random reuse (new contexts, repeats, shared
 * prefixes), each compared with recomputing a context of its length. Headline keys:
 * reuse_inpod_ratio_8k, reuse_store_ratio_8k (recompute / reuse), store_gb_s (stored bytes per
 * entry over B's load time), store_miss_overhead_ms, writeback_delay_ms (during_writeback - miss_store),
 * worst_vs_recompute_mix (the mix's largest latency / recompute latency of its length).
 */
import { mkdir } from "node:fs/promises";
import { prng } from "../../engine/model/synthetic-gguf.ts";
import { benchPromptOfTokens, benchWordsPerToken } from "./load-client.ts";
import { startServer, type RunningServer } from "./servers.ts";
import { samples } from "../../testing/scale-fleet.ts";

export interface ReuseBenchOptions {
  engine: string[];
  model: string;
  /** Engine flags of the model pods (device, sizing), without --role/--port. */
  podArgs: string[];
  contexts: number[];
  /** Requests per row, the median is kept. */
  repeats: number;
  mixRequests: number;
  codec: string;
  /** The kvstore's --kv-streams (blocks a push sends at once); default its own. */
  storeStreams?: number;
  /** true: pods A and B's write-backs wait while they load (LLMFLEET_KV_WRITE_YIELD=1; off by default). */
  writeYield?: boolean;
  /** false: the store does not hold uploads back while it pushes a load (LLMFLEET_KV_STORE_HOLD_UPLOADS=0, the baseline). */
  storeHold?: boolean;
  /** Pods A and B's --kv-host-warm (bytes, or auto: their default); "0" is the baseline without a warmed host pool. */
  hostWarm?: string;
  /** false: pods A and B assemble a load's whole state and import it after the last block (LLMFLEET_KV_LOAD_PARTS=0, the baseline of importing each block as it arrives). */
  loadParts?: boolean;
  logDir: string;
}

interface Answer {
  ms: number;
  promptTokens: number;
  cachedTokens: number;
}

// Below Linux's ephemeral range (32768+), where outgoing connections would collide.
const port = (): number => 20_000 + Math.floor(Math.random() * 12_000);
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const QUESTION = " question: which w7 follows?";

async function ask(url: string, prompt: string): Promise<Answer> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt, max_tokens: 1, temperature: 0 }),
  });
  const body = (await res.json()) as { usage?: { prompt_tokens: number; prompt_tokens_details?: { cached_tokens?: number } }; error?: unknown };
  const ms = performance.now() - t0;
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${JSON.stringify(body.error)}`);
  return { ms, promptTokens: body.usage?.prompt_tokens ?? 0, cachedTokens: body.usage?.prompt_tokens_details?.cached_tokens ?? 0 };
}

async function metricSum(url: string, name: string): Promise<number> {
  return metricOf(await (await fetch(`${url}/metrics`)).text(), name);
}

function metricOf(text: string, name: string): number {
  return text
    .split("\n")
    // `name` may end inside the labels (`metric{op="loaded"`): the next character closes it.
    .filter((l) => l.startsWith(name) && "{ ,}".includes(l[name.length] ?? "x"))
    .reduce((s, l) => s + Number(l.split(" ").pop()), 0);
}

/**
 * The pod's KV store loads (default) or write-backs by outcome: why a load did or did not happen
 * (hit, miss, recompute_faster, corrupt, ...), whether a write-back stored (stored, error, skipped_busy, ...).
 */
async function outcomes(url: string, metric = "llmfleet_kv_store_loads_total"): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const [labels, value] of samples(await (await fetch(`${url}/metrics`)).text(), metric)) {
    if (labels.outcome) out[labels.outcome] = (out[labels.outcome] ?? 0) + value;
  }
  return out;
}

const outcomeDelta = (after: Record<string, number>, before: Record<string, number>): Record<string, number> =>
  Object.fromEntries(Object.entries(after).flatMap(([k, v]) => (v - (before[k] ?? 0) > 0 ? [[k, v - (before[k] ?? 0)]] : [])));

async function start(o: ReuseBenchOptions, name: string, args: string[], env?: NodeJS.ProcessEnv): Promise<RunningServer> {
  const p = port();
  const [cmd, ...pre] = o.engine as [string, ...string[]];
  return startServer(name, cmd, [...pre, ...args, "--host", "127.0.0.1", "--port", String(p)], { port: p, readyPath: "/ready", logFile: `${o.logDir}/reuse-${name}.log`, ...(env ? { env } : {}) });
}

/** A pod's KV store write-backs, counted as each ends (stored, error, skipped_busy, ...). */
const WRITES = "llmfleet_kv_store_writes_total";

/** Bytes of v2 blocks a pod loaded (every path): metricSum matches the labels' opening. */
const LOADED_BYTES = 'llmfleet_kv_store_block_bytes_total{op="loaded"';

/** The longest event-loop stall since the pod's metrics were last read (prom-client's default metrics). */
const LOOP_STALL = "llmfleet_nodejs_eventloop_lag_max_seconds";

let seed = 1;
let wordsPerToken = 1;
const context = (tokens: number): string => benchPromptOfTokens(7_000_000 + seed++, tokens, wordsPerToken);

/**
 * Settles a pod's write-backs: at least `atLeast` of them have ended (a write is counted when it
 * ends, stored or not; a 1 GB state takes seconds to export and upload), then their count stops
 * moving. Gives up after 60 s.
 */
async function writesSettled(url: string, atLeast = 0): Promise<number> {
  let last = -1;
  let stallMs = 0; // each scrape ends the pod's event-loop lag window: the longest stall is kept here
  for (let i = 0; i < 300; i++) {
    const text = await (await fetch(`${url}/metrics`)).text();
    stallMs = Math.max(stallMs, metricOf(text, LOOP_STALL) * 1000);
    const now = metricOf(text, WRITES);
    if (now === last && now >= atLeast) break;
    last = now;
    await new Promise((r) => setTimeout(r, 200));
  }
  return stallMs;
}

/** Kept per repeat as well as summed: a load's stages and the host-pool blocks page-locked anew. */
const PER_REPEAT = ["load_lookup_s", "load_fetch_s", "load_place_s", "load_import_parts_s", "load_import_s", "phase_tokenize_s", "phase_lease_s", "engine_step_s", "pool_misses", "write_export_s"];

/** Stage seconds, host-pool misses and the longest event-loop stall of a pod, summed over snapshots. */
class PodDiagnostics {
  private readonly sums: Record<string, Record<string, number>> = {};
  /** The longest stall of each add() (each repeat), by pod. */
  private readonly stalls: Record<string, number[]> = {};
  /** Of each add() (each repeat), by pod: the keys in PER_REPEAT (a first, cold repeat is not averaged away). */
  private readonly repeats: Record<string, Record<string, number[]>> = {};

  async snapshot(url: string): Promise<Record<string, number>> {
    const text = await (await fetch(`${url}/metrics`)).text();
    const out: Record<string, number> = {};
    for (const line of text.split("\n")) {
      const stage = /^llmfleet_kv_store_stage_seconds_total\{(?=.*op="(\w+)")(?=.*stage="(\w+)").*\} (\S+)$/.exec(line);
      if (stage) out[`${stage[1]}_${stage[2]}_s`] = Number(stage[3]);
      // The engine's registry adds its role label to every series.
      const phase = /^llmfleet_request_phase_seconds_sum\{(?=.*phase="(\w+)").*\} (\S+)$/.exec(line);
      if (phase) out[`phase_${phase[1]}_s`] = Number(phase[2]);
    }
    out.pool_misses = metricOf(text, "llmfleet_kv_host_pool_misses_total");
    // Of a write-back's export: waiting for the device's queued work, then the copy out of it; and
    // the engine's own step time (a miss's prefill, the request during a write-back's).
    out.export_wait_s = metricOf(text, "llmfleet_engine_native_export_wait_seconds_total");
    out.export_copy_s = metricOf(text, "llmfleet_engine_native_export_copy_seconds_total");
    out.engine_step_s = metricOf(text, "llmfleet_engine_native_step_seconds_total");
    out.ttft_s = metricOf(text, "llmfleet_ttft_seconds_sum");
    out.loop_stall_max_ms = metricOf(text, LOOP_STALL) * 1000;
    return out;
  }

  /** `stallMs`: the longest event-loop stall seen by scrapes between the two snapshots. */
  add(pod: string, before: Record<string, number>, after: Record<string, number>, stallMs = 0): void {
    const sums = (this.sums[pod] ??= {});
    const stall = Math.max(stallMs, after.loop_stall_max_ms ?? 0);
    sums.loop_stall_max_ms = Math.max(sums.loop_stall_max_ms ?? 0, stall);
    (this.stalls[pod] ??= []).push(Math.round(stall));
    for (const [k, v] of Object.entries(after)) if (k !== "loop_stall_max_ms") sums[k] = (sums[k] ?? 0) + v - (before[k] ?? 0);
    this.addRepeat(pod, before, after);
  }

  private addRepeat(pod: string, before: Record<string, number>, after: Record<string, number>): void {
    const each = (this.repeats[pod] ??= {});
    for (const k of PER_REPEAT) if (k in after) (each[k] ??= []).push(Math.round((after[k]! - (before[k] ?? 0)) * 1000) / 1000);
  }

  /** Per repeat, except the stall (the longest seen). */
  result(repeats: number): Record<string, Record<string, number | number[] | Record<string, number[]>>> {
    const round = (k: string, v: number): number => Math.round((k === "loop_stall_max_ms" || k === "pool_misses" ? v : v / repeats) * 1000) / 1000;
    return Object.fromEntries(
      Object.entries(this.sums).map(([pod, s]) => [pod, { ...Object.fromEntries(Object.entries(s).map(([k, v]) => [k, round(k, v)])), loop_stall_ms_per_repeat: this.stalls[pod] ?? [], per_repeat: this.repeats[pod] ?? {} }]),
    );
  }
}

interface Pods {
  /** An engine without a store. */
  plain: string;
  /** Engines with the store. */
  a: string;
  b: string;
  store: string;
}

async function rows(o: ReuseBenchOptions, { plain, a, b, store }: Pods, tokens: number): Promise<Record<string, unknown>> {
  const recompute: Answer[] = [];
  const inpod: Answer[] = [];
  const missStore: Answer[] = [];
  const duringWriteback: Answer[] = [];
  const fromStore: Answer[] = [];
  // The engine's own step time in the in-pod request (the question's prefill and sampling): the rest is HTTP, JavaScript, the prefix search.
  const inpodEngineMs: number[] = [];
  // The pod's own TTFT of it (arrival to first token): the rest of inpod_ms is HTTP and the response.
  const inpodServerMs: number[] = [];
  let storeBytes = 0;
  // B's load of each repeat (seconds, the pod's own llmfleet_kv_store_load_seconds).
  const loadSeconds: number[] = [];
  const diag = new PodDiagnostics();
  const bOutcomesBefore = await outcomes(b);
  const aWritesBefore = await outcomes(a, WRITES);
  for (let r = 0; r < o.repeats; r++) {
    const c = context(tokens);
    const plainBefore = await diag.snapshot(plain);
    recompute.push(await ask(plain, c));
    diag.add("plain", plainBefore, await diag.snapshot(plain));
    const stepBefore = await metricSum(plain, "llmfleet_engine_native_step_seconds_total");
    const ttftBefore = await metricSum(plain, "llmfleet_ttft_seconds_sum");
    inpod.push(await ask(plain, c + QUESTION));
    inpodEngineMs.push(((await metricSum(plain, "llmfleet_engine_native_step_seconds_total")) - stepBefore) * 1000);
    inpodServerMs.push(((await metricSum(plain, "llmfleet_ttft_seconds_sum")) - ttftBefore) * 1000);
    const ca = context(tokens);
    const aWrites = await metricSum(a, WRITES);
    const aBefore = await diag.snapshot(a); // also starts A's event-loop lag window
    missStore.push(await ask(a, ca));
    // The miss alone (its phases against the plain pod's recompute: the store's cost to a miss).
    const aMiss = await diag.snapshot(a);
    diag.add("a_miss", aBefore, aMiss);
    duringWriteback.push(await ask(a, context(tokens))); // A's write-back of `ca` is in flight
    const stallMs = await writesSettled(a, aWrites + 2); // both contexts' write-backs have ended (stored, or skipped while A was busy)
    const aAfter = await diag.snapshot(a);
    // The request during the write-back, with both write-backs' stages; and A's whole repeat.
    diag.add("a_during", aMiss, aAfter, stallMs);
    diag.add("a", aBefore, aAfter, Math.max(stallMs, aMiss.loop_stall_max_ms ?? 0));
    const bytesBefore = await metricSum(store, "llmfleet_kv_bytes");
    const loadBefore = await metricSum(b, "llmfleet_kv_store_load_seconds_sum");
    const loadedBefore = await metricSum(b, LOADED_BYTES);
    const bBefore = await diag.snapshot(b);
    const bWrites = await metricSum(b, WRITES);
    fromStore.push(await ask(b, ca + QUESTION));
    diag.add("b", bBefore, await diag.snapshot(b));
    loadSeconds.push((await metricSum(b, "llmfleet_kv_store_load_seconds_sum")) - loadBefore);
    // The bytes B's load moved (all the entry's blocks; v1 entries: the store's mean entry size).
    const loaded = (await metricSum(b, LOADED_BYTES)) - loadedBefore;
    storeBytes = Math.max(storeBytes, loaded > 0 ? loaded : bytesBefore / Math.max(1, await metricSum(store, "llmfleet_kv_blocks")));
    // B's own write-back of the longer prompt (1 GB on a 7B model): ended before the next repeat's
    // rows, which it would otherwise share the GPU and the host with (two equal readings of the
    // counter were taken as the end while it still ran).
    await writesSettled(b, bWrites + 1);
  }
  const m = (xs: Answer[]): number => Math.round(median(xs.map((x) => x.ms)) * 10) / 10;
  const cached = (xs: Answer[]): number => median(xs.map((x) => x.cachedTokens));
  process.stderr.write(
    `bench:http: reuse ${tokens}: recompute ${m(recompute)} ms, in-pod ${m(inpod)} ms, store miss ${m(missStore)} ms, during write-back ${m(duringWriteback)} ms, from store ${m(fromStore)} ms\n`,
  );
  return {
    recompute_ms: m(recompute),
    inpod_ms: m(inpod),
    inpod_cached_tokens: cached(inpod),
    inpod_engine_ms: Math.round(median(inpodEngineMs) * 10) / 10,
    inpod_server_ttft_ms: Math.round(median(inpodServerMs) * 10) / 10,
    miss_store_ms: m(missStore),
    during_writeback_ms: m(duringWriteback),
    store_ms: m(fromStore),
    store_cached_tokens: cached(fromStore),
    // Why B did or did not load (recompute_faster: the entry was held but loading it was expected to take longer).
    store_load_outcomes: outcomeDelta(await outcomes(b), bOutcomesBefore),
    // A's write-backs (the entries B loads): stored, or why not.
    writeback_outcomes: outcomeDelta(await outcomes(a, WRITES), aWritesBefore),
    // Per pod over the rows (A: the miss and the request during its write-back, both write-backs;
    // a_miss: the miss alone; a_during: the request during the write-back with both write-backs;
    // plain: the recompute; B: its load): seconds by KV store stage and request phase (lease,
    // kv_load, prefill), host-pool blocks page-locked anew, and the longest event-loop stall (ms).
    diagnostics: diag.result(o.repeats),
    store_entry_bytes: Math.round(storeBytes),
    // The median repeat's load, as the other rows' medians (the first load of a pod page-locks its
    // host pool's blocks: per repeat beside it, and in the diagnostics' per_repeat pool_misses).
    store_load_s: median(loadSeconds),
    store_load_s_per_repeat: loadSeconds.map((s) => Math.round(s * 10000) / 10000),
    prompt_tokens: median(recompute.map((x) => x.promptTokens)),
  };
}

/** Of a mix request's pod, read around it: its phases, the engine's step time, a load's stages. */
/**
 * A mix request's pod, read around it: its phases, engine steps and load stages, and what its own
 * write-back did meanwhile (split, send: a load beside a 1 GB write-back was the slow one on the
 * H100, session 25); `pool_misses` is a count (host-pool blocks page-locked anew), the rest ms.
 */
const MIX_STAGES = [
  "phase_tokenize_s",
  "phase_lease_s",
  "phase_kv_load_s",
  "phase_prefill_s",
  "engine_step_s",
  "load_lookup_s",
  "load_fetch_s",
  "load_place_s",
  "load_import_parts_s",
  "load_import_s",
  "write_split_s",
  "write_send_s",
  "pool_misses",
];

/** 100 requests over A and B: new contexts, repeats and extensions of earlier ones, at random. */
async function mix(o: ReuseBenchOptions, pods: string[], recomputeMs: Record<number, number>): Promise<Record<string, unknown>> {
  const rnd = prng(4242);
  const seen: { text: string; tokens: number }[] = [];
  const ratios: number[] = [];
  const kinds: Record<string, number> = {};
  const detail: ({ i: number; kind: string; pod: string; tokens: number; ms: number; cached_tokens: number; vs_recompute: number } & Record<string, number | string>)[] = [];
  const diag = new PodDiagnostics();
  for (let i = 0; i < o.mixRequests; i++) {
    const tokens = o.contexts[Math.floor(rnd() * o.contexts.length)]!;
    const pick = rnd();
    let prompt: string;
    let kind: string;
    const earlier = seen.filter((s) => s.tokens === tokens);
    if (pick < 0.4 || earlier.length === 0) {
      prompt = context(tokens);
      seen.push({ text: prompt, tokens });
      kind = "new";
    } else {
      const base = earlier[Math.floor(rnd() * earlier.length)]!;
      kind = pick < 0.7 ? "repeat" : "extend";
      prompt = kind === "repeat" ? base.text : base.text + QUESTION;
    }
    kinds[kind] = (kinds[kind] ?? 0) + 1;
    const pod = Math.floor(rnd() * pods.length);
    const before = await diag.snapshot(pods[pod]!);
    const answer = await ask(pods[pod]!, prompt);
    const after = await diag.snapshot(pods[pod]!);
    ratios.push(answer.ms / recomputeMs[tokens]!);
    // Where the request's time went on its pod (ms): its phases, the engine's steps, a load's stages.
    const ms = (k: string): number => Math.round(((after[k] ?? 0) - (before[k] ?? 0)) * 10000) / 10;
    const where = Object.fromEntries(MIX_STAGES.map((k) => (k === "pool_misses" ? [k, (after[k] ?? 0) - (before[k] ?? 0)] : [k.replace(/_s$/, "_ms"), ms(k)])));
    detail.push({ i, kind, pod: String.fromCharCode(97 + pod), tokens, ms: Math.round(answer.ms * 10) / 10, cached_tokens: answer.cachedTokens, vs_recompute: Math.round(ratios.at(-1)! * 100) / 100, ...where });
  }
  const sorted = [...ratios].sort((x, y) => x - y);
  return {
    requests: ratios.length,
    kinds,
    // The ten slowest against recompute, with the request before each (what its pod was still doing).
    slowest: [...detail].sort((x, y) => y.vs_recompute - x.vs_recompute).slice(0, 10).map((d) => ({ ...d, before: detail[d.i - 1] })),
    worst_vs_recompute: Math.round(sorted.at(-1)! * 100) / 100,
    p90_vs_recompute: Math.round(sorted[Math.floor(0.9 * sorted.length)]! * 100) / 100,
    median_vs_recompute: Math.round(median(ratios) * 100) / 100,
    // Every request in order: what its pod did before a slow one is here too, not only the request before it.
    per_request: detail,
  };
}

/** Servers started together: all of them, or the first failure once the others are stopped. */
async function startAll(starting: Promise<RunningServer>[]): Promise<RunningServer[]> {
  const settled = await Promise.allSettled(starting);
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
  if (!failed) return settled.map((s) => (s as PromiseFulfilledResult<RunningServer>).value);
  await Promise.all(settled.flatMap((s) => (s.status === "fulfilled" ? [s.value.stop(10_000)] : [])));
  throw failed.reason;
}

/** The A/B baselines pods A and B run with (docs/kv-store.md): the write-back's yield to loads on, loads assembling the whole state. */
function storePodBaselines(o: ReuseBenchOptions): NodeJS.ProcessEnv {
  return {
    ...(o.writeYield === true ? { LLMFLEET_KV_WRITE_YIELD: "1" } : {}),
    ...(o.loadParts === false ? { LLMFLEET_KV_LOAD_PARTS: "0" } : {}),
  };
}

export async function reuseSection(o: ReuseBenchOptions): Promise<Record<string, unknown>> {
  await mkdir(o.logDir, { recursive: true });
  await using store = await start(
    o,
    "kvstore",
    ["--role", "kvstore", "--codec", o.codec, "--tier", "name=ram,medium=memory,capacity=64Gi", ...(o.storeStreams ? ["--kv-streams", String(o.storeStreams)] : [])],
    o.storeHold === false ? { LLMFLEET_KV_STORE_HOLD_UPLOADS: "0" } : undefined,
  );
  // The A/B baseline of the write-back's yield to loads (docs/kv-store.md).
  const storePodEnv = storePodBaselines(o);
  const storePodArgs = ["--kv-store", store.url, "--kv-host-warm", o.hostWarm ?? "auto", ...o.podArgs];
  // The three engine pods load the model at once: one after another, a 7B f16 model's three loads
  // took most of a 10-minute device call's first minutes.
  const [p, pa, pb] = await startAll([
    start(o, "plain", ["--role", "aggregated", "--model", o.model, ...o.podArgs]),
    start(o, "a", ["--role", "aggregated", "--model", o.model, ...storePodArgs], storePodEnv),
    start(o, "b", ["--role", "aggregated", "--model", o.model, ...storePodArgs], storePodEnv),
  ]);
  await using plain = p!;
  await using a = pa!;
  await using b = pb!;
  wordsPerToken = await benchWordsPerToken(plain.url);
  for (const url of [plain.url, a.url, b.url]) await ask(url, context(64)); // warm-up
  const out: Record<string, unknown> = { pod_args: o.podArgs.join(" "), codec: o.codec, store_streams: o.storeStreams ?? "default", write_yield: o.writeYield === true, store_hold: o.storeHold !== false, host_warm: o.hostWarm ?? "auto", load_parts: o.loadParts !== false, repeats: o.repeats };
  const recomputeMs: Record<number, number> = {};
  for (const tokens of o.contexts) {
    const r = await rows(o, { plain: plain.url, a: a.url, b: b.url, store: store.url }, tokens);
    out[String(tokens)] = r;
    recomputeMs[tokens] = r.recompute_ms as number;
  }
  if (o.mixRequests > 0) out.mix = await mix(o, [a.url, b.url], recomputeMs); // --reuse-mix 0: the rows alone
  out.alive = [plain, store, a, b].map((s) => s.exited() ?? "alive");
  return out;
}

const ratio = (x: number | undefined, y: number | undefined): number | null => (x && y ? Math.round((x / y) * 100) / 100 : null);

const diff = (x: number | undefined, y: number | undefined): number | null => (x !== undefined && y !== undefined ? Math.round((x - y) * 10) / 10 : null);

/** Headline keys of the reuse section (issue 19). */
export function reuseHeadline(reuse: Record<string, unknown> | undefined): Record<string, number | null> {
  if (!reuse) return {};
  const r8 = (reuse["8192"] ?? {}) as Partial<Record<string, number>>;
  const loadS = r8.store_load_s ?? 0;
  return {
    reuse_inpod_ratio_8k: ratio(r8.recompute_ms, r8.inpod_ms),
    reuse_store_ratio_8k: ratio(r8.recompute_ms, r8.store_ms),
    store_gb_s: loadS > 0 ? Math.round(((r8.store_entry_bytes ?? 0) / loadS / 1e9) * 1000) / 1000 : null,
    store_miss_overhead_ms: diff(r8.miss_store_ms, r8.recompute_ms),
    writeback_delay_ms: diff(r8.during_writeback_ms, r8.miss_store_ms),
    worst_vs_recompute_mix: (reuse.mix as { worst_vs_recompute?: number } | undefined)?.worst_vs_recompute ?? null,
  };
}
