/**
 * npm run bench:rag [-- --requests N --out FILE]: RAG documents through the product path (issue 26).
 * Two engine processes serve the real model (Gemma 3 270M, CPU) over HTTP with the unified KV:
 * one joins documents from their own KV (--rag-recompute 0.5, the default), the other computes
 * them in place (--rag-recompute 1: what a prompt gets from prefix reuse alone). Each sees the same
 * warm-up (every document once, so each one's own KV is cached on the joining pod), then the same
 * requests: 6 of 12 documents (paragraph groups of this repository's docs, 1,100-2,000 characters,
 * ~300-500 tokens; bench/rag-probe.ts cuts the same files by tokens) in a new random order, a question, 1 token, streamed; TTFT from the client. A new
 * first document each time, so prefix reuse has only the BOS. Quality is the in-process probe's
 * (bench/rag-probe.ts, BENCHMARKS.md); this measures time. Writes bench/results/rag.json.
 *
 *   --engine FILE        the engine program, e.g. the esbuild bundle on the GPU machine (default: tsx engine/main.ts)
 *   --model FILE         GGUF (default: the engine's default model)
 *   --engine-args="..."  more engine flags (the GPU machine: --gpu-layers all --flash-attention)
 * On the GPU machine: `bash bench/gpu/http-device.sh rag` (TTFT only: its model has random weights).
 */
import { readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { cpus, loadavg } from "node:os";
import { dirname } from "node:path";
import { parseArgs } from "node:util";
import { startServer, type RunningServer } from "./http/servers.ts";

const { values: a } = parseArgs({
  options: {
    requests: { type: "string", default: "8" },
    out: { type: "string", default: "bench/results/rag.json" },
    engine: { type: "string" },
    model: { type: "string" },
    "engine-args": { type: "string", default: "" },
  },
});
const N = Number(a.requests);

/** Paragraph groups of the repository's docs, ~300-500 tokens each (~4 characters a token). */
function corpus(): string[] {
  const text = ["docs/kv-store.md", "docs/api.md", "README.md", "engine/README.md", "docs/reference.md"].map((f) => readFileSync(f, "utf8")).join("\n\n");
  const docs: string[] = [];
  let cur = "";
  for (const p of text.split(/\n\n+/).filter((x) => x.length > 200)) {
    cur += `${p}\n\n`;
    if (cur.length >= 1100) {
      docs.push(cur.slice(0, 2000).trim());
      cur = "";
    }
    if (docs.length >= 12) break;
  }
  return docs;
}

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32;
}

async function engine(name: string, port: number, extra: string[]): Promise<RunningServer> {
  const program = a.engine ? [a.engine] : ["--import", "tsx", "engine/main.ts"];
  const model = a.model ? ["--model", a.model] : [];
  const more = a["engine-args"].split(/\s+/).filter(Boolean);
  const args = [...program, "--role", "aggregated", ...model, "--kv-unified", "on", "--parallel", "2", "--ctx-size", "8192", "--threads", "2", ...more, "--host", "127.0.0.1", "--port", String(port), ...extra];
  return startServer(name, process.execPath, args, { port, readyPath: "/ready", timeoutMs: 600_000 });
}

interface Timed {
  ttftMs: number;
  promptTokens: number;
  cachedTokens: number;
}

async function ask(url: string, documents: string[], question: string): Promise<Timed> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt: question, documents, max_tokens: 1, temperature: 0, stream: true, stream_options: { include_usage: true } }),
  });
  if (!res.ok || !res.body) throw new Error(`status ${res.status}: ${await res.text()}`);
  let ttftMs = NaN;
  let text = "";
  for await (const chunk of res.body) {
    if (Number.isNaN(ttftMs)) ttftMs = performance.now() - t0;
    text += Buffer.from(chunk as Uint8Array).toString();
  }
  const usage = /"usage":\{"prompt_tokens":(\d+).*?"cached_tokens":(\d+)/.exec(text);
  return { ttftMs, promptTokens: Number(usage?.[1] ?? NaN), cachedTokens: Number(usage?.[2] ?? NaN) };
}

const median = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)] ?? NaN;

type Row = { order: number[]; join: Timed; full: Timed };

/** Quality at the default, from the in-process probe; only on the real model (the GPU machine's has random weights). */
function probeQuality(): { agreement: number | null; kl: number | null; quality_source?: string } {
  if (a.model) return { agreement: null, kl: null };
  const probe = JSON.parse(readFileSync("bench/results/rag-probe-suffix.json", "utf8")) as { runs: { results: Record<string, { agreement: number; kl: number }> }[] };
  const atDefault = probe.runs.map((x) => x.results["suffix@0.5"]).find(Boolean);
  return {
    agreement: atDefault?.agreement ?? null,
    kl: atDefault?.kl ?? null,
    quality_source: "bench/results/rag-probe-suffix.json suffix@0.5 (in-process probe, same model, the join's recompute-the-last-half rule)",
  };
}

function summary(rows: Row[]): Record<string, unknown> & { ttft_full_ms: number; ttft_join_ms: number; ttft_ratio_vs_full: number } {
  const fullMs = median(rows.map((x) => x.full.ttftMs));
  const joinMs = median(rows.map((x) => x.join.ttftMs));
  const quality = probeQuality();
  return {
    date: new Date().toISOString(),
    machine: `${cpus()[0]?.model ?? "cpu"} x${cpus().length}, load average ${loadavg()[0]!.toFixed(1)}`,
    model: a.model?.split("/").pop() ?? "gemma-3-270m-q4_k_m (the engine's default)",
    engine_args: a["engine-args"],
    documents_per_prompt: 6,
    recompute_default: 0.5,
    requests: N,
    ttft_full_ms: Math.round(fullMs),
    ttft_join_ms: Math.round(joinMs),
    ttft_ratio_vs_full: Math.round((fullMs / joinMs) * 100) / 100,
    ...quality,
    rows,
  };
}

async function main(): Promise<void> {
  const docs = corpus();
  const question = "\n\nQuestion: what do the documents above say about the KV cache, and where is it stored? Answer:";
  await using join = await engine("join", 24_101, []);
  await using full = await engine("full", 24_102, ["--rag-recompute", "1"]);
  // Warm-up: every document once as a first document (the joining pod keeps each one's own KV).
  for (const [i, d] of docs.entries()) {
    for (const url of [join.url, full.url]) await ask(url, [d, docs[(i + 1) % docs.length]!], question);
  }
  const r = rng(7);
  const rows: Row[] = [];
  for (let k = 0; k < N; k++) {
    const order = [...docs.keys()].sort(() => r() - 0.5).slice(0, 6);
    const documents = order.map((i) => docs[i]!);
    const q = `${question} (${k})`;
    const row = { order, full: await ask(full.url, documents, q), join: await ask(join.url, documents, q) };
    rows.push(row);
    process.stderr.write(`bench:rag: ${k}: ${row.join.promptTokens} tokens; full ${row.full.ttftMs.toFixed(0)} ms (cached ${row.full.cachedTokens}), join ${row.join.ttftMs.toFixed(0)} ms (cached ${row.join.cachedTokens})\n`);
  }
  const out = summary(rows);
  await mkdir(dirname(a.out), { recursive: true });
  await writeFile(a.out, `${JSON.stringify(out, null, 2)}\n`);
  process.stderr.write(`bench:rag: TTFT median full ${out.ttft_full_ms} ms, join ${out.ttft_join_ms} ms: ${out.ttft_ratio_vs_full}x\n`);
}

await main();
