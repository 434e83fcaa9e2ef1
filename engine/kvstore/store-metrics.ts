/** The kvstore role's metrics, `llmfleet_kv_*`, labelled by tier where they are per tier. */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { KvTier } from "./tier.ts";

const LOAD_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export interface KvStoreMetrics {
  readonly registry: Registry;
  hits: Counter<"tier">;
  misses: Counter;
  aliasHits: Counter;
  evictions: Counter<"tier">;
  demotions: Counter<"tier">;
  promotions: Counter<"tier">;
  readAhead: Counter<"outcome">;
  loadSeconds: Histogram<"tier">;
  tierErrors: Counter<"tier" | "op">;
  rejected: Counter<"reason">;
  /** Bytes of v2 blocks moved, by direction (in: uploaded, out: served) and path (tcp, http). */
  blockBytes: Counter<"direction" | "path">;
}

/** `aliasPairs`: size of the store's alias index (read at scrape time). */
export function createKvStoreMetrics(tiers: readonly KvTier[], withProcessMetrics = false, aliasPairs: () => number = () => 0): KvStoreMetrics {
  const registry = new Registry();
  registry.setDefaultLabels({ role: "kvstore" });
  if (withProcessMetrics) collectDefaultMetrics({ register: registry, prefix: "llmfleet_" });
  const registers = [registry];
  const perTier = (pick: (t: KvTier) => number) =>
    function (this: Gauge<"tier">): void {
      for (const t of tiers) this.set({ tier: t.name }, pick(t));
    };
  new Gauge({ name: "llmfleet_kv_bytes", help: "Bytes held per tier", labelNames: ["tier"], registers, collect: perTier((t) => t.stats().bytes) });
  new Gauge({
    name: "llmfleet_kv_blocks",
    help: "Entries (block-aligned KV states) held per tier",
    labelNames: ["tier"],
    registers,
    collect: perTier((t) => t.stats().blocks),
  });
  new Gauge({
    name: "llmfleet_kv_corrupt_entries",
    help: "Entries rejected by checksum on read, per tier",
    labelNames: ["tier"],
    registers,
    collect: perTier((t) => t.corrupt),
  });
  new Gauge({
    name: "llmfleet_kv_alias_pairs",
    help: "(alias, entry) pairs in the alias index: intermediate block keys that name a longer entry",
    registers,
    collect(): void {
      this.set(aliasPairs());
    },
  });
  return {
    registry,
    hits: new Counter({ name: "llmfleet_kv_hits_total", help: "Gets answered, by the tier that held the entry", labelNames: ["tier"], registers }),
    misses: new Counter({ name: "llmfleet_kv_misses_total", help: "Gets that no tier could answer", registers }),
    aliasHits: new Counter({
      name: "llmfleet_kv_alias_hits_total",
      help: "Lookups answered by a longer entry through an intermediate block key (the client cuts it to the prefix)",
      registers,
    }),
    evictions: new Counter({ name: "llmfleet_kv_evictions_total", help: "Entries evicted for capacity, per tier", labelNames: ["tier"], registers }),
    demotions: new Counter({
      name: "llmfleet_kv_demotions_total",
      help: "Evicted entries written to the next tier (label: target tier)",
      labelNames: ["tier"],
      registers,
    }),
    promotions: new Counter({
      name: "llmfleet_kv_promotions_total",
      help: "Hits in a lower tier copied into the first tier (label: source tier)",
      labelNames: ["tier"],
      registers,
    }),
    readAhead: new Counter({
      name: "llmfleet_kv_read_ahead_total",
      help: "Reads started ahead of a load after a lookup hit below the memory tier (started), handed to the load (taken), or dropped unused (expired)",
      labelNames: ["outcome"],
      registers,
    }),
    loadSeconds: new Histogram({
      name: "llmfleet_kv_load_seconds",
      help: "Time to read an entry from a tier",
      labelNames: ["tier"],
      buckets: LOAD_BUCKETS,
      registers,
    }),
    tierErrors: new Counter({
      name: "llmfleet_kv_tier_errors_total",
      help: "Tier operations that failed (the tier is skipped)",
      labelNames: ["tier", "op"],
      registers,
    }),
    rejected: new Counter({ name: "llmfleet_kv_rejected_total", help: "Writes refused (bad key, checksum mismatch)", labelNames: ["reason"], registers }),
    blockBytes: new Counter({
      name: "llmfleet_kv_block_bytes_total",
      help: "Bytes of v2 entry blocks moved, by direction (in: uploaded, out: served) and path (tcp: native stream, http)",
      labelNames: ["direction", "path"],
      registers,
    }),
  };
}
