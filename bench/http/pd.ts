/**
 * bench:http's P/D section: prefill + decode + router, each the engine's own program in its own
 * process (as the operator runs the pods), against one aggregated engine with the same flags, on
 * the same device. Closed-loop streaming clients at each concurrency, prompts of each length
 * (synthetic `w<N>` words, one token each on the synthetic models), through the router. The
 * hand-off mechanism is --kv-transport (tcp: the native stream, http: the old path; each its own
 * run). Transfer GB/s is the prefill pod's own figure: state bytes over the seconds from the end
 * of prefill to the decode pod's "staged" (llmfleet_kv_handoff_{bytes,seconds{stage=send}}).
 */
import { mkdir } from "node:fs/promises";
import { closedLoop, benchPrompt, benchPromptOfTokens, benchWordsPerToken, LoadClient, type LoadSummary } from "./load-client.ts";
import { startServer, type RunningServer } from "./servers.ts";
import { metricSum as metric, partsMeans, partsSnapshot, type Pods } from "./ttft-parts.ts";

export interface PdBenchOptions {
  /** node + script (and any wrapper) that starts the engine program. */
  engine: string[];
  model: string;
  /** Engine flags shared by every model pod (device, sizing), without --role/--port. */
  podArgs: string[];
  concurrencies: number[];
  promptTokens: number[];
  maxTokens: number;
  transports: PdTransport[];
  logDir: string;
  /**
   * Where each pod runs, per role (and mechanism): environment and flags added to its own. The
   * two-GPU section (two-gpu.ts) pins the pods to GPUs with it. Default: every pod on the device(s)
   * the machine shows it.
   */
  place?: (role: PdRole, t?: PdTransport) => Placement;
}

export type PdRole = "aggregated" | "prefill" | "decode";
export interface Placement {
  env?: NodeJS.ProcessEnv;
  args?: readonly string[];
}

type Runs = Record<string, LoadSummary>;

/**
 * The hand-off mechanisms the section compares, each a P/D pair of its own: tcp (the default: the
 * whole state after the prompt, striped over --kv-streams' default; a greedy request's first
 * token goes ahead of it), tcp-late (the same with the first token answered only once the state is
 * staged: PREFILL_ENV, the baseline of the first token ahead), tcp-export-first (the first token
 * ahead, answered once the state is copied out of the engine, as before session 27: the baseline
 * of the export behind the answer), tcp-overlap (tcp with the decode pod's imports leaving its
 * engine to other sequences while their copies move: DECODE_ENV), tcp-parts (in parts sent while
 * the prompt computes: --kv-part-tokens auto), tcp8 (8 connections), tcp1 (one connection, the v1
 * wire: the mechanism before striping), tcp-split (tcp into a decode pod whose KV is one stream per
 * sequence: DECODE_ARGS), http (the LFKV stream over HTTP), local (auto: the rows through memory
 * the decode pod lends, device to device by CUDA IPC on a GPU, pd/local-handoff.ts; its transfer
 * paths say whether it went so), tcp-prio and tcp-sm70 (tcp with the
 * prefill pod's kernels below the decode pod's on a GPU shared through CUDA MPS, or on at most 70 %
 * of its SMs: PREFILL_ENV; with MPS off they are tcp).
 */
export const TRANSPORT_ARGS = {
  tcp: ["--kv-transport", "tcp"],
  "tcp-late": ["--kv-transport", "tcp"],
  "tcp-export-first": ["--kv-transport", "tcp"],
  "tcp-overlap": ["--kv-transport", "tcp"],
  "tcp-parts": ["--kv-transport", "tcp", "--kv-part-tokens", "auto"],
  tcp8: ["--kv-transport", "tcp", "--kv-streams", "8"],
  tcp1: ["--kv-transport", "tcp", "--kv-streams", "1"],
  "tcp-split": ["--kv-transport", "tcp"],
  http: ["--kv-transport", "http"],
  local: ["--kv-transport", "auto"],
  "tcp-prio": ["--kv-transport", "tcp"],
  "tcp-sm70": ["--kv-transport", "tcp"],
} as const;

/**
 * The decode pod's own flags per mechanism. tcp-split: the decode pod's KV one stream per sequence
 * (--kv-unified off): on the H100 a 4K state's import took 40 ms alone and 297-383 ms at 8 streams
 * into the unified cache, likely copied cell by cell into a fragmented cache (session 14); a
 * sequence's own stream holds its state in one run.
 */
const DECODE_ARGS: Partial<Record<PdTransport, readonly string[]>> = { "tcp-split": ["--kv-unified", "off"] };

/**
 * The decode pod's environment per mechanism. tcp-overlap: an import's copies to the device leave
 * the engine to the other sequences' steps while they move (LLMFLEET_IMPORT_OVERLAP=1,
 * runtime/shared-state.ts importFile): at 1K x8 in session 26 each import held it 5.8 ms.
 */
const DECODE_ENV: Partial<Record<PdTransport, NodeJS.ProcessEnv>> = { "tcp-overlap": { LLMFLEET_IMPORT_OVERLAP: "1" } };

/**
 * The prefill pod's environment per mechanism. tcp-late: the first token waits for the send
 * (handoff-routes.ts firstTokenAhead). Under MPS (the decode pod's steps slowed 10.7 -> 13.3-13.9
 * ms at 1K x8 while the prefill pod's kernels share the GPU, session 26): tcp-prio, the prefill
 * pod's streams below normal priority (CUDA_MPS_CLIENT_PRIORITY=1), so a decode step's kernels
 * are scheduled first; tcp-sm70, the prefill pod on at most 70 % of the SMs.
 */
const PREFILL_ENV: Partial<Record<PdTransport, NodeJS.ProcessEnv>> = {
  "tcp-late": { LLMFLEET_FIRST_TOKEN_AHEAD: "0" },
  "tcp-export-first": { LLMFLEET_EXPORT_BEHIND: "0" },
  "tcp-prio": { CUDA_MPS_CLIENT_PRIORITY: "1" },
  "tcp-sm70": { CUDA_MPS_ACTIVE_THREAD_PERCENTAGE: "70" },
};
export type PdTransport = keyof typeof TRANSPORT_ARGS;

interface Transfer {
  handoffs: number;
  bytes: number;
  send_s: number;
  gb_s: number;
  /** llmfleet_kv_handoffs_total by path: which mechanism the hand-offs took. */
  paths: Record<string, number>;
  /**
   * Where a hand-off's time goes, mean ms per hand-off: export (the prefill pod copies the state
   * out of the GPU; in parts, their sum), send (on the wire; in parts, their sum, mostly while the
   * prompt computes), tail (in parts: what is left after the prompt is computed), import (the decode
   * pod puts it on the GPU, at the generate call), wire (the native sender's own part of send),
   * export_wait and export_copy (export split: waiting for the device's queued work, i.e. the prompt's
   * last layers, then copying the state out), import_native (of import: llama.cpp's read of the state;
   * the rest is waiting for the decode engine and JavaScript), await (the decode pod's generate call,
   * its first token out ahead of the state, waiting for the state to land).
   * From both pods' llmfleet_kv_handoff_seconds.
   */
  stages_ms: Record<(typeof STAGES)[number], number>;
  /**
   * Mean tensor copies per export (prefill pod) and per import (decode pod): llama.cpp copies one
   * contiguous run of a sequence's cells per layer, K and V, so 2 x layers when the cells are
   * contiguous and many more when the cache gave it scattered cells (0: the build cannot count them).
   */
  copies?: { export: number; import: number };
  /** llmfleet_kv_host_pool_{hits,misses}_total of each pod over the sweep: a miss page-locked a new block. */
  host_pool: Record<"prefill" | "decode", { hits: number; misses: number }>;
  /**
   * Hand-offs that carried the answer's first token (prefill pod), those answered with it before the
   * state was sent, and the decode pod's generate calls whose state never came, so it computed the
   * prompt itself (llmfleet_kv_handoff_failures_total{reason=await_*}).
   */
  first_token: { carried: number; ahead: number; decode_computed: number };
}

// Below Linux's ephemeral range (32768+), where outgoing connections would collide.
const port = (): number => 20_000 + Math.floor(Math.random() * 12_000);

const STAGES = ["export", "export_wait", "export_copy", "send", "wire", "tail", "import", "import_native", "await"] as const;
type StageSums = Record<(typeof STAGES)[number] | "export_copies" | "import_copies", { sum: number; count: number }>;

/**
 * The pods' llmfleet_kv_handoff_seconds sums and counts by stage (import from the decode pod);
 * export_wait and export_copy from the prefill engine's export counters (every export of the pod:
 * hand-offs, and write-backs where a KV store is configured).
 */
async function stageSums(pods: { prefill: string; decode: string }): Promise<StageSums> {
  const [p, d] = await Promise.all([pods.prefill, pods.decode].map(async (u) => (await fetch(`${u}/metrics`)).text()));
  const out = {} as StageSums;
  for (const stage of STAGES) {
    const text = stage.startsWith("import") || stage === "await" ? d! : p!;
    if (stage === "import_native") {
      out[stage] = { sum: metric(text, "llmfleet_engine_native_import_seconds_total", {}), count: metric(text, "llmfleet_engine_native_imports_total", {}) };
      continue;
    }
    if (stage === "export_wait" || stage === "export_copy") {
      const sum = metric(text, `llmfleet_engine_native_${stage}_seconds_total`, {});
      out[stage] = { sum, count: metric(text, "llmfleet_engine_native_exports_total", {}) };
      continue;
    }
    out[stage] = { sum: metric(text, "llmfleet_kv_handoff_seconds_sum", { stage }), count: metric(text, "llmfleet_kv_handoff_seconds_count", { stage }) };
  }
  out.export_copies = { sum: metric(p!, "llmfleet_engine_native_export_copies_total", {}), count: out.export_wait.count };
  out.import_copies = { sum: metric(d!, "llmfleet_engine_native_import_copies_total", {}), count: out.import_native.count };
  return out;
}

/** Before any hand-off. */
const NO_STAGES = Object.fromEntries([...STAGES, "export_copies", "import_copies"].map((s) => [s, { sum: 0, count: 0 }])) as StageSums;

/** Mean ms per hand-off of each stage between two snapshots. */
function stageMeans(a: StageSums, b: StageSums): Transfer["stages_ms"] {
  const out = {} as Transfer["stages_ms"];
  for (const stage of STAGES) {
    const n = b[stage].count - a[stage].count;
    out[stage] = n > 0 ? Math.round(((b[stage].sum - a[stage].sum) / n) * 1e4) / 10 : 0;
  }
  return out;
}

/** Mean tensor copies per export and per import between two snapshots. */
function copyMeans(a: StageSums, b: StageSums): NonNullable<Transfer["copies"]> {
  const mean = (k: "export_copies" | "import_copies"): number => {
    const n = b[k].count - a[k].count;
    return n > 0 ? Math.round((b[k].sum - a[k].sum) / n) : 0;
  };
  return { export: mean("export_copies"), import: mean("import_copies") };
}

type Run = Runs[string] & { stages_ms?: Transfer["stages_ms"]; copies?: Transfer["copies"]; ttft_parts_ms?: Record<string, number> };

/** The prefill and decode pods of a P/D pair, when both are given. */
const pairOf = (pods: Pods): { prefill: string; decode: string } | undefined => (pods.prefill && pods.decode ? { prefill: pods.prefill, decode: pods.decode } : undefined);

/** One closed-loop run of `c` clients with prompts of `tokens` tokens; with pods, where its first tokens' time went and its hand-offs' stage means. */
async function run(
  client: LoadClient,
  o: Pick<PdBenchOptions, "maxTokens">,
  at: { tokens: number; c: number; wordsPerToken: number },
  pods: Pods = {},
): Promise<Run> {
  const { tokens, c, wordsPerToken } = at;
  const perClient = Math.max(2, Math.min(6, Math.round(32 / c)));
  const pair = pairOf(pods);
  const before = pair ? await stageSums(pair) : undefined;
  const partsBefore = await partsSnapshot(pods);
  const s: Run = await closedLoop(
    (r) => client.complete(r),
    c,
    (cl, i) => ({ prompt: benchPromptOfTokens(tokens * 100_000 + cl * 1000 + i, tokens, wordsPerToken), maxTokens: o.maxTokens }),
    { perClient },
  );
  s.ttft_parts_ms = partsMeans(partsBefore, await partsSnapshot(pods), s.requests);
  // Where this run's hand-offs spent their time (mean ms per hand-off, by stage).
  if (pair && before) {
    const after = await stageSums(pair);
    s.stages_ms = stageMeans(before, after);
    s.copies = copyMeans(before, after);
  }
  return s;
}

/** Closed-loop runs at each prompt length and stream count of `o`, through `url`; with pods, each run's first-token parts and hand-off stages. */
export async function sweep(url: string, name: string, o: Pick<PdBenchOptions, "promptTokens" | "concurrencies" | "maxTokens">, pods: Pods = {}): Promise<Record<string, Runs>> {
  const client = new LoadClient(url, 4096);
  const out: Record<string, Runs> = {};
  try {
    await client.complete({ prompt: benchPrompt(424_242, 64), maxTokens: 4 }); // warm-up
    const wordsPerToken = await benchWordsPerToken(url);
    for (const tokens of o.promptTokens) {
      const runs: Runs = {};
      for (const c of o.concurrencies) {
        const s = await run(client, o, { tokens, c, wordsPerToken }, pods);
        runs[String(c)] = s;
        const stages = s.stages_ms ? ` (stages ms ${JSON.stringify(s.stages_ms)}, copies per hand-off ${JSON.stringify(s.copies)})` : "";
        process.stderr.write(`bench:http: pd ${name} ${tokens} tok x${c}: TTFT p50 ${s.ttft_p50_ms} ms, ${s.tok_s} tok/s, ${s.errors} errors; first-token parts ms ${JSON.stringify(s.ttft_parts_ms)}${stages}\n`);
      }
      out[String(tokens)] = runs;
    }
  } finally {
    client.close();
  }
  return out;
}

async function transfer(prefillUrl: string, decodeUrl: string): Promise<Transfer> {
  const text = await (await fetch(`${prefillUrl}/metrics`)).text();
  const decodeText = await (await fetch(`${decodeUrl}/metrics`)).text();
  const pool = (t: string): { hits: number; misses: number } => ({
    hits: metric(t, "llmfleet_kv_host_pool_hits_total", {}),
    misses: metric(t, "llmfleet_kv_host_pool_misses_total", {}),
  });
  const bytes = metric(text, "llmfleet_kv_handoff_bytes_sum", {});
  const handoffs = metric(text, "llmfleet_kv_handoff_bytes_count", {});
  const sendS = metric(text, "llmfleet_kv_handoff_seconds_sum", { stage: "send" });
  const paths: Record<string, number> = {};
  for (const p of ["tcp", "http", "local"]) paths[p] = metric(text, "llmfleet_kv_handoffs_total", { path: p, outcome: "ok" });
  // Over the whole sweep: every hand-off since the pods started.
  const sums = await stageSums({ prefill: prefillUrl, decode: decodeUrl });
  const stages_ms = stageMeans(NO_STAGES, sums);
  const copies = copyMeans(NO_STAGES, sums);
  const host_pool = { prefill: pool(text), decode: pool(decodeText) };
  const first_token = {
    carried: metric(text, "llmfleet_kv_handoff_first_tokens_total", {}),
    ahead: metric(text, "llmfleet_kv_handoffs_ahead_total", {}),
    decode_computed: ["failed", "timeout", "mismatch"].reduce((n, r) => n + metric(decodeText, "llmfleet_kv_handoff_failures_total", { reason: `await_${r}` }), 0),
  };
  return { handoffs, bytes, send_s: sendS, gb_s: sendS > 0 ? Math.round((bytes / sendS / 1e9) * 1000) / 1000 : 0, paths, stages_ms, copies, host_pool, first_token };
}

/**
 * Greedy answers (16 tokens) to one fixed prompt per prompt size. A P/D pair must give the
 * aggregated engine's answers: its state is moved, not recomputed, so a copy that went wrong on the
 * way (a byte, an unsynchronized device copy) shows as a different answer.
 */
export async function greedyAnswers(url: string, o: Pick<PdBenchOptions, "promptTokens">): Promise<string[]> {
  const wordsPerToken = await benchWordsPerToken(url);
  const out: string[] = [];
  for (const tokens of o.promptTokens) {
    const prompt = benchPromptOfTokens(9_900_000 + tokens, tokens, wordsPerToken);
    const res = await fetch(`${url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "default", prompt, max_tokens: 16, temperature: 0 }),
    });
    const body = (await res.json()) as { choices?: Array<{ text?: string }> };
    out.push(res.ok ? (body.choices?.[0]?.text ?? "") : `HTTP ${res.status}`);
  }
  return out;
}

/** One engine program on a free port, its log in o.logDir; ready once /ready answers. */
export async function start(o: Pick<PdBenchOptions, "engine" | "logDir">, name: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<RunningServer> {
  const p = port();
  const [cmd, ...pre] = o.engine as [string, ...string[]];
  return startServer(name, cmd, [...pre, ...args, "--host", "127.0.0.1", "--port", String(p)], {
    port: p,
    readyPath: "/ready",
    logFile: `${o.logDir}/pd-${name}.log`,
    env,
  });
}

export async function pdSection(o: PdBenchOptions): Promise<Record<string, unknown>> {
  await mkdir(o.logDir, { recursive: true });
  const out: Record<string, unknown> = { pod_args: o.podArgs.join(" "), prompt_tokens: o.promptTokens, concurrency: o.concurrencies, max_tokens: o.maxTokens };
  const at = (role: PdRole, t?: PdTransport): Placement => o.place?.(role, t) ?? {};
  let reference: string[];
  {
    await using agg = await start(o, "aggregated", ["--role", "aggregated", "--model", o.model, ...o.podArgs, ...(at("aggregated").args ?? [])], at("aggregated").env);
    reference = await greedyAnswers(agg.url, o);
    out.aggregated = await sweep(agg.url, "aggregated", o, { aggregated: agg.url });
  }
  for (const t of o.transports) {
    await using decode = await start(o, `decode-${t}`, [
      "--role",
      "decode",
      "--model",
      o.model,
      "--kv-port",
      String(port()),
      ...o.podArgs,
      ...(DECODE_ARGS[t] ?? []),
      ...(at("decode", t).args ?? []),
    ], { ...DECODE_ENV[t], ...at("decode", t).env });
    const transport = TRANSPORT_ARGS[t];
    const prefillArgs = ["--role", "prefill", "--model", o.model, "--decode", decode.url, ...transport, ...o.podArgs, ...(at("prefill", t).args ?? [])];
    await using prefill = await start(o, `prefill-${t}`, prefillArgs, { ...PREFILL_ENV[t], ...at("prefill", t).env });
    await using router = await start(o, `router-${t}`, ["--role", "router", "--prefill", prefill.url, "--decode", decode.url]);
    const runs = await sweep(router.url, `p/d ${t}`, o, { prefill: prefill.url, decode: decode.url, router: router.url });
    // After the sweep: the decode pod's cache has seen sequences come and go, so states land in scattered cells.
    const answers = await greedyAnswers(router.url, o);
    const same_answers = answers.map((a, i) => a === reference[i]);
    process.stderr.write(`bench:http: pd ${t}: greedy answers as aggregated's: ${JSON.stringify(same_answers)}\n`);
    out[`pd_${t}`] = { runs, transfer: await transfer(prefill.url, decode.url), same_answers, alive: [decode, prefill, router].map((s) => s.exited() ?? "alive") };
  }
  return out;
}

const ratio = (x: number | undefined, y: number | undefined): number | null => (x && y ? Math.round((x / y) * 100) / 100 : null);

type Section = { runs?: Record<string, Runs>; transfer?: Transfer } | undefined;
const ttft = (r: Record<string, Runs> | undefined, tokens: number, c: number): number | undefined => r?.[String(tokens)]?.[String(c)]?.ttft_p50_ms;
const tokS = (r: Record<string, Runs> | undefined, tokens: number, c: number): number | undefined => r?.[String(tokens)]?.[String(c)]?.tok_s;

/** Headline keys of the P/D section (issue 18). */
export function pdHeadline(pd: Record<string, unknown> | undefined): Record<string, number | null> {
  if (!pd) return {};
  const agg = pd.aggregated as Record<string, Runs> | undefined;
  const runs = (t: PdTransport): Record<string, Runs> | undefined => (pd[`pd_${t}`] as Section)?.runs;
  const gb = (t: PdTransport): number | null => (pd[`pd_${t}`] as Section)?.transfer?.gb_s ?? null;
  const ttftRatio = (t: PdTransport, tokens: number): number | null => ratio(ttft(runs(t), tokens, 1), ttft(agg, tokens, 1));
  const tokRatio = (t: PdTransport): number | null => ratio(tokS(runs(t), 1024, 8), tokS(agg, 1024, 8));
  return {
    pd_ttft_ratio_1k: ttftRatio("tcp", 1024),
    pd_ttft_ratio_4k: ttftRatio("tcp", 4096),
    pd_throughput_ratio_8: tokRatio("tcp"),
    // The baseline of the first token ahead of the state: the same P/D with the first token answered once the state is staged.
    pd_ttft_ratio_1k_late: ttftRatio("tcp-late", 1024),
    pd_ttft_ratio_4k_late: ttftRatio("tcp-late", 4096),
    // The baseline of the export behind the answer: the first token ahead, answered once the state is exported.
    pd_ttft_ratio_1k_export_first: ttftRatio("tcp-export-first", 1024),
    pd_ttft_ratio_4k_export_first: ttftRatio("tcp-export-first", 4096),
    // The prefill pod below the decode pod under MPS (PREFILL_ENV): its 8-stream throughput and 1K TTFT.
    pd_throughput_ratio_8_prio: tokRatio("tcp-prio"),
    pd_ttft_ratio_1k_prio: ttftRatio("tcp-prio", 1024),
    pd_throughput_ratio_8_sm70: tokRatio("tcp-sm70"),
    pd_ttft_ratio_1k_sm70: ttftRatio("tcp-sm70", 1024),
    // The local path (rows through the decode pod's lent memory; device to device on a GPU).
    pd_ttft_ratio_1k_local: ttftRatio("local", 1024),
    pd_ttft_ratio_4k_local: ttftRatio("local", 4096),
    pd_throughput_ratio_8_local: tokRatio("local"),
    // The decode pod's imports overlapped with other sequences' steps (DECODE_ENV).
    pd_throughput_ratio_8_overlap: tokRatio("tcp-overlap"),
    pd_ttft_ratio_1k_overlap: ttftRatio("tcp-overlap", 1024),
    transfer_gb_s_network: gb("tcp"),
    transfer_gb_s_http: gb("http"),
    transfer_gb_s_one_connection: gb("tcp1"),
    transfer_gb_s_8_connections: gb("tcp8"),
  };
}
