/**
 * The engine's Prometheus metrics, all prefixed `llmfleet_` and labelled with the pod's role.
 * The autoscaler reads TTFT, ITL, queue depth and running sequences from here.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

export type Role = "aggregated" | "prefill" | "decode" | "router";

const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const ITL_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28];
const BYTES_BUCKETS = [1e4, 1e5, 1e6, 4e6, 16e6, 64e6, 256e6, 1e9];

export interface EngineMetrics {
  readonly registry: Registry;
  readonly role: Role;
  ttft: Histogram;
  /** Where a request's time to its first token goes (phase: tokenize, lease, kv_load, prefill; the rest is the first step). */
  requestPhase: Histogram<"phase">;
  interTokenLatency: Histogram;
  e2eLatency: Histogram;
  queueDepth: Gauge;
  runningSequences: Gauge;
  requests: Counter<"status">;
  promptTokens: Counter;
  generatedTokens: Counter;
  prefixHitTokens: Counter;
  ragJoinedTokens: Counter;
  /** RAG documents a join needed: from the document cache, or computed alone then (a miss). */
  ragDocuments: Counter<"outcome">;
  ragCacheBytes: Gauge;
  handoffBytes: Histogram;
  handoffSeconds: Histogram<"stage">;
  handoffFailures: Counter<"reason">;
  /** Router: request body parsed to the first upstream chosen (prefix extraction and hashing, ranking). */
  routerDecision: Histogram;
  /** Hand-offs by the mechanism that moved the state (tcp, http) and outcome (ok, error). */
  handoffs: Counter<"path" | "outcome">;
  /** Prefill: hand-offs that carried the answer's first token, sampled here (serving/first-token.ts). */
  handoffFirstTokens: Counter;
  /** Prefill: of those, the hand-offs answered with their first token before the state was sent (pd/handoff-routes.ts firstTokenAhead). */
  handoffsAhead: Counter;
}

export function createEngineMetrics(role: Role, withProcessMetrics = false): EngineMetrics {
  const registry = new Registry();
  registry.setDefaultLabels({ role });
  if (withProcessMetrics) collectDefaultMetrics({ register: registry, prefix: "llmfleet_" });
  const registers = [registry];
  return {
    registry,
    role,
    ttft: new Histogram({ name: "llmfleet_ttft_seconds", help: "Time to first token", buckets: LATENCY_BUCKETS, registers }),
    requestPhase: new Histogram({
      name: "llmfleet_request_phase_seconds",
      help: "Phases of a request before its answer: tokenize (arrival to its prompt tokenised: the chat template, the tokenizer), lease (a sequence free, the prompt's prefix found), kv_load (the KV store's lookup and load), prefill (the context computed; a short tail after a reused prefix goes into the first step instead)",
      labelNames: ["phase"],
      buckets: LATENCY_BUCKETS,
      registers,
    }),
    interTokenLatency: new Histogram({
      name: "llmfleet_inter_token_latency_seconds",
      help: "Time between consecutive generated tokens",
      buckets: ITL_BUCKETS,
      registers,
    }),
    e2eLatency: new Histogram({ name: "llmfleet_e2e_latency_seconds", help: "Request latency, arrival to last token", buckets: LATENCY_BUCKETS, registers }),
    queueDepth: new Gauge({ name: "llmfleet_queue_depth", help: "Requests waiting for a sequence", registers }),
    runningSequences: new Gauge({ name: "llmfleet_running_sequences", help: "Sequences leased to requests", registers }),
    requests: new Counter({ name: "llmfleet_requests_total", help: "Requests by HTTP status", labelNames: ["status"], registers }),
    promptTokens: new Counter({ name: "llmfleet_prompt_tokens_total", help: "Prompt tokens received", registers }),
    generatedTokens: new Counter({ name: "llmfleet_generated_tokens_total", help: "Tokens generated", registers }),
    prefixHitTokens: new Counter({ name: "llmfleet_prefix_hit_tokens_total", help: "Prompt tokens whose KV was reused instead of recomputed", registers }),
    ragJoinedTokens: new Counter({ name: "llmfleet_rag_joined_tokens_total", help: "RAG document tokens joined from the document's own KV instead of computed in place (also counted as prefix hits)", registers }),
    ragDocuments: new Counter({
      name: "llmfleet_rag_documents_total",
      help: "RAG documents a join used: outcome cached (the document's own KV was in host memory), stored (loaded from the KV store, its last partial block computed) or computed (alone, then joined: a miss; size --rag-cache-bytes)",
      labelNames: ["outcome"],
      registers,
    }),
    ragCacheBytes: new Gauge({ name: "llmfleet_rag_cache_bytes", help: "Host memory held by RAG documents' own KV (--rag-cache-bytes is its bound)", registers }),
    handoffBytes: new Histogram({ name: "llmfleet_kv_handoff_bytes", help: "KV state bytes per prefill->decode hand-off", buckets: BYTES_BUCKETS, registers }),
    handoffSeconds: new Histogram({
      name: "llmfleet_kv_handoff_seconds",
      help: "Time per hand-off stage (send on prefill, receive/import on decode, total on router)",
      labelNames: ["stage"],
      buckets: LATENCY_BUCKETS,
      registers,
    }),
    handoffFailures: new Counter({ name: "llmfleet_kv_handoff_failures_total", help: "Failed hand-offs by reason", labelNames: ["reason"], registers }),
    routerDecision: new Histogram({
      name: "llmfleet_router_decision_seconds",
      help: "Router: time from a request's parsed body to the choice of its first upstream (prefix extraction and hashing, ranking)",
      buckets: [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1],
      registers,
    }),
    handoffs: new Counter({
      name: "llmfleet_kv_handoffs_total",
      help: "Prefill->decode hand-offs by the mechanism that moved the state (tcp, http) and outcome",
      labelNames: ["path", "outcome"],
      registers,
    }),
    handoffFirstTokens: new Counter({
      name: "llmfleet_kv_handoff_first_tokens_total",
      help: "Prefill->decode hand-offs that carried the answer's first token, sampled on the prefill pod (the rest hand off the prompt but its last token)",
      registers,
    }),
    handoffsAhead: new Counter({
      name: "llmfleet_kv_handoffs_ahead_total",
      help: "Of the hand-offs that carried a first token, those answered with it before the state was sent (the decode pod waits for the state; the client's first token does not)",
      registers,
    }),
  };
}

/** Observes the time since its last call (the first: since `from`, a performance.now()) as the named phase. */
export function phaseTimer(h: Histogram<"phase">, from: number): (phase: string) => void {
  let at = from;
  return (phase) => {
    const now = performance.now();
    h.observe({ phase }, (now - at) / 1000);
    at = now;
  };
}
