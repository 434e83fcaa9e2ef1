/**
 * `npm run bench:pd`: disaggregated (router + prefill + decode) vs aggregated, real default
 * model, loopback, each pod its own process started with `npm run engine` flags (pods in one
 * process would share node-llama-cpp's thread budget and serialise). TTFT is measured at the client on streamed requests;
 * throughput is generated tokens per second with CONCURRENCY requests in flight. Each mode gets
 * the same llama.cpp thread count per pod. Writes bench/results/pd.json.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { availableParallelism, cpus } from "node:os";
import { ensureDefaultModel } from "../engine/model/fetch.ts";
import { eventually } from "../testing/eventually.ts";

const REQUESTS = 8;
const CONCURRENCY = 4;
const MAX_TOKENS = 32;
const threads = Number(process.env.BENCH_THREADS ?? availableParallelism());
const filler = "The lighthouse stood on the rocks above the harbour, and every night its keeper climbed the stairs. ".repeat(6);

interface Sample {
  ttftMs: number;
  tokens: number;
}

async function streamed(url: string, i: number): Promise<Sample> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt: `Story ${i}. ${filler}`, max_tokens: MAX_TOKENS, temperature: 0, stream: true }),
  });
  const reader = res.body!.getReader();
  let ttftMs = NaN;
  let tokens = 0;
  const decoder = new TextDecoder();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    const n = decoder.decode(value, { stream: true }).split("data: {").length - 1;
    if (n > 0 && Number.isNaN(ttftMs)) ttftMs = performance.now() - t0;
    tokens += n;
  }
  return { ttftMs, tokens: tokens - 1 }; // the last chunk only carries finish_reason
}

async function run(url: string): Promise<{ ttftP50Ms: number; ttftMeanMs: number; tokensPerSecond: number }> {
  const sequential: Sample[] = [];
  for (let i = 0; i < REQUESTS; i++) sequential.push(await streamed(url, i));
  const ttfts = sequential.map((s) => s.ttftMs).sort((a, b) => a - b);
  const t0 = performance.now();
  const batches = await Promise.all(
    Array.from({ length: CONCURRENCY }, async (_, w) => {
      let tokens = 0;
      for (let i = w; i < REQUESTS; i += CONCURRENCY) tokens += (await streamed(url, 1000 + i)).tokens;
      return tokens;
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  return {
    ttftP50Ms: ttfts[Math.floor(ttfts.length / 2)]!,
    ttftMeanMs: ttfts.reduce((a, b) => a + b, 0) / ttfts.length,
    tokensPerSecond: batches.reduce((a, b) => a + b, 0) / seconds,
  };
}

const model = await ensureDefaultModel();
const podArgs = ["--model", model, "--threads", String(threads), "--ctx-size", "512", "--parallel", String(CONCURRENCY)];

async function startEngine(port: number, args: string[]): Promise<ChildProcess> {
  const child = spawn(process.execPath, ["--import", "tsx", "engine/main.ts", "--host", "127.0.0.1", "--port", String(port), ...args], { stdio: ["ignore", "ignore", "inherit"] });
  await eventually(
    async () => {
      const res = await fetch(`http://127.0.0.1:${port}/ready`);
      if (!res.ok) throw new Error(`/ready answered ${res.status}`);
    },
    { timeoutMs: 120_000, message: `engine on port ${port} ready` },
  );
  return child;
}

async function stop(children: ChildProcess[]): Promise<void> {
  await Promise.all(children.map((c) => new Promise((resolve) => (c.once("exit", resolve), c.kill("SIGTERM")))));
}

const agg = await startEngine(18180, ["--role", "aggregated", ...podArgs]);
const aggregated = await run("http://127.0.0.1:18180").finally(() => stop([agg]));

const decode = await startEngine(18182, ["--role", "decode", ...podArgs]);
const prefill = await startEngine(18181, ["--role", "prefill", "--decode", "http://127.0.0.1:18182", ...podArgs]);
const router = await startEngine(18183, ["--role", "router", "--prefill", "http://127.0.0.1:18181", "--decode", "http://127.0.0.1:18182"]);
const disaggregated = await run("http://127.0.0.1:18183");
const handoff = await (await fetch("http://127.0.0.1:18181/metrics")).text();
await stop([router, prefill, decode]);

const bytes = /llmfleet_kv_handoff_bytes_sum\{role="prefill"\} (\S+)/.exec(handoff)?.[1];
const count = /llmfleet_kv_handoff_bytes_count\{role="prefill"\} (\S+)/.exec(handoff)?.[1];
const sendSum = /llmfleet_kv_handoff_seconds_sum\{role="prefill",stage="send"\} (\S+)/.exec(handoff)?.[1];
const out = {
  date: new Date().toISOString(),
  machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model, threadsPerPod: threads },
  model,
  setup: { requests: REQUESTS, concurrency: CONCURRENCY, maxTokens: MAX_TOKENS, note: "one process per pod on loopback, all sharing the same CPUs" },
  aggregated,
  disaggregated,
  ratios: {
    ttftP50: disaggregated.ttftP50Ms / aggregated.ttftP50Ms,
    throughput: disaggregated.tokensPerSecond / aggregated.tokensPerSecond,
  },
  handoff: { meanBytes: Number(bytes) / Number(count), meanSendMs: (Number(sendSum) / Number(count)) * 1000 },
};
console.log(JSON.stringify(out, null, 2));
console.log(
  `disaggregated/aggregated: TTFT p50 ${out.ratios.ttftP50.toFixed(2)}x (${disaggregated.ttftP50Ms.toFixed(0)} vs ${aggregated.ttftP50Ms.toFixed(0)} ms), ` +
    `throughput ${out.ratios.throughput.toFixed(2)}x (${disaggregated.tokensPerSecond.toFixed(1)} vs ${aggregated.tokensPerSecond.toFixed(1)} tok/s)`,
);
await writeFile(new URL("./results/pd.json", import.meta.url), `${JSON.stringify(out, null, 2)}\n`);
