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
 *   Entry format v2 (kv-blocks.ts, docs/kv-store.md):
 *   POST   /v1/kv/blocks/has    {keys: [...]} -> {have: [bool...]}: a writer uploads only the missing blocks
 *   POST   /v1/kv/blocks/info   {keys: [...]} -> {blocks: [{bytes, crc32c} | null ...]}: a writer's manifest names held blocks as stored
 *   PUT    /v1/kv/blocks/:key   one stored block, x-llmfleet-crc32c: its CRC-32C (400 on a mismatch); 201, or
 *                                200 with {bytes, crc32c} of the block already held under the key (kept)
 *   GET    /v1/kv/blocks/:key   one stored block
 *   PUT    /v1/kv/:key          with a manifest ("LFKB"): stores it once every block it names is held
 *                                (blocks sent over TCP to --kv-port are taken from staging and checked
 *                                against the manifest here); 409 naming the missing blocks otherwise,
 *                                or the held blocks the manifest names by another size or CRC-32C
 *   GET    /v1/kv/:key/stream   the manifest frame, then each block as u32 length | u32 CRC-32C | bytes
 *   POST   /v1/kv/blocks/send   {keys, crc32c?, port, id, order?} -> NDJSON, a line per block as it is staged:
 *                                the store pushes the blocks with the native TCP stream (kv-stream.h)
 *                                to the asking pod's listener at <its address>:port, ids id.0, id.1, ...;
 *                                order "manifest" (default) or "any": the meta block first, then each
 *                                block as its read ends (kv-push.ts)
 *   GET    /health, /ready, /metrics
 */
import express, { type Express, type Request, type Response } from "express";
import { errorHandler, HttpError, notFound } from "./http-error.ts";
import { jsonBody } from "./json-body.ts";
import { isValidKvEntry } from "../kvstore/kv-entry.ts";
import type { BlockSum } from "../kvstore/tiered-store.ts";
import { blockFrameHead, decodeManifest, isManifest, KvBlockError, verifyBlockAsync, type BlockEntry, type KvManifest } from "../kvstore/kv-blocks.ts";
import { crc32cAsync } from "../kvstore/crc32c.ts";
import type { KvListener } from "../pd/kv-transport.ts";
import { pushBlocks, type PushOrder } from "./kv-push.ts";
import type { KvStoreMetrics } from "../kvstore/store-metrics.ts";
import { checkKey } from "../kvstore/tier.ts";
import type { TieredStore } from "../kvstore/tiered-store.ts";

export interface KvStoreConfig {
  blockTokens: number;
  codec: string;
  tenantSalt: string;
  /** Newest format pods may write (--kv-format); default v2. Both are always read and stored. */
  kvFormat?: "v1" | "v2";
}

export interface KvStoreAppDeps {
  store: TieredStore;
  metrics: KvStoreMetrics;
  config: KvStoreConfig;
  /** Refuses requests that do not come from the fleet (engine/access/fleet-auth.ts); default none. */
  guard?: express.RequestHandler;
  /** Largest entry accepted. Default 4 GiB. */
  maxEntryBytes?: number;
  /** The native TCP listener v2 blocks are uploaded to (--kv-port), and the addon that pushes blocks to pods; default none (HTTP only). */
  tcp?: KvListener;
  /** Blocks one push to a pod sends at once (--kv-streams); default PUSH_SEND_WINDOW (4). */
  sendWindow?: number;
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

/**
 * Codecs a v2 block may carry (block-codec.ts): none (raw rows), compact2b (compact's transform per
 * block, what a `compact` store's pods write), compact1b (what they wrote before compact2b; a pod
 * still writes it to a store that lists it and not compact2b). A pod writes v2 only when the block
 * codec of the store's codec is listed; the other codecs (lossless, research) stay on v1 entries.
 */
export const BLOCK_CODECS = ["none", "compact2b", "compact1b"] as const;

function keyList(body: unknown, field = "keys"): string[] {
  const keys = (body as Record<string, unknown> | undefined)?.[field];
  if (!Array.isArray(keys) || keys.some((k) => typeof k !== "string")) throw new HttpError(400, `${field} must be an array of strings`, { param: field });
  return (keys as string[]).map(checkKey);
}

/**
 * The manifest's blocks against the store: staged ones (sent over TCP) checked and stored; held ones
 * compared with what is held. missing: named but neither held nor staged; mismatched: held (or
 * staged) with another size or CRC-32C than the manifest says — another writer's block under the
 * same key, which the writer must name instead (409, it writes again).
 */
async function takeStaged(deps: KvStoreAppDeps, m: KvManifest, upload: string | undefined): Promise<{ missing: string[]; mismatched: string[] }> {
  const missing: string[] = [];
  const mismatched: string[] = [];
  // What each block is held as (one look at the tiers per block, all at once); undefined: not held.
  const held = await Promise.all(m.blocks.map((b) => deps.store.blockSum(b.key)));
  for (const [i, block] of m.blocks.entries()) {
    const found = await checkBlock(deps, block, held[i], upload);
    if (found === "missing") missing.push(block.key);
    else if (found === "mismatched") mismatched.push(block.key);
  }
  return { missing, mismatched };
}

/**
 * The manifest PUT's `?upload=`: the writer's id its TCP-staged blocks carry (`<upload>.<key>`), so
 * two writers of one prefix never take each other's; absent (older pods): staged under the key.
 */
function uploadParam(req: Request): string | undefined {
  const v = req.query.upload;
  if (v === undefined) return undefined;
  if (typeof v !== "string" || !/^[A-Za-z0-9_-]{1,32}$/.test(v)) throw new HttpError(400, "upload must be 1-32 characters of [A-Za-z0-9_-]", { param: "upload" });
  return v;
}

/** One block a manifest names: held (`held`, its size and CRC-32C) or staged (taken, checked, stored), against the manifest's. */
async function checkBlock(deps: KvStoreAppDeps, block: BlockEntry, held: BlockSum | undefined, upload: string | undefined): Promise<"ok" | "missing" | "mismatched"> {
  const taken = held ? undefined : deps.tcp?.addon.kvTake(deps.tcp.handle, upload ? `${upload}.${block.key}` : block.key);
  if (!held && !taken) return "missing";
  const sum = held ?? (await storeStaged(deps, block, taken!.state));
  return sum !== null && sum.bytes === block.bytes && sum.crc32c === block.crc32c ? "ok" : "mismatched";
}

/** A block staged over TCP, checked against its manifest entry and stored; null when it is not that block. */
async function storeStaged(deps: KvStoreAppDeps, block: BlockEntry, state: Buffer): Promise<BlockSum | null> {
  try {
    await verifyBlockAsync(block, state);
  } catch {
    // Corrupt in transit, or staged by another writer of the same key: either way not this manifest's.
    deps.metrics.rejected.inc({ reason: "checksum" });
    return null;
  }
  deps.metrics.blockBytes.inc({ direction: "in", path: "tcp" }, state.length);
  return deps.store.putBlock(block.key, state, block.crc32c);
}

function blockRoutes(app: Express, deps: KvStoreAppDeps, raw: express.RequestHandler): void {
  const { store, metrics } = deps;
  app.post("/v1/kv/blocks/has", jsonBody({ limit: 4 * 2 ** 20 }), async (req: Request, res: Response) => {
    res.json({ have: await store.hasMany(keyList(req.body)) });
  });
  app.post("/v1/kv/blocks/info", jsonBody({ limit: 4 * 2 ** 20 }), async (req: Request, res: Response) => {
    res.json({ blocks: (await store.blockSumsOf(keyList(req.body))).map((b) => b ?? null) });
  });
  app.put("/v1/kv/blocks/:key", raw, async (req: Request, res: Response) => {
    const key = keyParam(req, metrics);
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const want = Number(req.get("x-llmfleet-crc32c"));
    if (!Number.isInteger(want)) throw new HttpError(400, "x-llmfleet-crc32c must name the block's CRC-32C", { param: "x-llmfleet-crc32c" });
    if ((await crc32cAsync(body)) !== want) {
      metrics.rejected.inc({ reason: "checksum" });
      throw new HttpError(400, "KV block failed its CRC-32C (corrupt or truncated upload)", { code: "bad_checksum" });
    }
    metrics.blockBytes.inc({ direction: "in", path: "http" }, body.length);
    // 200 and the held block's size and CRC-32C when another writer's is already stored under the key.
    const held = await store.putBlock(key, body, want);
    res.status(held.stored ? 201 : 200).json({ bytes: held.bytes, crc32c: held.crc32c });
  });
  app.get("/v1/kv/blocks/:key", async (req: Request, res: Response) => {
    const hit = await store.get(keyParam(req, metrics));
    if (!hit) throw new HttpError(404, "no such KV block", { code: "kv_miss" });
    metrics.blockBytes.inc({ direction: "out", path: "http" }, hit.value.length);
    res.set({ "content-type": "application/octet-stream", "x-llmfleet-kv-tier": hit.tier }).send(hit.value);
  });
  app.get("/v1/kv/:key/stream", async (req: Request, res: Response) => {
    const hit = await store.get(keyParam(req, metrics));
    if (!hit) throw new HttpError(404, "no such KV entry", { code: "kv_miss" });
    if (!isManifest(hit.value)) throw new HttpError(409, "a v1 entry has no block stream: GET /v1/kv/:key", { code: "not_v2" });
    const m = decodeManifest(hit.value);
    res.set({ "content-type": "application/x-llmfleet-kv-stream", "x-llmfleet-kv-tier": hit.tier });
    res.write(hit.value);
    for (const block of m.blocks) {
      const got = await store.get(block.key);
      // A block evicted since the manifest was written: the stream stops short, the reader recomputes.
      if (!got) return void res.destroy();
      metrics.blockBytes.inc({ direction: "out", path: "http" }, got.value.length);
      const ok = res.write(blockFrameHead(got.value, block.crc32c)) && res.write(got.value);
      if (!ok) await new Promise((r) => res.once("drain", r));
    }
    res.end();
  });
  app.post("/v1/kv/blocks/send", jsonBody({ limit: 4 * 2 ** 20 }), async (req: Request, res: Response) => {
    const tcp = deps.tcp;
    if (!tcp) throw new HttpError(409, "this store moves blocks over HTTP only (no --kv-port)", { code: "no_tcp" });
    const { keys, port, id, order } = sendRequest(req.body);
    // Only ever to the pod that asked: its address, the port it names.
    const host = (req.socket.remoteAddress ?? "127.0.0.1").replace(/^::ffff:/, "");
    res.set({ "content-type": "application/x-ndjson" });
    const error = await pushBlocks(deps, { tcp, keys, host, port, id }, order, (line) => res.write(`${JSON.stringify(line)}\n`));
    res.end(error ? `${JSON.stringify(error)}\n` : undefined);
  });
}

/** The body of POST /v1/kv/blocks/send, checked. */
function sendRequest(body: unknown): { keys: string[]; port: number; id: string; order: PushOrder } {
  const keys = keyList(body);
  const { port, id, order = "manifest" } = body as { port?: unknown; id?: unknown; order?: unknown };
  if (!Number.isInteger(port) || (port as number) <= 0 || (port as number) > 65535) throw new HttpError(400, "port must be a TCP port", { param: "port" });
  if (typeof id !== "string" || !/^[A-Za-z0-9_.-]{1,64}$/.test(id)) throw new HttpError(400, "id must be 1-64 characters of [A-Za-z0-9_.-]", { param: "id" });
  if (order !== "manifest" && order !== "any") throw new HttpError(400, 'order must be "manifest" or "any"', { param: "order" });
  return { keys, port: port as number, id, order };
}

function routes(app: Express, deps: KvStoreAppDeps): void {
  const { store, metrics } = deps;
  const raw = express.raw({ type: () => true, limit: deps.maxEntryBytes ?? 4 * 2 ** 30 });
  app.get("/v1/kv/config", (_req, res) => {
    const { kvFormat, ...config } = deps.config;
    res.json({
      ...config,
      tiers: store.tiers.map((t) => ({ name: t.name, medium: t.medium })),
      formats: kvFormat === "v1" ? ["v1"] : ["v1", "v2"],
      uploadIds: true,
      blockCodecs: BLOCK_CODECS,
      ...(deps.tcp ? { kvPort: deps.tcp.port } : {}),
    });
  });
  blockRoutes(app, deps, raw);
  app.post("/v1/kv/lookup", jsonBody({ limit: 4 * 2 ** 20 }), async (req: Request, res: Response) => {
    const { keys, aliases } = lookupKeys(req.body);
    const found = await store.longest(keys, aliases);
    if (found.entry) store.readAheadOf(found.entry.key, found.tier);
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
  app.put("/v1/kv/:key", raw, async (req: Request, res: Response) => {
    const key = keyParam(req, metrics);
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    if (isManifest(body)) {
      let m: KvManifest;
      try {
        m = decodeManifest(body);
      } catch (err) {
        if (!(err instanceof KvBlockError)) throw err;
        metrics.rejected.inc({ reason: "checksum" });
        throw new HttpError(400, err.message, { code: "bad_checksum" });
      }
      const { missing, mismatched } = await takeStaged(deps, m, uploadParam(req));
      if (missing.length > 0)
        throw new HttpError(409, `the manifest names ${missing.length} block(s) the store does not hold: upload them first (first: ${missing[0]})`, {
          code: "missing_blocks",
        });
      if (mismatched.length > 0)
        throw new HttpError(
          409,
          `the manifest names ${mismatched.length} block(s) by another size or CRC-32C than the store holds under their keys (first: ${mismatched[0]}): ask /v1/kv/blocks/info and name those`,
          { code: "block_mismatch" },
        );
      await store.put(key, body);
      res.status(201).end();
      return;
    }
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
  if (deps.guard) app.use(deps.guard);
  routes(app, deps);
  app.use(notFound);
  app.use(errorHandler());
  return app;
}
