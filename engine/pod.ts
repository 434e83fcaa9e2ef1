/** Assembles a pod of one role from its options: runtime, admission pool, metrics, app. */
import type { Express } from "express";
import { usableMemory } from "./memory.ts";
import { createEngineApp } from "./http/engine-app.ts";
import { createEngineMetrics, type EngineMetrics, type Role } from "./metrics/engine-metrics.ts";
import { ensureModel, verifyChecksum } from "./model/fetch.ts";
import { waitForFilledModel } from "./model/filled-cache.ts";
import type { ModelCacheMode } from "./cli/options.ts";
import { ChunkCache } from "./serving/chunk-cache.ts";
import { RAG_RECOMPUTE_DEFAULT } from "./serving/documents.ts";
import { CompletionService } from "./serving/completion-service.ts";
import { SequencePool } from "./serving/sequence-pool.ts";
import { handoffRoutes } from "./pd/handoff-routes.ts";
import { warmHostPool } from "./pd/host-warm.ts";
import { localRegions } from "./pd/local-handoff.ts";
import type { LocalRegions } from "./pd/local-regions.ts";
import { warmUp, warmUpTokens } from "./serving/warm-up.ts";
import { stat } from "node:fs/promises";
import { basename } from "node:path";
import express from "express";
import { Counter, Gauge } from "prom-client";
import { createKvClientMetrics } from "./kvstore/client-metrics.ts";
import { contextsRoute } from "./http/contexts-route.ts";
import { KvPrefixCache } from "./kvstore/prefix-cache.ts";
import type { ModelRuntime } from "./runtime/runtime.ts";
import { NativeRuntime } from "./runtime/native-runtime.ts";
import { splitOptions, type SplitMode } from "./native/binding.ts";
import type { Backend, PipelineDecode } from "./cli/options.ts";
import { fleetGuard, fleetTokenSource, type FleetTokens } from "./access/fleet-auth.ts";
import { identityHeaders } from "./access/identity.ts";
import { createTenantCacheMetric } from "./access/tenant-metrics.ts";
import { KvSealer } from "./kvstore/kv-seal.ts";
import {
  kvStreamAddon,
  TCP_STREAMS_MAX,
  useAddonCrc32c,
  type KvListener,
  type KvPoolStats,
  type KvStreamAddon,
  type KvTransportMode,
  type PartTokens,
} from "./pd/kv-transport.ts";

export interface ModelPodOptions {
  role: Exclude<Role, "router">;
  /** GGUF path or model URI. */
  model: string;
  /** Expected "sha256:<hex>" of the model file; the pod refuses to start on another. Default none. */
  modelChecksum?: string;
  /** The model's id in the API (the Model resource's name); the GGUF file's name stays an alias. Default: the file's name. */
  servedModelName?: string;
  /** filled: the cache is read-only, filled by a Job: wait for its fill record (engine/model/filled-cache.ts). Default fetch. */
  modelCache?: ModelCacheMode;
  threads: number;
  ctxSize: number;
  parallel: number;
  batchSize?: number;
  maxQueue: number;
  flashAttention?: boolean;
  /** Model runtime: native (engine/native + StepScheduler, default) or llama (node-llama-cpp). */
  backend?: Backend;
  /** native: layers on the GPU; 0 (default) = CPU only, -1 = all. */
  gpuLayers?: number;
  /** native: multi-step decoding depth; default 1 (off). */
  decodeLookahead?: number;
  /** native: pipelined decoding; default off (auto: on when layers are on a GPU). */
  pipelineDecode?: PipelineDecode;
  /** native: one KV buffer for all sequences (default true with more than one). */
  kvUnified?: boolean;
  /** native: a replica over several GPUs: how the model is split (default layer) and each GPU's share. */
  splitMode?: SplitMode;
  tensorSplit?: number[];
  /** RAG documents: share of document tokens recomputed in place (default 0.5). */
  ragRecompute?: number;
  /** RAG documents: host memory for the documents' own KV (default 1 GiB; 0 = no joins). */
  ragCacheBytes?: number;
  /** Prefill role: decode pods to hand off to when the router names none. */
  decode?: string[];
  /**
   * Decode role: this pod's own URL, returned to the prefill pod on a KV hand-off so the generate
   * call reaches this pod even when the hand-off went through a load-balanced Service. Default:
   * the address and port the hand-off's connection arrived on.
   */
  advertiseUrl?: string;
  /** Prefill/decode: how KV states move (engine/pd/kv-transport.ts). Default auto. */
  kvTransport?: KvTransportMode;
  /** Decode: TCP port of the native hand-off listener; default 0 (any free port: tests). */
  kvPort?: number;
  /** Prefill: parallel TCP connections per hand-off; default defaultTcpStreams() (kv-transport.ts). */
  kvStreams?: number;
  /** Host-pool bytes page-locked at start for KV states, or auto (default; pd/host-warm.ts). */
  kvHostWarm?: number | "auto";
  /** Tokens of a prompt evaluated before the pod serves, or auto (default; serving/warm-up.ts). */
  warmUpTokens?: number | "auto";
  /** Prefill: tokens per part of a hand-off sent while computed, or auto; default 0 = whole states (handoffParts). */
  kvPartTokens?: PartTokens;
  /** Decode: address the hand-off listener binds; default 127.0.0.1 (main passes --host). */
  host?: string;
  /** The HTTP port the pod will serve on (main passes --port): named in TCP hand-off answers. */
  port?: number;
  withProcessMetrics?: boolean;
  /** Prefill/aggregated: KV store URL for cached prompt prefixes; default none. */
  kvStore?: string;
  /** Longest wait for the KV store before recomputing. Default 5000 ms. */
  kvStoreTimeoutMs?: number;
  /** The fleet's token file: requests without the token are refused; hand-offs and KV store calls send it. Default none. */
  fleetTokenFile?: string;
  /** The KV store's own token file, when it has one; default the fleet token. */
  kvStoreTokenFile?: string;
  /** Master key file of per-tenant KV entry encryption (prefill/aggregated). Default none. */
  kvEncryptionKeyFile?: string;
}

/**
 * The model identity KV keys are salted with: the checksum when the pod was given one, else the
 * file name and size (the same GGUF on every pod of a model; DESIGN.md).
 */
async function kvModelIdentity(modelPath: string, checksum: string | undefined): Promise<string> {
  return checksum ?? `${basename(modelPath)}:${(await stat(modelPath)).size}`;
}

async function kvPrefixCache(
  opts: ModelPodOptions,
  modelPath: string,
  runtime: ModelRuntime,
  deps: { metrics: EngineMetrics; storeToken: FleetTokens },
): Promise<KvPrefixCache | undefined> {
  const { metrics, storeToken } = deps;
  if (!opts.kvStore || opts.role === "decode") return undefined;
  // v2 entries' blocks arrive from the store on this pod's native listener (and leave with its addon).
  const tcp = await kvListener(opts, runtime);
  if (tcp) useAddonCrc32c(tcp.addon);
  return new KvPrefixCache({
    ...(tcp ? { tcp } : {}),
    ...(opts.kvTransport ? { transport: opts.kvTransport } : {}),
    headers: () => identityHeaders(storeToken.token()),
    ...(opts.kvEncryptionKeyFile ? { sealer: KvSealer.fromFile(opts.kvEncryptionKeyFile) } : {}),
    url: opts.kvStore.replace(/\/+$/, ""),
    timeoutMs: opts.kvStoreTimeoutMs ?? 5000,
    model: await kvModelIdentity(modelPath, opts.modelChecksum),
    layout: { streams: runtime.info.kvStreams, vTransposed: !runtime.info.flashAttention },
    metrics: createKvClientMetrics(metrics.registry),
    // LLMFLEET_KV_WRITE_YIELD=1: write-backs wait while the pod loads (off by default; docs/kv-store.md).
    ...(process.env.LLMFLEET_KV_WRITE_YIELD === "1" ? { writesYieldToLoads: true } : {}),
  });
}

export interface ModelPod extends AsyncDisposable {
  app: Express;
  service: CompletionService;
  metrics: EngineMetrics;
  kvCache: KvPrefixCache | undefined;
}

// The specifier is a variable so that a bundler (esbuild) leaves node-llama-cpp out: a bundle of
// the engine serves with --backend native and needs nothing but the native addon.
const LLAMA_RUNTIME = "./runtime/llama-runtime.ts";

async function importLlamaRuntime(): Promise<typeof import("./runtime/llama-runtime.ts")> {
  try {
    return (await import(LLAMA_RUNTIME)) as typeof import("./runtime/llama-runtime.ts");
  } catch (err) {
    throw new Error(`--backend llama is not available in this build (${LLAMA_RUNTIME}: ${(err as Error).message}); use --backend native`, { cause: err });
  }
}

async function loadRuntime(opts: ModelPodOptions, modelPath: string): Promise<ModelRuntime> {
  const common = {
    modelPath,
    threads: opts.threads,
    contextSize: opts.ctxSize,
    parallel: opts.parallel,
    ...(opts.batchSize === undefined ? {} : { batchSize: opts.batchSize }),
    flashAttention: opts.flashAttention ?? false,
  };
  if (opts.backend === "llama") {
    const { LlamaRuntime } = await importLlamaRuntime();
    return LlamaRuntime.load(common);
  }
  const pipeline = opts.pipelineDecode ?? "off";
  return NativeRuntime.load({
    ...common,
    gpuLayers: opts.gpuLayers ?? 0,
    decodeLookahead: opts.decodeLookahead ?? 1,
    ...(pipeline === "auto" ? {} : { pipelineDecode: pipeline === "on" }),
    ...(opts.kvUnified === undefined ? {} : { kvUnified: opts.kvUnified }),
    ...splitOptions(opts),
  });
}

/** Counters whose value is a running total read at each scrape (name, help, the total). */
function scrapedCounters(metrics: EngineMetrics, counters: Array<[string, string, () => number]>): void {
  for (const [name, help, read] of counters) {
    new Counter({
      name,
      help,
      registers: [metrics.registry],
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  }
}

/**
 * The batching loop's totals as counters: native step calls, the sequences in them, and the
 * seconds spent in them. Per scrape interval, rows / calls is how full the steps are and busy /
 * wall time how much of the time the model ran (the rest is JavaScript: HTTP, JSON, scheduling).
 */
function watchSteps(metrics: EngineMetrics, runtime: ModelRuntime): void {
  const stats = runtime.stepStats;
  if (!stats) return;
  const counters: Array<[string, string, () => number]> = [
    ["llmfleet_engine_native_steps_total", "Native step calls of the batching loop", () => stats.calls],
    ["llmfleet_engine_native_step_sequences_total", "Sequences over all native step calls (divided by the calls: sequences per step)", () => stats.rows],
    ["llmfleet_engine_native_step_seconds_total", "Seconds spent in native step calls", () => stats.busySeconds],
    ["llmfleet_engine_native_step_tokens_total", "Tokens evaluated by native step calls (prompt chunks and decodes)", () => stats.tokens],
    ["llmfleet_engine_native_prefill_tokens_total", "Prompt tokens evaluated by native step calls", () => stats.prefillTokens],
    [
      "llmfleet_engine_native_prefill_seconds_total",
      "Seconds of native step calls spent on prompt tokens (a mixed step split by its tokens); tokens / seconds is the prefill rate",
      () => stats.prefillSeconds,
    ],
  ];
  const exports = runtime.exportStats?.bind(runtime);
  if (exports) {
    counters.push(
      ["llmfleet_engine_native_exports_total", "KV state exports (P/D hand-offs, KV store write-backs)", () => exports().exports],
      [
        "llmfleet_engine_native_export_wait_seconds_total",
        "Seconds state exports waited for the device to finish queued work (the prompt's last layers) before copying",
        () => exports().waitSeconds,
      ],
      ["llmfleet_engine_native_export_copy_seconds_total", "Seconds state exports spent copying the state out of the device", () => exports().copySeconds],
      [
        "llmfleet_engine_native_export_copies_total",
        "Tensor copies of state exports (one per contiguous run of a sequence's cells per layer, K and V; many when its cells are scattered)",
        () => exports().copies,
      ],
    );
  }
  const imports = runtime.importStats?.bind(runtime);
  if (imports) {
    counters.push(
      ["llmfleet_engine_native_imports_total", "KV state imports (P/D hand-offs, KV store loads)", () => imports().imports],
      [
        "llmfleet_engine_native_import_seconds_total",
        "Seconds state imports spent in the engine's read of the state (onto the device)",
        () => imports().seconds,
      ],
      [
        "llmfleet_engine_native_import_copies_total",
        "Tensor copies of state imports (one per contiguous run of the cells a sequence was given per layer, K and V; many when free cells are scattered)",
        () => imports().copies,
      ],
    );
  }
  scrapedCounters(metrics, counters);
}

/**
 * The host pool of page-locked blocks that exported and received KV states live in (host-pool.h),
 * read at each scrape: a miss page-locks a new block, which costs more than moving the state, so
 * misses that keep growing say the pool's cap (LLMFLEET_HOST_POOL_BYTES) is too small.
 */
function watchHostPool(metrics: EngineMetrics, addon: KvStreamAddon | undefined): void {
  const read = addon?.kvPoolStats?.bind(addon);
  if (!read) return;
  const registers = [metrics.registry];
  scrapedCounters(metrics, [
    ["llmfleet_kv_host_pool_hits_total", "KV states placed in a pooled host block", () => read().hits],
    ["llmfleet_kv_host_pool_misses_total", "KV states that needed a new (page-locked, on a GPU) host block", () => read().misses],
  ]);
  const gauges: Array<[string, string, (s: KvPoolStats) => number]> = [
    ["llmfleet_kv_host_pool_cached_bytes", "Host bytes kept free in the pool for the next states", (s) => s.cachedBytes],
    ["llmfleet_kv_host_pool_outstanding_bytes", "Host bytes of pool blocks holding states now", (s) => s.outstandingBytes],
    ["llmfleet_kv_host_pool_warm_bytes", "Host bytes page-locked at start for KV states (--kv-host-warm)", (s) => s.warmBytes ?? 0],
  ];
  for (const [name, help, pick] of gauges) {
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(pick(read()));
      },
    });
  }
}

/** The runtime's own series: stray KV cells, the batching loop, the host pool (native). */
async function watchRuntime(metrics: EngineMetrics, runtime: ModelRuntime): Promise<void> {
  watchKvStray(metrics, runtime);
  watchSteps(metrics, runtime);
  if (runtime.features.backend === "native") watchHostPool(metrics, await kvStreamAddon());
}

/** llmfleet_kv_stray_tokens: read at each scrape, between steps (a leak of KV cells shows here). */
function watchKvStray(metrics: EngineMetrics, runtime: ModelRuntime): void {
  if (!runtime.kvStrayTokens) return;
  const audit = runtime.kvStrayTokens.bind(runtime);
  new Gauge({
    name: "llmfleet_kv_stray_tokens",
    help: "KV cache positions that no sequence accounts for (should be 0)",
    registers: [metrics.registry],
    async collect() {
      // A scrape during shutdown finds the engine disposed: the gauge reads NaN (unknown), not a count.
      this.set(await audit().catch(() => NaN));
    },
  });
}

/**
 * Decode: the native TCP listener prefill pods stream KV states to (kv-transport.ts); prefill and
 * aggregated pods with a KV store: the listener the store pushes v2 entry blocks to. With
 * --kv-transport auto a pod that cannot listen (no addon, port taken) receives over HTTP only,
 * and says why; with tcp it refuses to start.
 */
async function kvListener(opts: ModelPodOptions, runtime: ModelRuntime): Promise<KvListener | undefined> {
  const mode = opts.kvTransport ?? "auto";
  if (mode === "http") return undefined;
  const addon = await kvStreamAddon();
  try {
    if (!addon) throw new Error("the native addon is not available");
    // Staged states wait in host memory for their generate call: a bound, so a decode pod refuses
    // (429, the prefill pod retries) before it runs out of memory.
    const maxBytes = Math.min(8 * 2 ** 30, Math.floor(usableMemory() / 4));
    const { port, handle } = addon.kvListen(opts.host ?? "127.0.0.1", opts.kvPort ?? 0, {
      maxBytes,
      // One hand-off takes up to TCP_STREAMS_MAX connections (a prefill pod's --kv-streams).
      maxConnections: Math.min(4096, Math.max(8, 2 * runtime.sequences.length) * TCP_STREAMS_MAX),
      ...(opts.advertiseUrl ? { advertise: opts.advertiseUrl } : {}),
      ...(opts.port ? { httpPort: opts.port } : {}),
    });
    return { addon, port, handle };
  } catch (err) {
    if (mode === "tcp") throw new Error(`--kv-transport tcp: cannot receive KV hand-offs over TCP: ${(err as Error).message}`, { cause: err });
    process.stderr.write(`llmfleet: KV hand-offs arrive over HTTP only (${(err as Error).message})\n`);
    return undefined;
  }
}

/** The native host pool warmed for the KV states this pod will move (a KV store, a P/D role): pd/host-warm.ts. */
async function warmForStates(opts: ModelPodOptions, runtime: ModelRuntime, kvStore: boolean): Promise<void> {
  if (runtime.features.backend !== "native") return;
  const movesStates = kvStore || opts.role === "prefill" || opts.role === "decode";
  await warmHostPool(await kvStreamAddon(), opts.kvHostWarm ?? "auto", movesStates, (l) => process.stderr.write(`engine (${opts.role}): ${l}\n`));
}

/** The model file: from a filled read-only cache (its fill verified it), else fetched and verified here. */
/** RAG document joins: the recompute share and the documents' own KV cache (none with --rag-cache-bytes 0). */
function ragOptions(opts: ModelPodOptions): { recompute: number; chunks: ChunkCache } | undefined {
  const bytes = opts.ragCacheBytes ?? 1 << 30;
  return bytes > 0 ? { recompute: opts.ragRecompute ?? RAG_RECOMPUTE_DEFAULT, chunks: new ChunkCache(bytes) } : undefined;
}

/** Decode role: memory lent to prefill pods on this machine (pd/local-handoff.ts); none with --kv-transport tcp or http. */
async function lentMemory(opts: ModelPodOptions, runtime: ModelRuntime): Promise<LocalRegions | undefined> {
  if (opts.role !== "decode" || (opts.kvTransport ?? "auto") !== "auto") return undefined;
  return localRegions(runtime.sequences, runtime.gpu === true);
}

/** The engine's kernels and buffers warmed by a prompt of its own before the pod serves (serving/warm-up.ts). */
async function warmUpEngine(opts: ModelPodOptions, runtime: ModelRuntime): Promise<void> {
  const count = warmUpTokens(opts.warmUpTokens ?? "auto", {
    // Layers asked for on a build without a GPU backend run on the CPU: nothing loads lazily there.
    gpuLayers: runtime.gpu === true ? (opts.gpuLayers ?? 0) : 0,
    batchSize: opts.batchSize ?? 512,
    contextSize: runtime.info.contextSize,
  });
  const done = await warmUp(runtime, count);
  if (done) process.stderr.write(`engine (${opts.role}): warmed up with a prompt of ${done.tokens} tokens in ${done.ms.toFixed(0)} ms\n`);
}

async function resolveModel(opts: ModelPodOptions): Promise<string> {
  if (opts.modelCache === "filled") {
    const log = (line: string): void => void process.stderr.write(`engine (${opts.role}): ${line}\n`);
    return waitForFilledModel(opts.model, { ...(opts.modelChecksum ? { checksum: opts.modelChecksum } : {}), log });
  }
  const modelPath = await ensureModel(opts.model);
  if (opts.modelChecksum) await verifyChecksum(modelPath, opts.modelChecksum);
  return modelPath;
}

export async function createModelPod(opts: ModelPodOptions): Promise<ModelPod> {
  const modelPath = await resolveModel(opts);
  const runtime = await loadRuntime(opts, modelPath);
  if (opts.servedModelName) runtime.info.servedName = opts.servedModelName;
  const metrics = createEngineMetrics(opts.role, opts.withProcessMetrics ?? false);
  await watchRuntime(metrics, runtime);
  const token = fleetTokenSource(opts.fleetTokenFile, { log: (l) => process.stderr.write(`${l}\n`) });
  const storeToken = opts.kvStoreTokenFile ? fleetTokenSource(opts.kvStoreTokenFile, { log: (l) => process.stderr.write(`kv store ${l}\n`) }) : token;
  const kvCache = await kvPrefixCache(opts, modelPath, runtime, { metrics, storeToken });
  const service = new CompletionService(runtime, new SequencePool(runtime.sequences, opts.maxQueue), metrics, { kvCache, rag: ragOptions(opts) });
  const tenantHits = createTenantCacheMetric(metrics.registry);
  service.onTenantHits = (tenant, tokens): void => tenantHits.inc({ tenant }, tokens);
  const tcp = opts.role === "decode" ? await kvListener(opts, runtime) : undefined;
  const local = await lentMemory(opts, runtime);
  await warmForStates(opts, runtime, kvCache !== undefined);
  await warmUpEngine(opts, runtime);
  const routes = handoffRoutes({
    role: opts.role,
    service,
    metrics,
    decodeUrls: opts.decode ?? [],
    advertiseUrl: opts.advertiseUrl,
    transport: opts.kvTransport,
    ...(opts.kvStreams ? { tcpStreams: opts.kvStreams } : {}),
    ...(opts.kvPartTokens !== undefined ? { partTokens: opts.kvPartTokens } : {}),
    tcp,
    ...(local ? { local } : {}),
    fleetToken: token.token,
  });
  const extraRoutes = express.Router().use(routes.router);
  extraRoutes.use(contextsRoute(service, kvCache));
  const app = createEngineApp({ service, metrics, extraRoutes, guard: fleetGuard(token) });
  return {
    app,
    service,
    metrics,
    kvCache,
    async [Symbol.asyncDispose](): Promise<void> {
      token[Symbol.dispose]();
      storeToken[Symbol.dispose]();
      await routes[Symbol.asyncDispose]();
      await kvCache?.[Symbol.asyncDispose]();
      await runtime[Symbol.asyncDispose]();
    },
  };
}
