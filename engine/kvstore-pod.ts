/** Assembles the kvstore role from its options: tiers (opened in order), metrics, app. */
import type { Express } from "express";
import { usableMemory } from "./memory.ts";
import { DiskTier } from "./kvstore/disk-tier.ts";
import { MemoryTier } from "./kvstore/memory-tier.ts";
import { S3Tier } from "./kvstore/s3-tier.ts";
import { createKvStoreApp, type KvStoreConfig } from "./http/kvstore-app.ts";
import { createKvStoreMetrics, type KvStoreMetrics } from "./kvstore/store-metrics.ts";
import type { KvTier } from "./kvstore/tier.ts";
import type { TierSpec } from "./kvstore/tier-spec.ts";
import { TieredStore } from "./kvstore/tiered-store.ts";
import { fleetGuard, fleetTokenSource } from "./access/fleet-auth.ts";
import { kvStreamAddon, useAddonCrc32c, type KvListener, type KvTransportMode } from "./pd/kv-transport.ts";

export interface KvStorePodOptions extends KvStoreConfig {
  tiers: TierSpec[];
  withProcessMetrics?: boolean;
  /** Bound of the alias index (TieredStoreOptions.maxAliasPairs). */
  maxAliasPairs?: number;
  env?: NodeJS.ProcessEnv;
  /** The fleet's token file: requests without the token are refused (engine/access/fleet-auth.ts). Default none. */
  fleetTokenFile?: string;
  /**
   * How v2 blocks move (engine/pd/kv-transport.ts): auto/tcp listen on kvPort with the native TCP
   * stream (tcp: or refuse to start) and push blocks to pods that ask; http (the default here; main
   * passes --kv-transport, default auto) moves them over HTTP only.
   */
  kvTransport?: KvTransportMode;
  /** TCP port of the block listener (main: --kv-port, default --port + 1; 0: any free port). */
  kvPort?: number;
  /** Address the block listener binds (main: --host). Default 127.0.0.1. */
  host?: string;
  /** Blocks one push to a loading pod sends at once, each on its own connection (main: --kv-streams); default 4. */
  kvStreams?: number;
}

export interface KvStorePod extends AsyncDisposable {
  app: Express;
  store: TieredStore;
  metrics: KvStoreMetrics;
  /** The native block listener, when blocks may arrive over TCP. */
  tcp: KvListener | undefined;
}

/** Default when no --tier is given: one memory tier of 1 GiB. */
export const DEFAULT_TIERS: TierSpec[] = [{ name: "ram", medium: "memory", capacityBytes: 2 ** 30, ttlMs: undefined }];

export async function openTier(spec: TierSpec, env: NodeJS.ProcessEnv = process.env): Promise<KvTier> {
  if (spec.medium === "memory") return new MemoryTier(spec);
  if (spec.medium === "disk") return DiskTier.open(spec);
  return S3Tier.open(spec, env);
}

/** The store's native block listener, or undefined (HTTP only) with a line saying why. */
async function blockListener(opts: KvStorePodOptions): Promise<KvListener | undefined> {
  const mode = opts.kvTransport ?? "http";
  if (mode === "http") return undefined;
  const addon = await kvStreamAddon();
  try {
    if (!addon) throw new Error("the native addon is not available");
    useAddonCrc32c(addon);
    // Blocks wait in staging only until their manifest arrives (a TTL frees the rest).
    const { port, handle } = addon.kvListen(opts.host ?? "127.0.0.1", opts.kvPort ?? 0, {
      maxBytes: Math.min(8 * 2 ** 30, Math.floor(usableMemory() / 4)),
      maxConnections: 64,
      ttlMs: 60_000,
    });
    return { addon, port, handle };
  } catch (err) {
    if (mode === "tcp") throw new Error(`--kv-transport tcp: the KV store cannot listen for blocks over TCP: ${(err as Error).message}`, { cause: err });
    process.stderr.write(`llmfleet kvstore: KV blocks move over HTTP only (${(err as Error).message})\n`);
    return undefined;
  }
}

export async function createKvStorePod(opts: KvStorePodOptions): Promise<KvStorePod> {
  const tiers: KvTier[] = [];
  for (const spec of opts.tiers.length > 0 ? opts.tiers : DEFAULT_TIERS) tiers.push(await openTier(spec, opts.env));
  const aliasIndex: { store?: TieredStore } = {};
  const metrics = createKvStoreMetrics(tiers, opts.withProcessMetrics ?? false, () => aliasIndex.store?.aliases.pairs ?? 0);
  // LLMFLEET_KV_LOOKUP_WINDOW=1: one key at a time (bench:kv-lookup's baseline).
  const lookupWindow = Number((opts.env ?? process.env).LLMFLEET_KV_LOOKUP_WINDOW) || undefined;
  const store = new TieredStore(tiers, metrics, { blockTokens: opts.blockTokens, maxAliasPairs: opts.maxAliasPairs, lookupWindow });
  aliasIndex.store = store;
  await store.indexAliases();
  const config = { blockTokens: opts.blockTokens, codec: opts.codec, tenantSalt: opts.tenantSalt, kvFormat: opts.kvFormat ?? "v2" };
  const token = fleetTokenSource(opts.fleetTokenFile, { log: (l) => process.stderr.write(`${l}\n`) });
  const tcp = await blockListener(opts);
  return {
    app: createKvStoreApp({ store, metrics, config, guard: fleetGuard(token), ...(tcp ? { tcp } : {}), ...(opts.kvStreams ? { sendWindow: opts.kvStreams } : {}) }),
    store,
    metrics,
    tcp,
    [Symbol.asyncDispose]: () => {
      token[Symbol.dispose]();
      if (tcp) tcp.addon.kvClose(tcp.handle);
      return store[Symbol.asyncDispose]();
    },
  };
}
