/** Pod-side KV store metrics (prefill and aggregated pods with --kv-store), in the pod's registry. */
import { Counter, Histogram, type Registry } from "prom-client";

export interface KvClientMetrics {
  loads: Counter<"outcome">;
  loadSeconds: Histogram;
  reusedTokens: Counter;
  writes: Counter<"outcome">;
  /** Bytes of v2 blocks: sent (by path), deduped (the store held them: not sent), loaded (by path). */
  blockBytes: Counter<"op" | "path">;
  /** Seconds spent per stage of loads (lookup, fetch, import) and write-backs (export, split, send, manifest; yield: waiting for the pod's loads). */
  stageSeconds: Counter<"op" | "stage">;
}

export function createKvClientMetrics(registry: Registry): KvClientMetrics {
  const registers = [registry];
  return {
    loads: new Counter({
      name: "llmfleet_kv_store_loads_total",
      help: "Prefix loads from the KV store by outcome: hit, miss, error (store down), timeout, corrupt (checksum), mismatch, recompute_faster (held, but recomputing was expected to be faster)",
      labelNames: ["outcome"],
      registers,
    }),
    loadSeconds: new Histogram({
      name: "llmfleet_kv_store_load_seconds",
      help: "Lookup + fetch + import of a cached prefix",
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    }),
    reusedTokens: new Counter({
      name: "llmfleet_kv_store_reused_tokens_total",
      help: "Prompt tokens loaded from the KV store instead of recomputed",
      registers,
    }),
    writes: new Counter({
      name: "llmfleet_kv_store_writes_total",
      help: "Block-aligned states written to the KV store by outcome: stored, error, skipped_busy (requests were waiting), skipped_budget (too many bytes in flight)",
      labelNames: ["outcome"],
      registers,
    }),
    blockBytes: new Counter({
      name: "llmfleet_kv_store_block_bytes_total",
      help: "Bytes of v2 entry blocks by op (sent, deduped: the store already held them, loaded) and path (tcp: native stream, http)",
      labelNames: ["op", "path"],
      registers,
    }),
    stageSeconds: new Counter({
      name: "llmfleet_kv_store_stage_seconds_total",
      help: "Seconds by op and stage: load (lookup: hashing and the store's lookup; fetch: manifest and blocks moved and placed; place, within fetch: blocks checked and placed on the event loop; import_parts, within fetch: blocks imported into the engine as they arrived, on a unified KV cache, waits for the engine included; import: into the engine, or for parts what was left after the last block) and write (export: the state off the engine; split: cut into blocks and coded; send: blocks the store lacks; manifest; yield, within split and send: waiting while the pod loads)",
      labelNames: ["op", "stage"],
      registers,
    }),
  };
}

/** Counts the seconds since `t0` (performance.now()) as stage `stage` of `op`; returns now, the next stage's start. */
export function countStage(metrics: KvClientMetrics, op: "load" | "write", stage: string, t0: number): number {
  const now = performance.now();
  metrics.stageSeconds.inc({ op, stage }, (now - t0) / 1000);
  return now;
}
