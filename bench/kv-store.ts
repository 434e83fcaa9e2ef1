/**
 * `npm run bench:kv-store`: the KV store path as users run it, v1/HTTP against v2 blocks over the
 * native TCP stream, in one run. For each path: a kvstore process and two aggregated engine
 * processes (the engine's own program, `engine/main.ts`, each its own process) serving HTTP; the
 * real model (gemma-3-270m Q4_K_M) on CPU; requests over HTTP, non-streamed, max_tokens 1.
 *
 *   v1-http   --kv-format v1 --kv-transport http   (one blob per entry, JavaScript HTTP both ways: the baseline)
 *   v2-http   --kv-format v2 --kv-transport http   (blocks, deduplicated, streamed over HTTP)
 *   v2-tcp    --kv-format v2 --kv-transport auto   (blocks over the P/D hand-off's native TCP stream)
 *
 * Per context length, median of REPEATS:
 *   miss_ms              a new context on engine A (the store misses; A's write-back starts after the answer)
 *   during_writeback_ms  another new context on A right after (A's write-back in flight)
 *   writeback_delay_ms   during_writeback_ms - miss_ms
 *   load_ms              engine B's load of A's context from the store (lookup, transfer, checks, import:
 *                        B's llmfleet_kv_store_load_seconds), and store_hit_ms the whole request
 *   load_gb_s            the entry's stored bytes over load_ms
 *   extend_stored_bytes  bytes the store grew by when A's context grew by EXTEND tokens (v2 sends only new blocks)
 * Ratios: v1-http / v2-tcp (and v1-http / v2-http). Writes bench/results/kv-store.json (BENCH_OUT
 * names another file; BENCH_CONTEXTS, BENCH_REPEATS, BENCH_PATHS choose the rows) with the
 * machine's load average (the figures are only comparable within one run on a shared machine).
 */
import { mkdir, writeFile } from "node:fs/promises";
import { availableParallelism, cpus, loadavg } from "node:os";
import { ensureDefaultModel } from "../engine/model/fetch.ts";
import { benchPromptOfTokens, benchWordsPerToken } from "./http/load-client.ts";
import { startServer, type RunningServer } from "./http/servers.ts";
import { noOptions } from "./cli.ts";

noOptions();

const CONTEXTS = (process.env.BENCH_CONTEXTS ?? "1024,4096").split(",").map(Number);
const REPEATS = Number(process.env.BENCH_REPEATS ?? 3);
const EXTEND = 512;
const THREADS = Number(process.env.BENCH_THREADS ?? availableParallelism());
const PATHS = (process.env.BENCH_PATHS ?? "v1-http,v2-http,v2-tcp").split(",");
const QUESTION = " question: which word follows?";
const LOG_DIR = "bench/results/logs";

let nextPort = 18_600;
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const round = (x: number, d = 1): number => Math.round(x * 10 ** d) / 10 ** d;

async function ask(url: string, prompt: string): Promise<{ ms: number; cached: number }> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt, max_tokens: 1, temperature: 0 }),
  });
  const body = (await res.json()) as { usage?: { prompt_tokens_details?: { cached_tokens?: number } }; error?: unknown };
  const ms = performance.now() - t0;
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${JSON.stringify(body.error)}`);
  return { ms, cached: body.usage?.prompt_tokens_details?.cached_tokens ?? 0 };
}

async function metricSum(url: string, name: string, match = ""): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return text
    .split("\n")
    .filter((l) => (l.startsWith(`${name}{`) || l.startsWith(`${name} `)) && l.includes(match))
    .reduce((s, l) => s + Number(l.split(" ").pop()), 0);
}

const writes = (url: string): Promise<number> => metricSum(url, "llmfleet_kv_store_writes_total");

/** Waits until `expected` more write-backs than `before` have ended on the pod (stored, error or skipped). */
async function writesDone(url: string, before: number, expected: number): Promise<void> {
  const deadline = Date.now() + 180_000;
  while ((await writes(url)) < before + expected) {
    if (Date.now() > deadline) throw new Error(`${url}: ${expected} write-back(s) did not end within 180 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function start(name: string, args: string[]): Promise<RunningServer> {
  const port = nextPort;
  nextPort += 2; // the next port is the pod's --kv-port (default --port + 1)
  return startServer(name, process.execPath, ["--import", "tsx", "engine/main.ts", ...args, "--host", "127.0.0.1", "--port", String(port)], {
    port,
    readyPath: "/ready",
    logFile: `${LOG_DIR}/kv-store-${name}.log`,
  });
}

let seed = 1;
let wordsPerToken = 1;
/** A new text of a little more than `tokens` tokens: its stored (block-aligned) prefix is exactly `tokens` for multiples of 256. */
const context = (tokens: number): string => benchPromptOfTokens(9_000_000 + seed++, tokens + 96, wordsPerToken);

interface Row {
  miss_ms: number;
  during_writeback_ms: number;
  writeback_delay_ms: number;
  store_hit_ms: number;
  load_ms: number;
  load_gb_s: number;
  cached_tokens: number;
  entry_bytes: number;
  extend_stored_bytes: number;
}

async function rowsFor(a: string, b: string, store: string, tokens: number): Promise<Row> {
  const miss: number[] = [];
  const during: number[] = [];
  const hit: number[] = [];
  const load: number[] = [];
  const cached: number[] = [];
  const entry: number[] = [];
  const extendBytes: number[] = [];
  for (let r = 0; r < REPEATS; r++) {
    const ca = context(tokens);
    const storeBefore = await metricSum(store, "llmfleet_kv_bytes");
    const aBefore = await writes(a);
    miss.push((await ask(a, ca)).ms);
    during.push((await ask(a, context(tokens))).ms);
    await writesDone(a, aBefore, 2);
    // Both contexts are stored now; the entry of `ca` is about half of what the store grew by.
    entry.push((await metricSum(store, "llmfleet_kv_bytes")) - storeBefore);
    const loadBefore = await metricSum(b, "llmfleet_kv_store_load_seconds_sum");
    const got = await ask(b, ca + QUESTION);
    hit.push(got.ms);
    cached.push(got.cached);
    load.push(((await metricSum(b, "llmfleet_kv_store_load_seconds_sum")) - loadBefore) * 1000);
    // B stores nothing: the question does not complete another block.
    const grownBefore = await metricSum(store, "llmfleet_kv_bytes");
    const extendBefore = await writes(a);
    await ask(a, ca + context(EXTEND));
    await writesDone(a, extendBefore, 1);
    extendBytes.push((await metricSum(store, "llmfleet_kv_bytes")) - grownBefore);
  }
  const entryBytes = median(entry) / 2;
  const loadMs = median(load);
  return {
    miss_ms: round(median(miss)),
    during_writeback_ms: round(median(during)),
    writeback_delay_ms: round(median(during) - median(miss)),
    store_hit_ms: round(median(hit)),
    load_ms: round(loadMs),
    load_gb_s: round(entryBytes / (loadMs / 1000) / 1e9, 3),
    cached_tokens: median(cached),
    entry_bytes: Math.round(entryBytes),
    extend_stored_bytes: Math.round(median(extendBytes)),
  };
}

async function runPath(model: string, path: string): Promise<Record<string, Row>> {
  const [format, transport] = path.split("-") as ["v1" | "v2", "http" | "tcp"];
  const kvTransport = transport === "tcp" ? "auto" : "http";
  const podArgs = ["--role", "aggregated", "--model", model, "--threads", String(THREADS), "--ctx-size", String(2 * (Math.max(...CONTEXTS) + EXTEND + 128)), "--parallel", "2"];
  await using store = await start(`${path}-store`, ["--role", "kvstore", "--codec", "none", "--kv-format", format, "--kv-transport", kvTransport, "--tier", "name=ram,medium=memory,capacity=16Gi"]);
  const withStore = [...podArgs, "--kv-store", store.url, "--kv-transport", kvTransport, "--kv-store-timeout-ms", "60000"];
  await using a = await start(`${path}-a`, withStore);
  await using b = await start(`${path}-b`, withStore);
  wordsPerToken = await benchWordsPerToken(a.url);
  // Warm-up, store path included (v1's codec worker starts on first use): A writes, B loads.
  const warm = context(256);
  const before = await writes(a.url);
  await ask(a.url, warm);
  await writesDone(a.url, before, 1);
  await ask(b.url, warm + QUESTION);
  const out: Record<string, Row> = {};
  for (const tokens of CONTEXTS) {
    out[String(tokens)] = await rowsFor(a.url, b.url, store.url, tokens);
    process.stderr.write(`bench:kv-store: ${path} ${tokens}: ${JSON.stringify(out[String(tokens)])}\n`);
  }
  const alive = [store, a, b].map((s) => s.exited()).filter(Boolean);
  if (alive.length > 0) throw new Error(`${path}: a process died: ${alive.join(", ")}`);
  return out;
}

async function main(): Promise<void> {
  await mkdir(LOG_DIR, { recursive: true });
  const model = await ensureDefaultModel();
  const loadBefore = loadavg();
  const paths: Record<string, Record<string, Row>> = {};
  for (const path of PATHS) paths[path] = await runPath(model, path);
  const ratios: Record<string, Record<string, number | null>> = {};
  const base = paths["v1-http"];
  for (const tokens of CONTEXTS) {
    const k = String(tokens);
    const r = (path: string, f: (x: Row) => number): number | null => (base && paths[path] ? round(f(base[k]!) / Math.max(1e-9, f(paths[path][k]!)), 2) : null);
    ratios[k] = {
      load_v1http_over_v2tcp: r("v2-tcp", (x) => x.load_ms),
      load_v1http_over_v2http: r("v2-http", (x) => x.load_ms),
      store_hit_v1http_over_v2tcp: r("v2-tcp", (x) => x.store_hit_ms),
      extend_bytes_v1_over_v2: r("v2-tcp", (x) => x.extend_stored_bytes),
    };
  }
  const out = {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? "unknown", threads: THREADS, loadavgBefore: loadBefore, loadavgAfter: loadavg() },
    model: "gemma-3-270m Q4_K_M",
    codec: "none",
    blockTokens: 256,
    repeats: REPEATS,
    extendTokens: EXTEND,
    paths,
    ratios,
  };
  await writeFile(new URL(`./results/${process.env.BENCH_OUT ?? "kv-store"}.json`, import.meta.url), `${JSON.stringify(out, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify({ ratios, loadavg: out.machine.loadavgAfter }, null, 2)}\n`);
}

await main();
