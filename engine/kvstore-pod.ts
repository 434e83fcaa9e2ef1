/** Assembles the kvstore role from its options: tiers (opened in order), metrics, app. */
import type { Express } from "express";
import { DiskTier } from "./kvstore/disk-tier.ts";
import { MemoryTier } from "./kvstore/memory-tier.ts";
import { S3Tier } from "./kvstore/s3-tier.ts";
import { createKvStoreApp, type KvStoreConfig } from "./http/kvstore-app.ts";
import { createKvStoreMetrics, type KvStoreMetrics } from "./kvstore/store-metrics.ts";
import type { KvTier } from "./kvstore/tier.ts";
import type { TierSpec } from "./kvstore/tier-spec.ts";
import { TieredStore } from "./kvstore/tiered-store.ts";
import { fleetGuard, fleetTokenSource } from "./access/fleet-auth.ts";

export interface KvStorePodOptions extends KvStoreConfig {
  tiers: TierSpec[];
  withProcessMetrics?: boolean;
  /** Bound of the alias index (TieredStoreOptions.maxAliasPairs). */
  maxAliasPairs?: number;
  env?: NodeJS.ProcessEnv;
  /** The fleet's token file: requests without the token are refused (engine/access/fleet-auth.ts). Default none. */
  fleetTokenFile?: string;
}

export interface KvStorePod extends AsyncDisposable {
  app: Express;
  store: TieredStore;
  metrics: KvStoreMetrics;
}

/** Default when no --tier is given: one memory tier of 1 GiB. */
export const DEFAULT_TIERS: TierSpec[] = [{ name: "ram", medium: "memory", capacityBytes: 2 ** 30, ttlMs: undefined }];

export async function openTier(spec: TierSpec, env: NodeJS.ProcessEnv = process.env): Promise<KvTier> {
  if (spec.medium === "memory") return new MemoryTier(spec);
  if (spec.medium === "disk") return DiskTier.open(spec);
  return S3Tier.open(spec, env);
}

export async function createKvStorePod(opts: KvStorePodOptions): Promise<KvStorePod> {
  const tiers: KvTier[] = [];
  for (const spec of opts.tiers.length > 0 ? opts.tiers : DEFAULT_TIERS) tiers.push(await openTier(spec, opts.env));
  const aliasIndex: { store?: TieredStore } = {};
  const metrics = createKvStoreMetrics(tiers, opts.withProcessMetrics ?? false, () => aliasIndex.store?.aliases.pairs ?? 0);
  const store = new TieredStore(tiers, metrics, { blockTokens: opts.blockTokens, maxAliasPairs: opts.maxAliasPairs });
  aliasIndex.store = store;
  await store.indexAliases();
  const config = { blockTokens: opts.blockTokens, codec: opts.codec, tenantSalt: opts.tenantSalt };
  const token = fleetTokenSource(opts.fleetTokenFile, { log: (l) => process.stderr.write(`${l}\n`) });
  return {
    app: createKvStoreApp({ store, metrics, config, guard: fleetGuard(token) }),
    store,
    metrics,
    [Symbol.asyncDispose]: () => {
      token[Symbol.dispose]();
      return store[Symbol.asyncDispose]();
    },
  };
}
