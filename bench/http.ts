/**
 * npm run bench:http — the engine as users run it: its own program serving HTTP (as the operator's
 * pod starts it), driven by a closed-loop streaming client (C clients, each sending R streamed
 * completions of a ~100-word prompt, max_tokens 128, temperature 0), against two baselines on the
 * same model and load: llama-server built from the same llama.cpp source, and the same engine
 * driven in-process with the same requests (no HTTP, JSON or SSE). Also a soak (fixed load for
 * minutes, zero errors expected) and a stress mix (joins, leaves, cancels; bench/http/stress.ts).
 * Each section is run by its own invocation and merged into the results file (--out), so the device
 * can run them in separate calls; ratios are computed from sections of the same file.
 *
 *   --section S          engine | llama-server | inprocess | soak | stress | pd | reuse | pd2gpu | tp2 (repeatable; default engine)
 *                        pd2gpu and tp2 (bench/http/two-gpu.ts, issue 27) need two GPUs of one host:
 *                        P/D with prefill and decode on separate GPUs (--pd-prompt-tokens, --pd-concurrency),
 *                        one replica over both GPUs as the operator plans gpusPerReplica: 2
 *   --pd-prompt-tokens LIST --pd-concurrency LIST --pd-transports LIST
 *                        the pd section (bench/http/pd.ts): prompt lengths (default 1024,4096),
 *                        streams (default 1,8,32), hand-off mechanisms (default tcp,http; also
 *                        tcp-late, tcp-export-first, tcp1 and tcp8, baselines of the default;
 *                        tcp-overlap, local, tcp-prio, tcp-sm70, variants of it:
 *                        TRANSPORT_ARGS in pd.ts)
 *   --reuse-contexts LIST --reuse-repeats N --reuse-mix N --reuse-codec C --reuse-store-streams N --reuse-write-yield on|off --reuse-store-hold on|off --reuse-host-warm BYTES|auto --reuse-load-parts on|off
 *                        the reuse section (bench/http/reuse.ts): context lengths (default
 *                        1024,4096,8192), requests per row (3), requests in the random mix (100),
 *                        the kvstore's codec (default none: the reuse gates of issue 19 are about
 *                        moving raw state; `default` now stands for compact), the kvstore's
 *                        --kv-streams (default: its own, 4), on: the pods' write-backs wait while
 *                        they load (LLMFLEET_KV_WRITE_YIELD=1; off by default); off:
 *                        the store takes uploads while it pushes (LLMFLEET_KV_STORE_HOLD_UPLOADS=0)
 *   --model FILE         GGUF (default: the synthetic --preset, written to $TMPDIR on first use)
 *   --preset P           synthetic shape when no --model: tiny | 1b | 8b (default: 8b on a GPU, tiny on CPU)
 *   --engine FILE        the engine program: an esbuild bundle of engine/main.ts (default: tsx engine/main.ts)
 *   --llama-server FILE  llama-server binary (section llama-server)
 *   --concurrency LIST   default 1,8,32,64,128
 *   --parallel N --ctx-size N --batch-size N --threads N   engine and llama-server sizing (64, 1024, 2048, 8)
 *   --engine-args="..."  more engine flags (e.g. --engine-args="--pipeline-decode off"); also BENCH_ENGINE_ARGS
 *   --server-args="..."  replaces llama-server's flags after -m (default: -ngl 99 -np P -c P*CTX -b B -fa on -t T); also BENCH_SERVER_ARGS
 *   --soak-seconds N     per concurrency of the soak (64 and 128; default 180)
 *   --stress-seconds N --stress-clients N   (default 60, 2 x parallel)
 *   --out FILE           default bench/results/gpu-http.json
 *   --label L            store the sections as <section>_<L> (one configuration among several in one file)
 *   --prepare            only write the synthetic model, then exit
 *
 * BENCH_ENGINE_WRAP="cmd args" in the environment starts the engine under cmd (e.g. compute-sanitizer).
 */
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { benchArgs, intList } from "./cli.ts";
import { parseEngineOptions, type EngineOptions } from "../engine/cli/options.ts";
import { SYNTHETIC_PRESETS, writeSyntheticModel } from "../engine/model/synthetic-gguf.ts";
import { createModelPod } from "../engine/pod.ts";
import { inProcessSender } from "./http/inprocess.ts";
import { benchPrompt, closedLoop, LoadClient, type CompletionRequest, type LoadSummary, type StreamOutcome } from "./http/load-client.ts";
import { startServer, type RunningServer } from "./http/servers.ts";
import { runStress } from "./http/stress.ts";
import { pdHeadline, pdSection, TRANSPORT_ARGS, type PdTransport } from "./http/pd.ts";

function pdTransports(list: string): PdTransport[] {
  const names = list.split(",");
  for (const n of names) if (!(n in TRANSPORT_ARGS)) throw new Error(`--pd-transports: ${n} is not one of ${Object.keys(TRANSPORT_ARGS).join(", ")}`);
  return names as PdTransport[];
}
import { reuseHeadline, reuseSection } from "./http/reuse.ts";
import { pd2gpuSection, tp2Section, twoGpuHeadline, type PodSizing, type TwoGpuOptions } from "./http/two-gpu.ts";

const { values: a } = benchArgs({
  options: {
    section: { type: "string", multiple: true },
    model: { type: "string" },
    preset: { type: "string" },
    engine: { type: "string" },
    "llama-server": { type: "string" },
    concurrency: { type: "string", default: "1,8,32,64,128" },
    parallel: { type: "string", default: "64" },
    "ctx-size": { type: "string", default: "1024" },
    "batch-size": { type: "string", default: "2048" },
    threads: { type: "string", default: "8" },
    "max-tokens": { type: "string", default: "128" },
    "engine-args": { type: "string", default: "" },
    "server-args": { type: "string" },
    "soak-seconds": { type: "string", default: "180" },
    "stress-seconds": { type: "string", default: "60" },
    "stress-clients": { type: "string" },
    out: { type: "string", default: "bench/results/gpu-http.json" },
    label: { type: "string" },
    prepare: { type: "boolean", default: false },
    "pd-prompt-tokens": { type: "string", default: "1024,4096" },
    "pd-concurrency": { type: "string", default: "1,8,32" },
    "pd-transports": { type: "string", default: "tcp,http" },
    "reuse-contexts": { type: "string", default: "1024,4096,8192" },
    "reuse-repeats": { type: "string", default: "3" },
    "reuse-mix": { type: "string", default: "100" },
    "reuse-codec": { type: "string", default: "none" },
    "reuse-store-streams": { type: "string" },
    "reuse-write-yield": { type: "string", default: "off" },
    "reuse-store-hold": { type: "string", default: "on" },
    "reuse-host-warm": { type: "string", default: "auto" },
    "reuse-load-parts": { type: "string", default: "on" },
  },
});

function gpuName(): string | undefined {
  try {
    return execFileSync("nvidia-smi", ["--query-gpu=name", "--format=csv,noheader"]).toString().trim().split("\n")[0];
  } catch {
    return undefined;
  }
}

const gpu = gpuName();
const device = gpu ?? `cpu: ${cpus()[0]?.model ?? "unknown"} x${cpus().length}`;
const parallel = Number(a.parallel);
const ctxSize = Number(a["ctx-size"]);
const batchSize = Number(a["batch-size"]);
const threads = Number(a.threads);
const maxTokens = Number(a["max-tokens"]);
// Every list parsed here, once: a malformed one is refused before any section starts.
const concurrencies = intList("concurrency", a.concurrency);
const pdPromptTokens = intList("pd-prompt-tokens", a["pd-prompt-tokens"]);
const pdConcurrencies = intList("pd-concurrency", a["pd-concurrency"]);
const reuseContexts = intList("reuse-contexts", a["reuse-contexts"]);
const sections = a.section ?? ["engine"];
const words = (s: string): string[] => s.split(/\s+/).filter((w) => w.length > 0);

async function modelFile(): Promise<string> {
  if (a.model) return a.model;
  const preset = a.preset ?? (gpu ? "8b" : "tiny");
  const shape = SYNTHETIC_PRESETS[preset];
  if (!shape) throw new Error(`--preset must be one of ${Object.keys(SYNTHETIC_PRESETS).join(", ")}`);
  const path = join(tmpdir(), `llmfleet-bench-${preset}.gguf`);
  if (!existsSync(path)) process.stderr.write(`bench:http: writing the synthetic ${preset} model to ${path}\n`);
  return writeSyntheticModel(path, shape);
}

/** The engine's flags, as the operator plans them for a GPU pool (and the same on CPU with no layers offloaded). */
function engineArgv(model: string): string[] {
  const gpuArgs = gpu ? ["--gpu-layers", "all", "--flash-attention"] : [];
  const sizing = ["--parallel", String(parallel), "--ctx-size", String(ctxSize), "--batch-size", String(batchSize), "--threads", String(threads)];
  // The whole load is admitted: a 429 would count as an error.
  return ["--role", "aggregated", "--model", model, "--backend", "native", ...gpuArgs, ...sizing, "--max-queue", "4096", ...words(a["engine-args"]), ...words(process.env.BENCH_ENGINE_ARGS ?? "")];
}

function requestsPerClient(c: number): number {
  return Math.max(2, Math.min(8, Math.round(64 / c)));
}

const request = (client: number, index: number): CompletionRequest => ({ prompt: benchPrompt(client * 1000 + index), maxTokens });

const STEP_COUNTERS = ["llmfleet_engine_native_steps_total", "llmfleet_engine_native_step_sequences_total", "llmfleet_engine_native_step_seconds_total", "llmfleet_engine_native_step_tokens_total"] as const;

/** The engine's batching-loop counters (a diagnostic of where the time goes), or undefined where it has none. */
async function stepCounters(url: string | undefined): Promise<number[] | undefined> {
  if (!url) return undefined;
  const text = await fetch(`${url}/metrics`)
    .then((r) => r.text())
    .catch(() => ""); // the engine died: its sweep stops at the liveness check
  const values = STEP_COUNTERS.map((n) => Number(new RegExp(`^${n}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(text)?.[1] ?? NaN));
  return values.some((v) => Number.isNaN(v)) ? undefined : values;
}

/** Per sweep: sequences per native step, tokens per step, and the share of the wall time spent in native steps. */
function stepFigures(before: number[] | undefined, after: number[] | undefined, wallMs: number): Record<string, number> | undefined {
  if (!before || !after) return undefined;
  const [calls, rows, busy, tokens] = after.map((v, i) => v - (before[i] ?? 0)) as [number, number, number, number];
  if (calls <= 0) return undefined;
  const r = (x: number, d = 100): number => Math.round(x * d) / d;
  return { native_steps: calls, sequences_per_step: r(rows / calls), tokens_per_step: r(tokens / calls), step_ms: r((busy * 1000) / calls), native_busy_fraction: r((busy * 1000) / wallMs, 1000) };
}

async function sweep(name: string, send: (r: CompletionRequest) => Promise<StreamOutcome>, alive: () => string | undefined, metricsUrl?: string): Promise<Record<string, LoadSummary>> {
  const out: Record<string, LoadSummary> = {};
  await send({ prompt: benchPrompt(999_999), maxTokens: 8 }); // warm-up: first graphs, allocations
  for (const c of concurrencies) {
    const before = await stepCounters(metricsUrl);
    const t0 = performance.now();
    const s = await closedLoop(send, c, request, { perClient: requestsPerClient(c) });
    const steps = stepFigures(before, await stepCounters(metricsUrl), performance.now() - t0);
    out[String(c)] = steps ? { ...s, steps } : s;
    await checkpoint({ runs: out });
    const stepNote = steps ? `; ${steps.sequences_per_step} seqs/step, ${steps.step_ms} ms/step, native busy ${Math.round((steps.native_busy_fraction ?? 0) * 100)} %` : "";
    process.stderr.write(`bench:http: ${name} x${c}: ${s.tok_s} tok/s, TTFT p50 ${s.ttft_p50_ms} ms, ITL p90 ${s.itl_p90_ms} ms, ${s.errors} errors of ${s.requests}${stepNote}\n`);
    const dead = alive();
    if (dead) {
      process.stderr.write(`bench:http: ${name} ${dead}\n`);
      break;
    }
  }
  return out;
}

/**
 * Whether the engine survived a section: it answers /ready now and has not exited. An engine that
 * aborts (a CUDA error) may still be writing its backtrace when the load ends, before its exit
 * event arrives, so the answer is awaited rather than read from the exit status alone.
 */
async function liveness(server: RunningServer): Promise<string> {
  const answered = await fetch(`${server.url}/ready`, { signal: AbortSignal.timeout(5000) })
    .then((r) => r.status)
    .catch((e: unknown) => `no answer (${e instanceof Error ? e.message : String(e)})`);
  await new Promise((r) => setTimeout(r, 500));
  return server.exited() ?? (answered === 200 ? "alive" : `not ready: ${answered}`);
}

async function withEngine<T>(model: string, logName: string, fn: (server: RunningServer, client: LoadClient) => Promise<T>): Promise<T> {
  const node = [process.execPath, ...(a.engine ? [a.engine] : ["--import", "tsx", "engine/main.ts"])];
  const [cmd, ...pre] = [...words(process.env.BENCH_ENGINE_WRAP ?? ""), ...node] as [string, ...string[]];
  const port = 18_000 + Math.floor(Math.random() * 1000);
  const logFile = join(dirname(a.out), `${logName}${a.label ? `-${a.label}` : ""}.log`);
  await using server = await startServer("engine", cmd, [...pre, ...engineArgv(model), "--host", "127.0.0.1", "--port", String(port)], { port, readyPath: "/ready", logFile });
  const client = new LoadClient(server.url, 4096);
  try {
    return await fn(server, client);
  } finally {
    client.close();
  }
}

async function llamaServerSection(model: string): Promise<Record<string, unknown>> {
  if (!a["llama-server"]) throw new Error("--section llama-server needs --llama-server FILE");
  const port = 19_000 + Math.floor(Math.random() * 1000);
  const serverArgs = a["server-args"] ?? process.env.BENCH_SERVER_ARGS;
  const flags = serverArgs
    ? words(serverArgs)
    : ["-ngl", gpu ? "99" : "0", "-np", String(parallel), "-c", String(parallel * ctxSize), "-b", String(batchSize), "-fa", gpu ? "on" : "off", "-t", String(threads)];
  const logFile = join(dirname(a.out), "llama-server.log");
  await using server = await startServer("llama-server", a["llama-server"], ["-m", model, ...flags, "--host", "127.0.0.1", "--port", String(port)], { port, readyPath: "/health", logFile });
  const client = new LoadClient(server.url, 4096, "default", false);
  try {
    return { args: flags.join(" "), runs: await sweep("llama-server", (r) => client.complete(r), server.exited) };
  } finally {
    client.close();
  }
}

async function inProcessSection(model: string): Promise<Record<string, unknown>> {
  const opts = parseEngineOptions(engineArgv(model)) as EngineOptions;
  await using pod = await createModelPod({ ...opts, role: "aggregated" });
  return { runs: await sweep("in-process", inProcessSender(pod), () => undefined) };
}

async function soakSection(model: string): Promise<Record<string, unknown>> {
  const seconds = Number(a["soak-seconds"]);
  return withEngine(model, "engine-soak", async (server, client) => {
    const runs: Record<string, LoadSummary> = {};
    for (const c of [64, 128]) {
      runs[String(c)] = await closedLoop((r) => client.complete(r), c, request, { untilMs: seconds * 1000 });
      await checkpoint({ seconds_each: seconds, runs });
      process.stderr.write(`bench:http: soak x${c} ${seconds} s: ${runs[String(c)]!.tok_s} tok/s, ${runs[String(c)]!.errors} errors\n`);
      if (server.exited()) break;
    }
    return { seconds_each: seconds, runs, engine: await liveness(server) };
  });
}

const engineProgram = (): string[] => [...words(process.env.BENCH_ENGINE_WRAP ?? ""), process.execPath, ...(a.engine ? [a.engine] : ["--import", "tsx", "engine/main.ts"])];

/** A pod's size for sections with long prompts: its context fits `longest` plus the answer, `pdParallel` sequences. */
function podSizing(longest = Math.max(...pdPromptTokens), pdParallel = Math.max(...pdConcurrencies)): PodSizing {
  return { parallel: pdParallel, contextSize: longest + 256, batchSize };
}

/** The engine flags every such pod gets beside its size and device flags. */
const podExtras = (): string[] => ["--threads", String(threads), "--max-queue", "4096", ...words(a["engine-args"]), ...words(process.env.BENCH_ENGINE_ARGS ?? "")];

/** Model pod flags for sections that size pods for long prompts (podSizing), on the machine's device. */
function pdPodArgs(longest?: number, pdParallel?: number): string[] {
  const gpuArgs = gpu ? ["--gpu-layers", "all", "--flash-attention"] : [];
  const s = podSizing(longest, pdParallel);
  return ["--backend", "native", ...gpuArgs, "--parallel", String(s.parallel), "--ctx-size", String(s.contextSize), "--batch-size", String(s.batchSize), ...podExtras()];
}

/** The two-GPU sections' pods: sized as a P/D pod (pd2gpu's pods take its flags; tp2's size goes into the Model it plans). */
function twoGpuOptions(model: string): TwoGpuOptions {
  return {
    engine: engineProgram(),
    model,
    podArgs: pdPodArgs(),
    sizing: podSizing(),
    extras: podExtras(),
    gpu: gpu !== undefined,
    promptTokens: pdPromptTokens,
    concurrencies: pdConcurrencies,
    logDir: dirname(a.out),
  };
}

async function section(name: string, model: string): Promise<Record<string, unknown>> {
  const twoGpu = ({ pd2gpu: pd2gpuSection, tp2: tp2Section } as Record<string, (o: TwoGpuOptions) => Promise<Record<string, unknown>>>)[name];
  if (twoGpu) return twoGpu(twoGpuOptions(model));
  switch (name) {
    case "engine":
      return withEngine(model, "engine", async (server, client) => ({
        args: engineArgv("MODEL").join(" "),
        runs: await sweep("engine", (r) => client.complete(r), server.exited, server.url),
        engine: await liveness(server),
      }));
    case "llama-server":
      return llamaServerSection(model);
    case "inprocess":
      return inProcessSection(model);
    case "reuse":
      return reuseSection({
        engine: engineProgram(),
        model,
        podArgs: pdPodArgs(Math.max(...reuseContexts) + 256, 4),
        contexts: reuseContexts,
        repeats: Number(a["reuse-repeats"]),
        mixRequests: Number(a["reuse-mix"]),
        codec: a["reuse-codec"],
        ...(a["reuse-store-streams"] ? { storeStreams: Number(a["reuse-store-streams"]) } : {}),
        writeYield: a["reuse-write-yield"] === "on",
        storeHold: a["reuse-store-hold"] !== "off",
        hostWarm: a["reuse-host-warm"],
        loadParts: a["reuse-load-parts"] !== "off",
        logDir: dirname(a.out),
      });
    case "pd":
      return pdSection({
        engine: engineProgram(),
        model,
        // The aggregated engine's device and sizing flags; each pod gets them. A P/D pod holds a
        // whole prompt per sequence: the context fits the longest prompt plus the answer.
        podArgs: pdPodArgs(),
        concurrencies: pdConcurrencies,
        promptTokens: pdPromptTokens,
        maxTokens: 32,
        transports: pdTransports(a["pd-transports"]),
        logDir: dirname(a.out),
      });
    case "soak":
      return soakSection(model);
    case "stress":
      return withEngine(model, "engine-stress", async (server, client) => {
        const report = await runStress(client, {
          clients: Number(a["stress-clients"] ?? 2 * parallel),
          seconds: Number(a["stress-seconds"]),
          ctxSize,
          maxGen: 300,
          seed: 1,
        });
        process.stderr.write(`bench:http: stress: ${report.requests} requests, ${report.failures.length} failures\n`);
        return { ...report, failures: report.failures.slice(0, 20), failure_count: report.failures.length, engine: await liveness(server) };
      });
    default:
      throw new Error(`unknown --section ${name}`);
  }
}

type Runs = Record<string, LoadSummary>;
const runsOf = (r: Record<string, unknown>, key: string): Runs | undefined => (r[key] as { runs?: Runs } | undefined)?.runs;
const ratio = (x: number | undefined, y: number | undefined): number | null => (x && y ? Math.round((x / y) * 100) / 100 : null);

const tokS = (r: Record<string, unknown>, key: string, c: number): number | undefined => runsOf(r, key)?.[String(c)]?.tok_s;

/**
 * llama-server's best tok/s at c streams over the flag sets the file holds (`llama_server`, and
 * `llama_server_<label>` from --label runs such as -kvu): the baseline is its best configuration.
 */
function bestLlamaServer(r: Record<string, unknown>, c: number): number | undefined {
  const got = Object.keys(r)
    .filter((k) => k === "llama_server" || k.startsWith("llama_server_"))
    .map((k) => tokS(r, k, c))
    .filter((v): v is number => v !== undefined && v > 0);
  return got.length ? Math.max(...got) : undefined;
}

function soakFigures(r: Record<string, unknown>): { soak_seconds: number | null; soak_errors: number | null } {
  const soak = r.soak as { seconds_each: number; runs: Runs } | undefined;
  if (!soak) return { soak_seconds: null, soak_errors: null };
  return { soak_seconds: soak.seconds_each * Object.keys(soak.runs).length, soak_errors: Object.values(soak.runs).reduce((s, x) => s + x.errors, 0) };
}

/** The headline figures, from whichever sections the file holds. */
function headline(r: Record<string, unknown>): Record<string, unknown> {
  return {
    ratio_vs_llama_server_32: ratio(tokS(r, "engine", 32), bestLlamaServer(r, 32)),
    ratio_vs_llama_server_64: ratio(tokS(r, "engine", 64), bestLlamaServer(r, 64)),
    http_vs_inprocess_64: ratio(tokS(r, "engine", 64), tokS(r, "inprocess", 64)),
    ...soakFigures(r),
    ...pdHeadline(r.pd as Record<string, unknown> | undefined),
    ...reuseHeadline(r.reuse as Record<string, unknown> | undefined),
    ...twoGpuHeadline(r.pd2gpu as Record<string, unknown> | undefined, r.tp2 as Record<string, unknown> | undefined),
  };
}

const results: Record<string, unknown> = existsSync(a.out) ? (JSON.parse(readFileSync(a.out, "utf8")) as Record<string, unknown>) : {};
let current: { key: string; date: string } | undefined;

async function save(): Promise<void> {
  Object.assign(results, headline(results));
  await mkdir(dirname(a.out), { recursive: true });
  await writeFile(a.out, `${JSON.stringify(results, null, 2)}\n`);
}

/**
 * The section in progress as far as it got, marked partial: a device call that runs out of time
 * (or an engine that dies) mid-section still leaves the concurrencies already measured in the file.
 */
async function checkpoint(got: Record<string, unknown>): Promise<void> {
  if (!current) return;
  results[current.key] = { date: current.date, partial: true, ...got };
  await save();
}

async function main(): Promise<void> {
  const model = await modelFile();
  if (a.prepare) return;
  results.device = device;
  results.model = model.split("/").pop();
  for (const name of sections) {
    current = { key: `${name.replace("-", "_")}${a.label ? `_${a.label}` : ""}`, date: new Date().toISOString() };
    const got = await section(name, model);
    results[current.key] = { date: current.date, ...got };
    await save();
  }
  const h = headline(results);
  process.stdout.write(`${JSON.stringify(h)}\n`);
}

await main();
