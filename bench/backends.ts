/**
 * `npm run bench:backends`: the engine's two model runtimes on CPU, through its HTTP API —
 * `--backend llama` (node-llama-cpp, the baseline) and `--backend native` (engine/native + the
 * StepScheduler). Each runs as its own `npm run engine` process with the same model (the real
 * default, Gemma 3 270M Q4_K_M), --parallel, --ctx-size and --threads. C clients in a closed
 * loop (each sends its next streamed greedy completion when the last one has ended) at C = 1, 4,
 * 8; tokens/s counts what the engine generated (llmfleet_generated_tokens_total) over the level's
 * wall time, TTFT is the client's (request sent → first data event). Both engines stay up for the
 * whole run and the levels alternate between them in ABBA order over ROUNDS rounds, so a change
 * in the shared machine's load falls on both. Writes bench/results/backends.json.
 *
 * BENCH_THREADS (default: all CPUs), BENCH_ROUNDS (default 2).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { availableParallelism, cpus, loadavg, totalmem } from "node:os";
import { ensureDefaultModel } from "../engine/model/fetch.ts";
import { completionText, metricValue } from "../testing/engine.ts";
import { eventually } from "../testing/eventually.ts";
import { noOptions } from "./cli.ts";

noOptions();

const BACKENDS = ["llama", "native"] as const;
type Backend = (typeof BACKENDS)[number];
const LEVELS = [1, 4, 8];
const MAX_TOKENS = 64;
const PARALLEL = 8;
const CTX_SIZE = 512;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const threads = Number(process.env.BENCH_THREADS ?? availableParallelism());
const PORTS: Record<Backend, number> = { llama: 18190, native: 18191 };
const pids: Partial<Record<Backend, number>> = {};
const GENERATED = "llmfleet_generated_tokens_total";

/** Requests each client sends at concurrency c: about 4 s of decoding per client at least. */
const requestsPerClient = (c: number): number => (c === 1 ? 4 : 3);

// Distinct openings: neither backend can reuse another request's prefix (native shares prefixes across sequences).
const prompt = (i: number): string =>
  `${i} lighthouses stood along the northern coast. Write the log of the keeper of lighthouse number ${i} during the storm of that winter, hour by hour:`;

interface Measurement {
  backend: Backend;
  round: number;
  concurrency: number;
  requests: number;
  tokens: number;
  seconds: number;
  tokensPerSecond: number;
  ttftP50Ms: number;
  ttftsMs: number[];
  /** CPU time the engine process used per generated token (user + system): less sensitive to other load than wall time. */
  cpuMsPerToken: number;
  loadAverage1m: number;
}

/** User + system CPU seconds of a process so far (/proc/PID/stat fields 14 and 15, in clock ticks of 1/100 s). */
async function cpuSeconds(pid: number): Promise<number> {
  const fields = (await readFile(`/proc/${pid}/stat`, "utf8")).split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

async function streamedTtftMs(url: string, i: number): Promise<number> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt: prompt(i), max_tokens: MAX_TOKENS, temperature: 0, stream: true }),
  });
  if (res.status !== 200) throw new Error(`status ${res.status}: ${await res.text()}`);
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let first = NaN;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return first;
    if (Number.isNaN(first) && decoder.decode(value, { stream: true }).includes("data: {")) first = performance.now() - t0;
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function level(backend: Backend, round: number, concurrency: number): Promise<Measurement> {
  const url = `http://127.0.0.1:${PORTS[backend]}`;
  const perClient = requestsPerClient(concurrency);
  const before = await metricValue(url, GENERATED);
  const cpuBefore = await cpuSeconds(pids[backend]!);
  const t0 = performance.now();
  const ttfts = await Promise.all(
    Array.from({ length: concurrency }, async (_, client) => {
      const mine: number[] = [];
      for (let r = 0; r < perClient; r++) mine.push(await streamedTtftMs(url, 1000 * round + 100 * concurrency + client * perClient + r));
      return mine;
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  const cpuMsPerToken = ((await cpuSeconds(pids[backend]!)) - cpuBefore) * 1000;
  const tokens = (await metricValue(url, GENERATED)) - before;
  const flat = ttfts.flat();
  const m = {
    ...{ backend, round, concurrency, requests: flat.length, tokens, seconds, tokensPerSecond: tokens / seconds },
    ...{ ttftP50Ms: median(flat), ttftsMs: flat, cpuMsPerToken: cpuMsPerToken / tokens, loadAverage1m: loadavg()[0]! },
  };
  const line = `${m.tokensPerSecond.toFixed(1)} tok/s, TTFT p50 ${m.ttftP50Ms.toFixed(0)} ms, ${m.cpuMsPerToken.toFixed(1)} CPU ms/token`;
  console.log(`round ${round} ${backend.padEnd(6)} c=${concurrency}: ${line} (load ${m.loadAverage1m.toFixed(2)})`);
  return m;
}

/** Starts one engine (kept in `children` for the caller to stop); resolves with its seconds to /ready. */
async function startEngine(backend: Backend, model: string, children: ChildProcess[]): Promise<{ startSeconds: number }> {
  const args = [
    "--role",
    "aggregated",
    "--backend",
    backend,
    "--model",
    model,
    "--threads",
    String(threads),
    "--ctx-size",
    String(CTX_SIZE),
    "--parallel",
    String(PARALLEL),
  ];
  const t0 = performance.now();
  const child = spawn(process.execPath, ["--import", "tsx", "engine/main.ts", "--host", "127.0.0.1", "--port", String(PORTS[backend]), ...args], {
    stdio: ["ignore", "ignore", "inherit"],
  });
  children.push(child);
  pids[backend] = child.pid;
  const ready = async (): Promise<void> => {
    const r = await fetch(`http://127.0.0.1:${PORTS[backend]}/ready`);
    if (!r.ok) throw new Error(`engine (${backend}) not ready: ${r.status}`);
  };
  await eventually(ready, { timeoutMs: 600_000, message: `engine --backend ${backend} ready` });
  return { startSeconds: (performance.now() - t0) / 1000 };
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  await new Promise((resolve) => (child.once("exit", resolve), child.kill("SIGTERM")));
}

/** ABBA: round 0 runs llama first, round 1 native first, and so on. */
const order = (round: number): Backend[] => (round % 2 === 0 ? [...BACKENDS] : [...BACKENDS].reverse());

async function runRounds(): Promise<Measurement[]> {
  const all: Measurement[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    for (const c of LEVELS) for (const b of order(round)) all.push(await level(b, round, c));
  }
  return all;
}

function summarize(all: Measurement[]): object[] {
  return LEVELS.map((concurrency) => {
    const of = (b: Backend): Measurement[] => all.filter((m) => m.backend === b && m.concurrency === concurrency);
    const tps = (b: Backend): number => of(b).reduce((a, m) => a + m.tokens, 0) / of(b).reduce((a, m) => a + m.seconds, 0);
    const ttft = (b: Backend): number => median(of(b).flatMap((m) => m.ttftsMs));
    const cpu = (b: Backend): number => of(b).reduce((a, m) => a + m.cpuMsPerToken * m.tokens, 0) / of(b).reduce((a, m) => a + m.tokens, 0);
    const perRound = of("native").map((n, i) => n.tokensPerSecond / of("llama")[i]!.tokensPerSecond);
    return {
      concurrency,
      llama: { tokensPerSecond: tps("llama"), ttftP50Ms: ttft("llama"), cpuMsPerToken: cpu("llama") },
      native: { tokensPerSecond: tps("native"), ttftP50Ms: ttft("native"), cpuMsPerToken: cpu("native") },
      ratioNativeToLlama: {
        ...{ tokensPerSecond: tps("native") / tps("llama"), ttftP50: ttft("native") / ttft("llama"), cpuPerToken: cpu("native") / cpu("llama") },
        tokensPerSecondByRound: perRound,
      },
    };
  });
}

const model = await ensureDefaultModel();
const loadBefore = loadavg();
const children: ChildProcess[] = [];
try {
  const engines = { llama: await startEngine("llama", model, children), native: await startEngine("native", model, children) };
  // Warm-up, and a check that both serve the same greedy answer (same work per request).
  const texts = await Promise.all(BACKENDS.map((b) => completionText(`http://127.0.0.1:${PORTS[b]}`, { prompt: prompt(7), max_tokens: MAX_TOKENS })));
  const all = await runRounds();
  const summary = summarize(all);
  const out = {
    date: new Date().toISOString(),
    machine: {
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model,
      memoryGiB: Math.round(totalmem() / 2 ** 30),
      loadAverageBefore: loadBefore,
      loadAverageAfter: loadavg(),
    },
    model,
    setup: {
      threads,
      parallel: PARALLEL,
      ctxSize: CTX_SIZE,
      maxTokens: MAX_TOKENS,
      rounds: ROUNDS,
      levels: LEVELS,
      note: "one engine process per backend on loopback, both up for the whole run, levels in ABBA order",
    },
    baseline: "llama",
    engineStartSeconds: { llama: engines.llama.startSeconds, native: engines.native.startSeconds },
    sameGreedyText: texts[0] === texts[1],
    summary,
    measurements: all,
  };
  for (const s of summary as { concurrency: number; ratioNativeToLlama: { tokensPerSecond: number; ttftP50: number; cpuPerToken: number } }[]) {
    const r = s.ratioNativeToLlama;
    console.log(
      `c=${s.concurrency}: native/llama tok/s ${r.tokensPerSecond.toFixed(2)}x, TTFT p50 ${r.ttftP50.toFixed(2)}x, CPU per token ${r.cpuPerToken.toFixed(2)}x`,
    );
  }
  await writeFile(new URL("./results/backends.json", import.meta.url), `${JSON.stringify(out, null, 2)}\n`);
} finally {
  await Promise.all(children.map(stop));
}
