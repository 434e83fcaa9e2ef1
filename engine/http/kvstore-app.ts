/**
 * createKvStoreApp: the kvstore role's HTTP API (never listens by itself).
 *   GET    /v1/kv/config        {blockTokens, codec, tenantSalt, tiers}: what pods key and encode with
 *   POST   /v1/kv/lookup        {keys: [...], aliases?: true} (keys[i] = prefix of i+1 blocks)
 *                                -> {index, key, tier, entryKey, entryBlocks}: keys[index] is the longest
 *                                held prefix; GET entryKey, an entry of entryBlocks blocks (> index + 1
 *                                when only a longer entry starting with it is held, which needs
 *                                `aliases: true`; the client cuts the state to index + 1 blocks)
 *   GET    /v1/kv/:key          the entry (x-llmfleet-kv-tier names the tier), 404 on a miss
 *   PUT    /v1/kv/:key          stores an entry; 400 when its checksum does not match
 *   DELETE /v1/kv/:key
 *   GET    /health, /ready, /metrics
 */
import express, { type Express, type Request, type Response } from "express";
import { errorHandler, HttpError, notFound } from "./http-error.ts";
import { jsonBody } from "./json-body.ts";
import { isValidKvEntry } from "../kvstore/kv-entry.ts";
import type { KvStoreMetrics } from "../kvstore/store-metrics.ts";
import { checkKey } from "../kvstore/tier.ts";
import type { TieredStore } from "../kvstore/tiered-store.ts";

export interface KvStoreConfig {
  blockTokens: number;
  codec: string;
  tenantSalt: string;
}

export interface KvStoreAppDeps {
  store: TieredStore;
  metrics: KvStoreMetrics;
  config: KvStoreConfig;
  /** Largest entry accepted. Default 4 GiB. */
  maxEntryBytes?: number;
}

function keyParam(req: Request, metrics: KvStoreMetrics): string {
  try {
    return checkKey(String(req.params.key));
  } catch (err) {
    metrics.rejected.inc({ reason: "bad_key" });
    throw new HttpError(400, (err as Error).message, { param: "key", code: "bad_key" });
  }
}

function lookupKeys(body: unknown): { keys: string[]; aliases: boolean } {
  const b = body as { keys?: unknown; aliases?: unknown } | undefined;
  const keys = b?.keys;
  if (!Array.isArray(keys) || keys.some((k) => typeof k !== "string")) throw new HttpError(400, "keys must be an array of strings", { param: "keys" });
  return { keys: (keys as string[]).map(checkKey), aliases: b?.aliases === true };
}

function routes(app: Express, deps: KvStoreAppDeps): void {
  const { store, metrics } = deps;
  app.get("/v1/kv/config", (_req, res) => {
    res.json({ ...deps.config, tiers: store.tiers.map((t) => ({ name: t.name, medium: t.medium })) });
  });
  app.post("/v1/kv/lookup", jsonBody({ limit: 4 * 2 ** 20 }), async (req: Request, res: Response) => {
    const { keys, aliases } = lookupKeys(req.body);
    const found = await store.longest(keys, aliases);
    res.json({
      index: found.index,
      key: found.index >= 0 ? keys[found.index] : null,
      tier: found.tier ?? null,
      entryKey: found.entry?.key ?? null,
      entryBlocks: found.entry?.blocks ?? null,
    });
  });
  app.get("/v1/kv/:key", async (req: Request, res: Response) => {
    const hit = await store.get(keyParam(req, metrics));
    if (!hit) throw new HttpError(404, "no such KV entry", { code: "kv_miss" });
    res.set({ "content-type": "application/octet-stream", "x-llmfleet-kv-tier": hit.tier }).send(hit.value);
  });
  const raw = express.raw({ type: () => true, limit: deps.maxEntryBytes ?? 4 * 2 ** 30 });
  app.put("/v1/kv/:key", raw, async (req: Request, res: Response) => {
    const key = keyParam(req, metrics);
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    if (!isValidKvEntry(body)) {
      metrics.rejected.inc({ reason: "checksum" });
      throw new HttpError(400, "KV entry failed its checksum (corrupt or truncated upload)", { code: "bad_checksum" });
    }
    await store.put(key, body);
    res.status(201).end();
  });
  app.delete("/v1/kv/:key", async (req: Request, res: Response) => {
    await store.delete(keyParam(req, metrics));
    res.status(204).end();
  });
}

export function createKvStoreApp(deps: KvStoreAppDeps): Express {
  const app = express();
  app.disable("x-powered-by");
  app.get("/health", (_req, res) => {
    res.json({ status: "ok", role: "kvstore" });
  });
  app.get("/ready", (_req, res) => {
    res.json({ ready: true, role: "kvstore" });
  });
  app.get("/metrics", async (_req, res) => {
    res.set("Content-Type", deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics());
  });
  routes(app, deps);
  app.use(notFound);
  app.use(errorHandler());
  return app;
}
