/**
 * npm run bench:rag [-- --fractions 0,0.05,... --out FILE]: RAG documents reused in any order
 * (issue 26), on the real model (Gemma 3 270M, CPU). The corpus is this repository's docs at a
 * pinned commit cut into documents of 256-1,024 tokens (bench/rag-join.ts); each prompt is 4-8 of
 * them, drawn so documents come back across prompts in new orders, then a question. Compared on
 * the same prompts:
 *   full         nothing reused: a pod without joins, one sequence, another prompt just before
 *   prefix-only  a pod without joins (--rag-cache-bytes 0) reusing what its sequences hold: the
 *                shared leading document of every third prompt, else the BOS
 *   join@f       a pod joining documents from their own KV (each one seen once before: a
 *                one-document request), recomputing the last share f of the document tokens
 * TTFT: over HTTP, one engine process per configuration (started together, used one at a time:
 * each prompt goes to every configuration in turn), 1 token streamed, from the client. A ratio is
 * the median of the prompts' own ratios: the configurations answer a prompt back to back, so a
 * load swing on a shared machine moves both sides of it.
 * Quality: in-process on the native engine with the same prompts and the product's layout and
 * plan: greedy agreement and logit KL against full prefill over the 64 tokens it generates, and
 * the perturbation floor as bench/kv-quality.ts measures it (prefix-only reuse is full prefill's
 * computation, so its quality is full prefill's). Writes bench/results/rag.json.
 *
 *   --rag-cache-bytes N  the joining pods' document cache (device mode default 16 GiB, else the engine's);
 *                        the JSON's `documents` says how many a join found there and how many it computed
 *   --sizes 6,4,...      documents per prompt, one entry per prompt (default: 10 prompts, 6 of them of 6)
 *   --fractions F,...    recompute fractions of the curve (default 0,0.05,0.15,0.3,0.4,0.5,0.7)
 *   --seed N             the prompts' draw (default 7)
 *   --quality-only       the in-process quality alone (no engines, no TTFT): more prompts for the curve
 *   --resummarise        rewrites --out's summary from its own per-prompt rows (measures nothing)
 *   --engine FILE        the engine program (default: tsx engine/main.ts)
 *   --texts-from-worktree  the corpus's files as the working tree holds them, not at the pinned commit
 *   --model FILE         device mode: the engines serve this GGUF (the GPU machine's synthetic,
 *                        random-weight model: bench/gpu/http-device.sh rag). TTFT alone (no in-process
 *                        quality, no perturbation floor: a random model's answers mean nothing); the
 *                        corpus from the working tree (that machine has no git history), cut by the
 *                        served model's tokenizer as the engine counts a prompt over HTTP
 *   --engine-args="..."  more flags for every engine the bench starts (e.g. "--gpu-layers all
 *                        --flash-attention --threads 8"); a --threads here replaces the bench's 2
 */
import { readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { cpus, loadavg } from "node:os";
import { dirname } from "node:path";
import { benchArgs, intList } from "./cli.ts";
import { ensureDefaultModel } from "../engine/model/fetch.ts";
import { RAG_RECOMPUTE_DEFAULT, type DocumentLayout } from "../engine/serving/documents.ts";
import { startServer, type RunningServer } from "./http/servers.ts";
import {
  CORPUS_AT,
  CORPUS_SOURCES,
  corpusDocuments,
  corpusDocumentsAsync,
  drawPrompts,
  JoinProbe,
  pinnedCorpus,
  type Quality,
  type RagPrompt,
} from "./rag-join.ts";
import { textInWorktree } from "./pinned-texts.ts";
import { gpuName, httpTokenCounter, ragCounts } from "./rag-device.ts";

const { values: a } = benchArgs({
  options: {
    sizes: { type: "string", default: "6,4,6,8,6,5,6,7,6,6" },
    fractions: { type: "string", default: "0,0.05,0.15,0.3,0.4,0.5,0.7" },
    out: { type: "string", default: "bench/results/rag.json" },
    seed: { type: "string", default: "7" },
    "quality-only": { type: "boolean", default: false },
    resummarise: { type: "boolean", default: false },
    engine: { type: "string" },
    "texts-from-worktree": { type: "boolean", default: false },
    model: { type: "string" },
    "engine-args": { type: "string", default: "" },
    "rag-cache-bytes": { type: "string" },
  },
});
const SIZES = intList("sizes", a.sizes);
const FRACTIONS = a.fractions.split(",").map(Number);
const THREADS = 2;
/** Device mode (--model): TTFT alone, on the served model; the corpus from the working tree. */
const DEVICE = a.model !== undefined;
const WORKTREE = a["texts-from-worktree"] || DEVICE;
const readCorpus = WORKTREE ? textInWorktree : pinnedCorpus;
const ENGINE_ARGS = a["engine-args"].split(/\s+/).filter((w) => w.length > 0);
/** The joining pods' document cache: device mode 16 GiB (a 7B f16 document of 700 tokens is ~90 MB; 1 GiB kept ~11), else the engine's default. */
const RAG_CACHE_BYTES = a["rag-cache-bytes"] ?? (DEVICE ? String(16 * 2 ** 30) : undefined);
/** The engine's --threads: the bench's own unless --engine-args gives one (the engine would take the last of two; one is given). */
const OWN_THREADS = !ENGINE_ARGS.some((w) => w === "--threads" || w.startsWith("--threads="));
const log = (line: string): void => void process.stderr.write(`bench:rag: ${line}\n`);
const load = (): number => Math.round(loadavg()[0]! * 100) / 100;

interface PromptQuality {
  tokens: number;
  full_ms: number;
  floor: Quality;
  /** Per fraction: the quality, the in-process time, and the share of document tokens actually recomputed (a cut before a document's last sliding window recomputes it whole). */
  join: Record<string, Quality & { ms: number; recomputed: number }>;
}

/** Quality (and in-process time) of every fraction on every prompt, against full prefill. */
async function measureQuality(probe: JoinProbe, docs: string[], prompts: RagPrompt[]): Promise<PromptQuality[]> {
  const out: PromptQuality[] = [];
  for (const [k, p] of prompts.entries()) {
    const layout = probe.layout(
      p.docs.map((i) => docs[i]!),
      p.question,
    );
    await probe.warm(layout);
    const ref = await probe.reference(layout);
    const row: PromptQuality = { tokens: layout.tokens.length, full_ms: Math.round(ref.ms), floor: await probe.floor(ref), join: {} };
    for (const f of FRACTIONS) {
      const { ms, joined } = await probe.join(ref, f);
      row.join[String(f)] = { ...(await probe.quality(ref)), ms: Math.round(ms), recomputed: r3(1 - joined / documentTokens(layout)) };
    }
    out.push(row);
    log(
      `quality ${k}: ${p.docs.length} docs, ${row.tokens} tokens, floor ${fmt(row.floor)}; ${FRACTIONS.map((f) => `${f}: ${fmt(row.join[String(f)]!)}`).join("; ")} (load ${load()})`,
    );
  }
  return out;
}

const documentTokens = (layout: DocumentLayout): number => layout.spans.reduce((n, [s, e]) => n + e - s, 0);

const fmt = (q: Quality): string => `${q.agreement.toFixed(3)}/${q.kl.toFixed(4)}`;

interface Run {
  docs: string[];
  lengths: number[];
  prompts: RagPrompt[];
  rows: PromptQuality[];
}

interface Timed {
  ttftMs: number;
  promptTokens: number;
  cachedTokens: number;
}

async function ask(url: string, documents: string[], prompt: string): Promise<Timed> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt, documents, max_tokens: 1, temperature: 0, stream: true, stream_options: { include_usage: true } }),
  });
  if (!res.ok || !res.body) throw new Error(`status ${res.status}: ${await res.text()}`);
  let ttftMs = NaN;
  let text = "";
  for await (const chunk of res.body) {
    if (Number.isNaN(ttftMs)) ttftMs = performance.now() - t0;
    text += Buffer.from(chunk as Uint8Array).toString();
  }
  const usage = /"usage":\{"prompt_tokens":(\d+).*?"cached_tokens":(\d+)/.exec(text);
  return { ttftMs: Math.round(ttftMs), promptTokens: Number(usage?.[1] ?? NaN), cachedTokens: Number(usage?.[2] ?? NaN) };
}

interface Config {
  name: string;
  flags: string[];
}

const CONFIGS: Config[] = [
  { name: "full", flags: ["--parallel", "1", "--rag-cache-bytes", "0"] },
  { name: "prefix", flags: ["--parallel", "2", "--rag-cache-bytes", "0"] },
  ...FRACTIONS.map((f) => ({
    name: `join@${f}`,
    flags: ["--parallel", "2", "--rag-recompute", String(f), ...(RAG_CACHE_BYTES ? ["--rag-cache-bytes", RAG_CACHE_BYTES] : [])],
  })),
];

async function engine(c: Config, port: number): Promise<RunningServer> {
  const program = a.engine ? [a.engine] : ["--import", "tsx", "engine/main.ts"];
  const base = ["--role", "aggregated", "--kv-unified", "on", "--ctx-size", "10240", "--host", "127.0.0.1", "--port", String(port)];
  const args = [...program, ...base, ...(a.model ? ["--model", a.model] : []), ...(OWN_THREADS ? ["--threads", String(THREADS)] : []), ...c.flags, ...ENGINE_ARGS];
  return startServer(c.name, process.execPath, args, { port, readyPath: "/ready", timeoutMs: 600_000 });
}

/** `use` with one engine per configuration started, stopped after. */
async function withEngines<T>(use: (servers: Map<string, RunningServer>) => Promise<T>): Promise<T> {
  const servers = new Map<string, RunningServer>();
  try {
    for (const [i, c] of CONFIGS.entries()) servers.set(c.name, await engine(c, 24_110 + i));
    return await use(servers);
  } finally {
    for (const s of servers.values()) await s.stop(10_000);
  }
}

/** TTFT of every prompt on every configuration, each prompt to each configuration in turn. */
async function measureTtft(docs: string[], prompts: RagPrompt[]): Promise<Record<string, Timed>[]> {
  return withEngines((servers) => timeAll(servers, docs, prompts));
}

/** The joining pods' documents over the timed prompts: from their cache, or computed then (misses). */
const documentOutcomes: Record<string, { cached: number; computed: number; cache_bytes: number }> = {};

async function timeAll(servers: Map<string, RunningServer>, docs: string[], prompts: RagPrompt[]): Promise<Record<string, Timed>[]> {
  const used = [...new Set(prompts.flatMap((p) => p.docs))];
  const joins = CONFIGS.filter((x) => x.name.startsWith("join@"));
  const before: Record<string, { cached: number; computed: number }> = {};
  for (const c of joins) {
    // Each document seen once before, alone: its own KV is what the joining pod keeps.
    for (const i of used) await ask(servers.get(c.name)!.url, [docs[i]!], "warm-up");
    before[c.name] = await ragCounts(servers.get(c.name)!.url);
    log(`warmed ${c.name} with ${used.length} documents (load ${load()})`);
  }
  const rows: Record<string, Timed>[] = [];
  for (const [k, p] of prompts.entries()) {
    const documents = p.docs.map((i) => docs[i]!);
    const row: Record<string, Timed> = {};
    for (const c of CONFIGS) {
      const url = servers.get(c.name)!.url;
      if (c.name === "full") await ask(url, [], "something else first");
      row[c.name] = await ask(url, documents, p.question);
    }
    rows.push(row);
    log(
      `ttft ${k}: ${Object.entries(row)
        .map(([n, t]) => `${n} ${t.ttftMs} ms (cached ${t.cachedTokens})`)
        .join(", ")} (load ${load()})`,
    );
  }
  for (const c of joins) {
    const after = await ragCounts(servers.get(c.name)!.url);
    documentOutcomes[c.name] = { cached: after.cached - before[c.name]!.cached, computed: after.computed - before[c.name]!.computed, cache_bytes: after.cache_bytes };
    log(`${c.name}: documents from the cache ${after.cached - before[c.name]!.cached}, computed at request time ${after.computed - before[c.name]!.computed}`);
  }
  return rows;
}

function median(xs: number[]): number {
  const s = [...xs].sort((x, y) => x - y);
  const m = s.length / 2;
  return s.length === 0 ? NaN : s.length % 2 === 1 ? s[Math.floor(m)]! : (s[m - 1]! + s[m]!) / 2;
}
const mean = (xs: number[]): number => xs.reduce((s, x) => s + x, 0) / xs.length;
const r3 = (x: number): number => Math.round(x * 1000) / 1000;
const r2 = (x: number): number => Math.round(x * 100) / 100;
const r4 = (x: number): number => Math.round(x * 10000) / 10000;

/** The TTFT of fraction `f` over the prompts `ks`: median, and the medians of the prompts' own ratios. */
function ttftPoint(ttft: Record<string, Timed>[], ks: number[], f: number): Record<string, number> {
  const ms = (name: string): number => median(ks.map((k) => ttft[k]![name]?.ttftMs ?? NaN));
  const ratio = (base: string, name: string): number => r2(median(ks.map((k) => (ttft[k]![base]?.ttftMs ?? NaN) / (ttft[k]![name]?.ttftMs ?? NaN))));
  return {
    fraction: f,
    ttft_ms: ms(`join@${f}`),
    ttft_ratio_vs_full: ratio("full", `join@${f}`),
    ttft_ratio_vs_prefix_only: ratio("prefix", `join@${f}`),
  };
}

/** The curve over the prompts `pick` selects: per fraction TTFT (median) and quality (mean). */
function curve(ttft: Record<string, Timed>[], quality: PromptQuality[], pick: (k: number) => boolean): Record<string, unknown>[] {
  const ks = ttft.map((_, k) => k).filter(pick);
  return FRACTIONS.map((f) => {
    const q = ks.map((k) => quality[k]!.join[String(f)]!);
    return {
      ...ttftPoint(ttft, ks, f),
      agreement: r3(mean(q.map((x) => x.agreement))),
      agreement_min: r3(Math.min(...q.map((x) => x.agreement))),
      recomputed_share: r3(mean(q.map((x) => x.recomputed))),
      kl: r4(mean(q.map((x) => x.kl))),
    };
  });
}

function subset(
  ttft: Record<string, Timed>[],
  quality: PromptQuality[],
  prompts: RagPrompt[],
  pick: (k: number) => boolean,
): Record<string, unknown> & { curve: Record<string, unknown>[]; floor: Quality } {
  const ks = prompts.map((_, k) => k).filter(pick);
  const floor = ks.map((k) => quality[k]!.floor);
  return {
    ...ttftSubset(ttft, ks),
    floor: { agreement: r3(mean(floor.map((x) => x.agreement))), kl: r4(mean(floor.map((x) => x.kl))) },
    curve: curve(ttft, quality, pick),
  };
}

/** The TTFT side of a subset of prompts `ks`: full and prefix-only medians, what prefix-only reused. */
function ttftSubset(ttft: Record<string, Timed>[], ks: number[]): Record<string, unknown> {
  return {
    prompts: ks.length,
    ttft_full_ms: median(ks.map((k) => ttft[k]!.full?.ttftMs ?? NaN)),
    ttft_prefix_only_ms: median(ks.map((k) => ttft[k]!.prefix?.ttftMs ?? NaN)),
    prefix_only_cached_tokens: ks.map((k) => ttft[k]!.prefix?.cachedTokens ?? null),
  };
}

const RULE_CASE =
  "6 documents in a new order: the prompts of 6 documents, every document seen before in another place (every third prompt keeps the previous prompt's first document)";

/** bench/results/rag.json: the rule's case (6 documents) at the default fraction on top, the curves, every prompt. */
function results(
  run: Run,
  ttft: Record<string, Timed>[],
  startLoad: number,
): Record<string, unknown> & Record<"all_prompts" | "six_documents_new_order", { curve: unknown }> {
  const { docs, lengths, prompts, rows } = run;
  const six = (k: number): boolean => prompts[k]!.docs.length === 6;
  const all = subset(ttft, rows, prompts, () => true);
  const rule = subset(ttft, rows, prompts, six);
  const atDefault = rule.curve.find((c) => c.fraction === RAG_RECOMPUTE_DEFAULT) ?? {};
  const headline = (k: string): unknown => atDefault[k] ?? null;
  return {
    date: new Date().toISOString(),
    machine: `${cpus()[0]?.model ?? "cpu"} x${cpus().length}, ${THREADS} threads; load average ${startLoad} at the start, ${load()} at the end (another benchmark shared the machine)`,
    model: "gemma-3-270m-q4_k_m (the engine's default), CPU",
    corpus: {
      commit: WORKTREE ? "the working tree's files (--texts-from-worktree)" : CORPUS_AT,
      sources: CORPUS_SOURCES,
      documents: docs.length,
      tokens_min: Math.min(...lengths),
      tokens_max: Math.max(...lengths),
      tokens_mean: Math.round(mean(lengths)),
    },
    recompute_default: RAG_RECOMPUTE_DEFAULT,
    seed: Number(a.seed),
    quality_only: a["quality-only"],
    rule_case: RULE_CASE,
    documents: documentOutcomes, // per joining pod, over the timed prompts: from its cache, computed at request time
    rag_cache_bytes: RAG_CACHE_BYTES ? Number(RAG_CACHE_BYTES) : "engine default",
    ttft_ratio_vs_full: headline("ttft_ratio_vs_full"),
    ttft_ratio_vs_prefix_only: headline("ttft_ratio_vs_prefix_only"),
    agreement: headline("agreement"),
    kl: headline("kl"),
    floor: rule.floor,
    six_documents_new_order: rule,
    all_prompts: all,
    prompts: prompts.map((p, k) => ({
      docs: p.docs,
      tokens: rows[k]!.tokens,
      full_ms_in_process: rows[k]!.full_ms,
      floor: rows[k]!.floor,
      join: rows[k]!.join,
      ttft: ttft[k],
    })),
  };
}

interface Written {
  date: string;
  machine: string;
  corpus: unknown;
  seed?: number;
  quality_only?: boolean;
  prompts: { docs: number[]; tokens: number; full_ms_in_process: number; floor: Quality; join: PromptQuality["join"]; ttft: Record<string, Timed> }[];
}

/** --resummarise: the summary of an earlier run rebuilt from its per-prompt rows, its date and machine kept. */
async function resummarise(): Promise<void> {
  const old = JSON.parse(readFileSync(a.out, "utf8")) as Written & { quality?: string };
  if (typeof old.quality === "string") throw new Error(`${a.out} is a device run's (--model): it has no per-prompt quality to resummarise`);
  const run: Run = {
    docs: [],
    lengths: [],
    prompts: old.prompts.map((p) => ({ docs: p.docs, question: "" })),
    rows: old.prompts.map((p) => ({ tokens: p.tokens, full_ms: p.full_ms_in_process, floor: p.floor, join: p.join })),
  };
  const out = {
    ...results(
      run,
      old.prompts.map((p) => p.ttft),
      NaN,
    ),
    date: old.date,
    machine: old.machine,
    corpus: old.corpus,
    seed: old.seed,
    quality_only: old.quality_only,
    resummarised: new Date().toISOString(),
  };
  await writeFile(a.out, `${JSON.stringify(out, null, 2)}\n`);
}

const logCorpus = (docs: string[], lengths: number[]): void =>
  log(
    `corpus: ${docs.length} documents of ${Math.min(...lengths)}-${Math.max(...lengths)} tokens (mean ${Math.round(mean(lengths))}) from ${CORPUS_SOURCES.length} files ${WORKTREE ? "in the working tree" : `at ${CORPUS_AT.slice(0, 12)}`}`,
  );

/** The device run's results: the default mode's TTFT side, the corpus as the served model counts it, no quality. */
function deviceResults(
  run: { docs: string[]; lengths: number[]; prompts: RagPrompt[] },
  how: string,
  ttft: Record<string, Timed>[],
  startLoad: number,
): Record<"all_prompts" | "six_documents_new_order", { curve: Record<string, number>[] }> & Record<string, unknown> {
  const { docs, lengths, prompts } = run;
  const six = prompts.map((_, k) => k).filter((k) => prompts[k]!.docs.length === 6);
  const all = prompts.map((_, k) => k);
  const part = (ks: number[]): Record<string, unknown> & { curve: Record<string, number>[] } => ({
    ...ttftSubset(ttft, ks),
    curve: FRACTIONS.map((f) => ttftPoint(ttft, ks, f)),
  });
  const rule = part(six);
  const atDefault = rule.curve.find((c) => c.fraction === RAG_RECOMPUTE_DEFAULT);
  const gpu = gpuName();
  return {
    date: new Date().toISOString(),
    machine: `${gpu ? `${gpu}; ` : ""}${cpus()[0]?.model ?? "cpu"} x${cpus().length}; engine flags ${OWN_THREADS ? `--threads ${THREADS} ` : ""}${ENGINE_ARGS.join(" ")}; load average ${startLoad} at the start, ${load()} at the end`,
    model: `${a.model} (served by every engine; random weights)`,
    quality: "not measured: random-weight model (TTFT only; bench:rag without --model measures quality on the default model)",
    corpus: {
      commit: "the working tree's files (the device has no git history)",
      sources: CORPUS_SOURCES,
      documents: docs.length,
      tokens_min: Math.min(...lengths),
      tokens_max: Math.max(...lengths),
      tokens_mean: Math.round(mean(lengths)),
      tokens_counted_by: how,
    },
    recompute_default: RAG_RECOMPUTE_DEFAULT,
    seed: Number(a.seed),
    rule_case: RULE_CASE,
    documents: documentOutcomes, // per joining pod, over the timed prompts: from its cache, computed at request time
    rag_cache_bytes: RAG_CACHE_BYTES ? Number(RAG_CACHE_BYTES) : "engine default",
    ttft_ratio_vs_full: atDefault?.ttft_ratio_vs_full ?? null,
    ttft_ratio_vs_prefix_only: atDefault?.ttft_ratio_vs_prefix_only ?? null,
    six_documents_new_order: rule,
    all_prompts: part(all),
    prompts: prompts.map((p, k) => ({ docs: p.docs, tokens: ttft[k]!.full?.promptTokens ?? null, ttft: ttft[k] })),
  };
}

/**
 * Device mode (--model): the engines started first (the served model's tokenizer cuts the
 * corpus), then TTFT of every prompt on every configuration, as the default mode measures it.
 * Writes the TTFT side of the default mode's results, and that quality was not measured.
 */
async function device(): Promise<void> {
  if (a["quality-only"]) throw new Error("--quality-only measures quality in-process on the default model; --model (device mode) measures TTFT alone");
  const startLoad = load();
  const { run, how, ttft } = await withEngines(async (servers) => {
    const counter = await httpTokenCounter(servers.get("full")!.url, log);
    const docs = await corpusDocumentsAsync(counter.count, readCorpus);
    const lengths: number[] = [];
    for (const d of docs) lengths.push(await counter.count(d));
    logCorpus(docs, lengths);
    const prompts = drawPrompts(docs.length, SIZES, Number(a.seed));
    return { run: { docs, lengths, prompts }, how: counter.how, ttft: await timeAll(servers, docs, prompts) };
  });
  await writeOut(deviceResults(run, how, ttft, startLoad));
}

/** Writes --out and logs both curves. */
async function writeOut(out: { all_prompts: { curve: unknown }; six_documents_new_order: { curve: unknown } }): Promise<void> {
  await mkdir(dirname(a.out), { recursive: true });
  await writeFile(a.out, `${JSON.stringify(out, null, 2)}\n`);
  for (const [name, part] of [
    ["all", out.all_prompts],
    ["6 docs", out.six_documents_new_order],
  ] as const)
    for (const c of part.curve as unknown[]) log(`${name}: ${JSON.stringify(c)}`);
}

async function main(): Promise<void> {
  if (a.resummarise) return resummarise();
  if (DEVICE) return device();
  const startLoad = load();
  const model = await ensureDefaultModel();
  const quality: Run = await (async () => {
    await using probe = await JoinProbe.open(model, THREADS);
    const lead = probe.tokenize("").length;
    const docs = corpusDocuments((t) => probe.tokenize(t).length - lead, readCorpus);
    const lengths = docs.map((d) => probe.tokenize(d).length - lead);
    logCorpus(docs, lengths);
    const prompts = drawPrompts(docs.length, SIZES, Number(a.seed));
    return { docs, lengths, prompts, rows: await measureQuality(probe, docs, prompts) };
  })();
  const ttft = a["quality-only"] ? quality.prompts.map(() => ({})) : await measureTtft(quality.docs, quality.prompts);
  await writeOut(results(quality, ttft, startLoad));
}

await main();
