/** Command-line options of `npm run engine -- ...`; every option documents its default. */
import { KV_TRANSPORTS, TCP_STREAMS_MAX, type KvTransportMode, type PartTokens } from "../pd/kv-transport.ts";
import { availableParallelism } from "node:os";
import { parseArgs } from "node:util";
import type { Role } from "../metrics/engine-metrics.ts";
import { DEFAULT_MODEL } from "../model/fetch.ts";
import { ROUTING_POLICIES, type RoutingPolicy } from "../router/upstreams.ts";
import { isResearchCodec, parseKvCodecName, RESEARCH_KV_CODECS } from "../kvcodec/codec-names.ts";
import { parseTierSpec, type TierSpec } from "../kvstore/tier-spec.ts";
import { httpUrl } from "../http/http-url.ts";
import { RAG_RECOMPUTE_DEFAULT } from "../serving/documents.ts";
import { SPLIT_MODES, type SplitMode } from "../native/binding.ts";

export { HELP } from "./help.ts";

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
  /** Native: a replica over several GPUs (--split-mode, --tensor-split); absent = llama.cpp's defaults. */
  splitMode?: SplitMode;
  tensorSplit?: number[];
  /** native: one KV buffer for all sequences (prefix sharing by cell, the default) or one stream per sequence. */
  kvUnified: boolean | undefined;
  /** RAG documents: the share of document tokens recomputed in place before the question (default 0.5). */
  ragRecompute: number;
  /** RAG documents: host memory for documents' own KV (default 1 GiB; 0 = no joins). */
  ragCacheBytes: number;
  /** Host-pool bytes page-locked at start for KV states (engine/native/src/host-pool.h), or auto (pod.ts: hostWarmBytes). */
  kvHostWarm: number | "auto";
  /** Tokens of a prompt evaluated before the pod is ready, or auto (serving/warm-up.ts: two batches with layers on a GPU, else none). */
  warmUpTokens: number | "auto";
  prefill: string[];
  decode: string[];
  /** Decode: this pod's own URL for KV hand-offs (default: the address the hand-off arrived on). */
  advertiseUrl: string | undefined;
  /** Prefill/decode: how KV states move (engine/pd/kv-transport.ts); default auto. */
  kvTransport: KvTransportMode;
  /** Decode: TCP port of the native hand-off listener; default HTTP port + 1. */
  kvPort: number;
  /** Prefill: parallel TCP connections per hand-off; default (undefined) defaultTcpStreams(). */
  kvStreams: number | undefined;
  /** Prefill: tokens per part of a hand-off sent while the prompt computes, or auto; default 0 = whole states. */
  kvPartTokens: PartTokens;
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
  /** The model's name in the API (a Model resource's name, as the operator passes it); default the GGUF file's name. */
  servedModelName: string | undefined;
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

/** --warm-up-tokens: a count, or auto (the default). */
const warmUp = (v: string | undefined): number | "auto" => (v === undefined || v === "auto" ? "auto" : nonNegativeInt("warm-up-tokens", v, 0));
/** --kv-host-warm: bytes, or auto (the default). */
const hostWarm = (v: string | undefined): number | "auto" => (v === undefined || v === "auto" ? "auto" : nonNegativeInt("kv-host-warm", v, 0));

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
      "split-mode": { type: "string" },
      "tensor-split": { type: "string" },
      "kv-unified": { type: "string" },
      "rag-recompute": { type: "string" },
      "rag-cache-bytes": { type: "string" },
      "kv-host-warm": { type: "string" },
      "warm-up-tokens": { type: "string" },
      prefill: { type: "string" },
      decode: { type: "string" },
      "advertise-url": { type: "string" },
      "kv-transport": { type: "string" },
      "kv-port": { type: "string" },
      "kv-streams": { type: "string" },
      "kv-part-tokens": { type: "string" },
      aggregated: { type: "string" },
      policy: { type: "string" },
      "upstreams-file": { type: "string" },
      "discover-endpoints": { type: "boolean" },
      "max-streams": { type: "string" },
      "model-checksum": { type: "string" },
      "served-model-name": { type: "string" },
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
    kvHostWarm: hostWarm(v["kv-host-warm"]),
    warmUpTokens: warmUp(v["warm-up-tokens"]),
    prefill: urlList(v.prefill),
    decode: urlList(v.decode),
    advertiseUrl: advertiseUrl(v["advertise-url"]),
    kvTransport: kvTransport(v["kv-transport"]),
    kvPort: upTo("kv-port", v["kv-port"], 65535, positiveInt("port", v.port, 8080) + 1),
    kvStreams: v["kv-streams"] === undefined ? undefined : upTo("kv-streams", v["kv-streams"], TCP_STREAMS_MAX, 1),
    kvPartTokens: partTokens(v["kv-part-tokens"]),
    aggregated: urlList(v.aggregated),
    policy: routingPolicy(v.policy),
    upstreamsFile: v["upstreams-file"],
    discoverEndpoints: v["discover-endpoints"] ?? false,
    maxStreams: positiveInt("max-streams", v["max-streams"], 1024),
    modelChecksum: checksum(v["model-checksum"]),
    servedModelName: servedModelName(v["served-model-name"]),
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

function backendOptions(v: Values): Pick<EngineOptions, "backend" | "gpuLayers" | "decodeLookahead" | "pipelineDecode" | "kvUnified" | "splitMode" | "tensorSplit"> {
  const backend = v.backend ?? "native";
  if (!(BACKENDS as readonly string[]).includes(backend)) throw new Error(`--backend must be one of ${BACKENDS.join(", ")}; got ${backend}`);
  for (const name of ["gpu-layers", "decode-lookahead", "pipeline-decode", "kv-unified", "split-mode", "tensor-split"]) {
    if (backend !== "native" && v[name] !== undefined) throw new Error(`--${name} applies only to --backend native`);
  }
  return {
    backend: backend as Backend,
    gpuLayers: gpuLayers(v["gpu-layers"]),
    decodeLookahead: positiveInt("decode-lookahead", v["decode-lookahead"], 1),
    pipelineDecode: pipelineDecode(v["pipeline-decode"]),
    kvUnified: onOff("kv-unified", v["kv-unified"]),
    ...multiGpu(v),
  };
}

/** --split-mode and --tensor-split: a replica over several GPUs (absent: llama.cpp's layer split, shares by free memory). */
function multiGpu(v: Values): Pick<EngineOptions, "splitMode" | "tensorSplit"> {
  const mode = v["split-mode"];
  if (mode !== undefined && !(SPLIT_MODES as readonly string[]).includes(mode)) throw new Error(`--split-mode must be one of ${SPLIT_MODES.join(", ")}; got ${mode}`);
  const split = v["tensor-split"];
  const shares = split === undefined ? undefined : split.split(",").map(Number);
  if (shares && (shares.length > 16 || shares.some((x) => !Number.isFinite(x) || x < 0) || !shares.some((x) => x > 0))) {
    throw new Error(`--tensor-split must be 1 to 16 comma-separated shares >= 0, not all 0 (e.g. 3,1); got ${split}`);
  }
  return { ...(mode === undefined ? {} : { splitMode: mode as SplitMode }), ...(shares ? { tensorSplit: shares } : {}) };
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

/** --kv-part-tokens: auto or a count, 0 (default) = whole states. */
const partTokens = (v: string | undefined): PartTokens => (v === "auto" ? "auto" : nonNegativeInt("kv-part-tokens", v, 0));

/** A positive integer flag of at most max (--kv-port: a TCP port; --kv-streams: the stripes a listener takes). */
function upTo(name: string, v: string | undefined, max: number, fallback: number): number {
  const n = positiveInt(name, v, fallback);
  if (n > max) throw new Error(`--${name} must be 1..${max}, got ${n}`);
  return n;
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

function servedModelName(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  if (!/^[\x21-\x7e]{1,256}$/.test(v)) throw new Error(`--served-model-name must be 1-256 printable characters without spaces; got ${JSON.stringify(v)}`);
  if (v === "default") throw new Error("--served-model-name default: 'default' already names every pod's model");
  return v;
}

function checksum(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  if (!/^sha256:[a-f0-9]{64}$/.test(v)) throw new Error(`--model-checksum must be sha256:<64 hex digits>; got ${v}`);
  return v;
}
