/**
 * `npm run bench:pd`: disaggregated (router + prefill + decode) vs aggregated, real default
 * model, loopback, each pod its own process started with `npm run engine` flags (pods in one
 * process would share node-llama-cpp's thread budget and serialise). TTFT is measured at the client on streamed requests;
 * throughput is generated tokens per second with CONCURRENCY requests in flight. Each mode gets
 * the same llama.cpp thread count per pod. P/D runs once per hand-off mechanism (--kv-transport
 * tcp: the native TCP stream; http: the LFKV stream over HTTP, the earlier path). Transfer: long
 * prompts (~1.5K tokens, a ~28 MB state on the default model), answer of 1 token, one at a time;
 * GB/s is the prefill pod's state bytes over its send seconds (end of prefill to "staged" on the
 * decode pod), the difference of its metrics across that phase. Writes bench/results/pd.json.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { availableParallelism, cpus, loadavg } from "node:os";
import { ensureDefaultModel } from "../engine/model/fetch.ts";
import { eventually } from "../testing/eventually.ts";
import { noOptions } from "./cli.ts";

noOptions();

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
const podArgs = ["--model", model, "--threads", String(threads), "--ctx-size", "2048", "--parallel", String(CONCURRENCY)];
const LONG_PROMPTS = 3;

function metricSum(text: string, name: string, labels: Record<string, string>): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) sum += Number(line.split(" ").pop());
  }
  return sum;
}

async function handoffTotals(prefillUrl: string): Promise<{ bytes: number; sendSeconds: number; count: number }> {
  const text = await (await fetch(`${prefillUrl}/metrics`)).text();
  return {
    bytes: metricSum(text, "llmfleet_kv_handoff_bytes_sum", {}),
    count: metricSum(text, "llmfleet_kv_handoff_bytes_count", {}),
    sendSeconds: metricSum(text, "llmfleet_kv_handoff_seconds_sum", { stage: "send" }),
  };
}

/** Long prompts one at a time through the router; the prefill pod's hand-off bytes and send time over them. */
async function transfer(routerUrl: string, prefillUrl: string): Promise<{ handoffs: number; meanBytes: number; meanSendMs: number; gbPerSecond: number }> {
  const before = await handoffTotals(prefillUrl);
  for (let i = 0; i < LONG_PROMPTS; i++) {
    const res = await fetch(`${routerUrl}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ prompt: `Chapter ${i}. ${filler.repeat(12)}`, max_tokens: 1, temperature: 0 }),
    });
    if (!res.ok) throw new Error(`long prompt: ${res.status} ${await res.text()}`);
    await res.text();
  }
  const after = await handoffTotals(prefillUrl);
  const bytes = after.bytes - before.bytes;
  const seconds = after.sendSeconds - before.sendSeconds;
  const n = after.count - before.count;
  return { handoffs: n, meanBytes: bytes / n, meanSendMs: (seconds / n) * 1000, gbPerSecond: bytes / seconds / 1e9 };
}

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

type Disaggregated = Awaited<ReturnType<typeof run>> & { transfer: Awaited<ReturnType<typeof transfer>>; paths: { tcp: number; http: number } };

async function disaggregated(transport: "tcp" | "http", base: number): Promise<Disaggregated> {
  const decodeUrl = `http://127.0.0.1:${base + 2}`;
  const decode = await startEngine(base + 2, ["--role", "decode", "--kv-port", String(base + 4), ...podArgs]);
  const prefill = await startEngine(base + 1, ["--role", "prefill", "--decode", decodeUrl, "--kv-transport", transport, ...podArgs]);
  const router = await startEngine(base + 3, ["--role", "router", "--prefill", `http://127.0.0.1:${base + 1}`, "--decode", decodeUrl]);
  try {
    const runs = await run(`http://127.0.0.1:${base + 3}`);
    const moved = await transfer(`http://127.0.0.1:${base + 3}`, `http://127.0.0.1:${base + 1}`);
    const text = await (await fetch(`http://127.0.0.1:${base + 1}/metrics`)).text();
    const paths = { tcp: metricSum(text, "llmfleet_kv_handoffs_total", { path: "tcp", outcome: "ok" }), http: metricSum(text, "llmfleet_kv_handoffs_total", { path: "http", outcome: "ok" }) };
    return { ...runs, transfer: moved, paths };
  } finally {
    await stop([router, prefill, decode]);
  }
}

const loadBefore = loadavg();
const tcp = await disaggregated("tcp", 18190);
const http = await disaggregated("http", 18200);
const out = {
  date: new Date().toISOString(),
  machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model, threadsPerPod: threads, loadavgBefore: loadBefore, loadavgAfter: loadavg(), note: "shared machine" },
  model,
  setup: { requests: REQUESTS, concurrency: CONCURRENCY, maxTokens: MAX_TOKENS, longPrompts: LONG_PROMPTS, note: "one process per pod on loopback, all sharing the same CPUs" },
  aggregated,
  disaggregated: tcp,
  disaggregatedHttp: http,
  ratios: {
    ttftP50: tcp.ttftP50Ms / aggregated.ttftP50Ms,
    throughput: tcp.tokensPerSecond / aggregated.tokensPerSecond,
    ttftP50Http: http.ttftP50Ms / aggregated.ttftP50Ms,
    throughputHttp: http.tokensPerSecond / aggregated.tokensPerSecond,
    transferTcpVsHttp: tcp.transfer.gbPerSecond / http.transfer.gbPerSecond,
  },
  handoff: { tcp: tcp.transfer, http: http.transfer },
};
console.log(JSON.stringify(out, null, 2));
console.log(
  `disaggregated (tcp)/aggregated: TTFT p50 ${out.ratios.ttftP50.toFixed(2)}x (${tcp.ttftP50Ms.toFixed(0)} vs ${aggregated.ttftP50Ms.toFixed(0)} ms), ` +
    `throughput ${out.ratios.throughput.toFixed(2)}x (${tcp.tokensPerSecond.toFixed(1)} vs ${aggregated.tokensPerSecond.toFixed(1)} tok/s); ` +
    `http: TTFT ${out.ratios.ttftP50Http.toFixed(2)}x, throughput ${out.ratios.throughputHttp.toFixed(2)}x; ` +
    `transfer ${tcp.transfer.gbPerSecond.toFixed(2)} GB/s (tcp) vs ${http.transfer.gbPerSecond.toFixed(2)} GB/s (http): ${out.ratios.transferTcpVsHttp.toFixed(2)}x`,
);
await writeFile(new URL("./results/pd.json", import.meta.url), `${JSON.stringify(out, null, 2)}\n`);
