/**
 * KV entry format v2 through real pods and a real kvstore (tiny synthetic GGUF, real llama.cpp):
 * entries written as blocks and loaded on another pod over the native TCP stream and over HTTP,
 * with greedy output identical to recomputing; a write sends only the blocks the store lacks;
 * v1 entries still load from a v2 store; a corrupt or truncated block is refused with a clear
 * error and the prompt recomputed; blocks are placed as they arrive (streaming order); a push
 * request with a bad order, port or id is refused naming the field.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import express from "express";
import { listen, postJson, startPod, completionWithReuse, type Running, type RunningPod } from "../../testing/engine.ts";
import { createKvStorePod, type KvStorePod } from "../kvstore-pod.ts";
import { decodeManifest, isManifest, StateJoiner } from "./kv-blocks.ts";
import { KvBlockClient } from "./block-client.ts";
import { createKvClientMetrics } from "./client-metrics.ts";
import { Registry } from "prom-client";

const MODEL = "synthetic://tiny";
const BLOCK = 16;
let store: KvStorePod;
let storeHttp: Running;
let plain: RunningPod;

const doc = Array.from({ length: 60 }, (_, i) => `w${i % 23}`).join(" ");

before(async () => {
  store = await createKvStorePod({ blockTokens: BLOCK, codec: "none", tenantSalt: "t2", tiers: [], kvTransport: "auto", kvPort: 0 });
  storeHttp = await listen(store.app);
  plain = await startPod({ model: MODEL });
});
after(async () => {
  await plain?.[Symbol.asyncDispose]();
  await storeHttp?.[Symbol.asyncDispose]();
  await store?.[Symbol.asyncDispose]();
});

const withStore = (url: string, extra: Record<string, unknown> = {}): Promise<RunningPod> => startPod({ model: MODEL, kvStore: url, ...extra });
const metrics = async (url: string): Promise<string> => (await fetch(`${url}/metrics`)).text();
const blockBytes = (text: string, op: string, path: string): number =>
  Number(new RegExp(`llmfleet_kv_store_block_bytes_total\\{[^}]*op="${op}",path="${path}"[^}]*\\} (\\d+)`).exec(text)?.[1] ?? 0);

async function manifestOf(key: string): Promise<ReturnType<typeof decodeManifest>> {
  const hit = await store.store.get(key);
  assert.ok(hit && isManifest(hit.value), "the store holds a v2 manifest under the entry key");
  return decodeManifest(hit.value);
}

for (const transport of ["tcp", "http"] as const) {
  test(`a v2 entry written by one pod loads on another over ${transport}, with the same greedy output`, async () => {
    assert.ok(store.tcp, "the store listens for blocks");
    await using a = await withStore(storeHttp.url, { kvTransport: transport });
    await using b = await withStore(storeHttp.url, { kvTransport: transport, flashAttention: true, parallel: 3 });
    const p = `via ${transport} ${doc}`;
    const warm = await postJson(`${a.url}/v1/contexts`, { text: p });
    const key = warm.json.key as string;
    const m = await manifestOf(key);
    assert.equal(m.blocks[0]!.kind, "meta");
    assert.equal(m.blocks.length - 1, m.tokens / BLOCK);
    assert.ok(blockBytes(await metrics(a.url), "sent", transport) > 0, "blocks were sent on the chosen path");
    const got = await completionWithReuse(b.url, `${p} question`);
    assert.equal(got.text, (await completionWithReuse(plain.url, `${p} question`)).text);
    assert.equal(got.cached, m.tokens);
    const text = await metrics(b.url);
    assert.match(text, /llmfleet_kv_store_loads_total\{[^}]*outcome="hit"[^}]*\} 1/);
    assert.ok(blockBytes(text, "loaded", transport) > 0, `loaded over ${transport}`);
  });
}

test("a write sends only the blocks the store lacks (dedup)", async () => {
  await using a = await withStore(storeHttp.url);
  const base = `dedup ${doc}`;
  const baseKey = (await postJson(`${a.url}/v1/contexts`, { text: base })).json.key as string;
  const before = await metrics(a.url);
  const sentBefore = blockBytes(before, "sent", "tcp");
  const dedupedBefore = blockBytes(before, "deduped", "tcp");
  const longer = `${base} ${doc} and more words after it`;
  const key = (await postJson(`${a.url}/v1/contexts`, { text: longer })).json.key as string;
  const m = await manifestOf(key);
  const text = await metrics(a.url);
  const sent = blockBytes(text, "sent", "tcp") - sentBefore;
  const deduped = blockBytes(text, "deduped", "tcp") - dedupedBefore;
  const total = m.blocks.reduce((n, b) => n + b.bytes, 0);
  assert.ok(deduped > 0, "some blocks were already held");
  assert.ok(sent < total, `sent ${sent} of ${total}`);
  assert.equal(sent + deduped, total);
  // The same blocks in both manifests: stored once.
  const mb = await manifestOf(baseKey);
  assert.deepEqual(
    mb.blocks.slice(1).map((b) => b.key),
    m.blocks.slice(1, mb.blocks.length).map((b) => b.key),
  );
});

test("a manifest naming blocks the store lacks is refused (409)", async () => {
  await using a = await withStore(storeHttp.url);
  const key = (await postJson(`${a.url}/v1/contexts`, { text: `refused ${doc}` })).json.key as string;
  const frame = (await store.store.get(key))!.value;
  const m = decodeManifest(frame);
  const lastKey = m.blocks.at(-1)!.key;
  await store.store.delete(lastKey);
  const res = await fetch(`${storeHttp.url}/v1/kv/${key}`, { method: "PUT", body: frame as unknown as BodyInit });
  assert.equal(res.status, 409);
  assert.match(await res.text(), /does not hold: upload them first/);
});

for (const fault of ["corrupt", "truncated"] as const) {
  test(`a ${fault} block is refused with a clear error and the prompt is recomputed`, async () => {
    await using a = await withStore(storeHttp.url);
    const p = `${fault} ${doc}`;
    const key = (await postJson(`${a.url}/v1/contexts`, { text: p })).json.key as string;
    const m = await manifestOf(key);
    const victim = m.blocks[2]!;
    const ram = store.store.tiers[0]!;
    const good = (await ram.get(victim.key))!;
    const bad = fault === "corrupt" ? Buffer.from(good) : good.subarray(0, good.length - 5);
    if (fault === "corrupt") bad.writeUInt8(bad[bad.length >> 1]! ^ 0xff, bad.length >> 1);
    await ram.put(victim.key, bad);
    const lines: string[] = [];
    const err = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      lines.push(String(chunk));
      return (err as (...a: unknown[]) => boolean)(chunk, ...rest);
    }) as typeof process.stderr.write;
    try {
      await using b = await withStore(storeHttp.url);
      const got = await completionWithReuse(b.url, `${p}?`);
      assert.equal(got.cached, 0);
      assert.equal(got.text, (await completionWithReuse(plain.url, `${p}?`)).text);
      assert.match(await metrics(b.url), /llmfleet_kv_store_loads_total\{[^}]*outcome="corrupt"[^}]*\} 1/);
    } finally {
      process.stderr.write = err;
      await ram.put(victim.key, good);
    }
    const want = fault === "corrupt" ? /kv block 1 [0-9a-f]{12} failed its CRC-32C .*corrupt.*recomputing/ : /kv block 1 [0-9a-f]{12} is \d+ bytes, the manifest says \d+ \(truncated\).*recomputing/;
    assert.ok(
      lines.some((l) => want.test(l)),
      lines.join(""),
    );
  });
}

test("v1 entries already stored still load from a store that takes v2", async () => {
  const dir = await mkdtemp(join(tmpdir(), "kv-v1-"));
  try {
    const tier = { name: "disk", medium: "disk" as const, path: dir, capacityBytes: 2 ** 30, ttlMs: undefined };
    const p = `v1 ${doc}`;
    let key: string;
    {
      // A store whose codec has no per-block form: pods write v1 entries ("LFKE").
      await using old = await createKvStorePod({ blockTokens: BLOCK, codec: "lossless", tenantSalt: "t3", tiers: [tier] });
      await using oldHttp = await listen(old.app);
      await using a = await withStore(oldHttp.url);
      key = (await postJson(`${a.url}/v1/contexts`, { text: p })).json.key as string;
      assert.equal((await old.store.get(key))!.value.subarray(0, 4).toString(), "LFKE");
    }
    await using fresh = await createKvStorePod({ blockTokens: BLOCK, codec: "none", tenantSalt: "t3", tiers: [tier], kvTransport: "auto", kvPort: 0 });
    await using freshHttp = await listen(fresh.app);
    assert.deepEqual(((await (await fetch(`${freshHttp.url}/v1/kv/config`)).json()) as { formats: string[] }).formats, ["v1", "v2"]);
    await using b = await withStore(freshHttp.url);
    const got = await completionWithReuse(b.url, `${p}!`);
    assert.ok(got.cached >= BLOCK, `cached ${got.cached}`);
    assert.equal(got.text, (await completionWithReuse(plain.url, `${p}!`)).text);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("streaming: block i is placed before block i+1 is sent (HTTP stream)", async () => {
  await using a = await withStore(storeHttp.url);
  const key = (await postJson(`${a.url}/v1/contexts`, { text: `streaming ${doc}` })).json.key as string;
  const frame = (await store.store.get(key))!.value;
  const m = decodeManifest(frame);
  const blocks = await Promise.all(m.blocks.map(async (b) => (await store.store.get(b.key))!.value));
  // A store that sends block i+1 only once the pod has placed block i: a reader that waited for the
  // whole entry would never finish.
  const placed: number[] = [];
  const waiters = new Map<number, () => void>();
  const placedNow = (i: number): void => {
    placed.push(i);
    waiters.get(i)?.();
  };
  const app = express();
  app.get("/v1/kv/:key/stream", async (_req, res) => {
    res.write(frame);
    for (const [i, b] of blocks.entries()) {
      if (i > 0) await new Promise<void>((r) => (placed.includes(i - 1) ? r() : waiters.set(i - 1, r)));
      const h = Buffer.alloc(8);
      h.writeUInt32LE(b.length, 0);
      h.writeUInt32LE(m.blocks[i]!.crc32c, 4);
      res.write(Buffer.concat([h, b]));
    }
    res.end();
  });
  await using http = await listen(app);
  const client = new KvBlockClient({ url: http.url, headers: () => ({}), model: m.model, metrics: createKvClientMetrics(new Registry()), transport: "http", timeoutMs: 5000 });
  const origPlace = StateJoiner.prototype.place;
  let joinerPlaced = -1;
  StateJoiner.prototype.place = function (i: number, data: Buffer): void {
    origPlace.call(this, i, data);
    joinerPlaced = i;
    placedNow(i + 1);
  };
  try {
    placedNow(0); // the meta block is parsed as soon as it arrives (the joiner is built from it)
    const { state, path } = await client.load(frame, key, { tokens: m.tokens, kvNamespace: "" }, AbortSignal.timeout(10_000));
    assert.equal(path, "http");
    assert.equal(joinerPlaced, m.blocks.length - 2);
    assert.equal(state.length, m.stateBytes);
    assert.deepEqual(
      placed,
      m.blocks.map((_, i) => i),
    );
  } finally {
    StateJoiner.prototype.place = origPlace;
  }
});

test("the store's block metrics count what moved, by path", async () => {
  const text = await metrics(storeHttp.url);
  for (const direction of ["in", "out"]) {
    for (const path of ["tcp", "http"]) {
      const got = Number(new RegExp(`llmfleet_kv_block_bytes_total\\{[^}]*direction="${direction}",path="${path}"[^}]*\\} (\\d+)`).exec(text)?.[1] ?? 0);
      assert.ok(got > 0, `store moved ${got} bytes ${direction} over ${path}`);
    }
  }
});

/**
 * A store whose native kv port cannot be reached (a proxy or firewall between pods and store that
 * passes only HTTP): here a proxy in front of the store that names a closed port wherever a kv
 * port is exchanged — the store's advertised kvPort, and the pod's listener port the store is
 * asked to push a load's blocks to.
 */
async function httpOnlyProxy(target: string): Promise<Running> {
  const closed = await listen(express());
  const closedPort = Number(new URL(closed.url).port);
  await closed[Symbol.asyncDispose]();
  const app = express();
  app.use(express.raw({ type: () => true, limit: "64mb" }));
  app.use(async (req, res) => {
    let body: Buffer | undefined = req.method === "GET" || req.method === "HEAD" ? undefined : (req.body as Buffer);
    if (req.path === "/v1/kv/blocks/send" && body) body = Buffer.from(JSON.stringify({ ...(JSON.parse(body.toString()) as object), port: closedPort }));
    const headers = Object.fromEntries(Object.entries(req.headers).filter(([k]) => !["host", "content-length", "connection"].includes(k))) as Record<string, string>;
    const up = await fetch(`${target}${req.originalUrl}`, { method: req.method, headers, ...(body ? { body: body as unknown as BodyInit } : {}) });
    let out = Buffer.from(await up.arrayBuffer());
    if (req.path === "/v1/kv/config" && up.ok) out = Buffer.from(JSON.stringify({ ...(JSON.parse(out.toString()) as object), kvPort: closedPort }));
    res.status(up.status);
    up.headers.forEach((v, k) => !["content-length", "content-encoding", "transfer-encoding", "connection"].includes(k) && res.setHeader(k, v));
    res.end(out);
  });
  return listen(app);
}

test("auto mode falls back to HTTP both ways when the store's kv port cannot be reached, with the same greedy output", async () => {
  await using proxy = await httpOnlyProxy(storeHttp.url);
  await using a = await withStore(proxy.url, { kvTransport: "auto" });
  await using b = await withStore(proxy.url, { kvTransport: "auto", parallel: 2 });
  const p = `behind an HTTP-only proxy ${doc}`;
  const key = (await postJson(`${a.url}/v1/contexts`, { text: p })).json.key as string;
  const m = await manifestOf(key);
  const written = await metrics(a.url);
  assert.ok(blockBytes(written, "sent", "http") > 0, "the write went over HTTP");
  assert.equal(blockBytes(written, "sent", "tcp"), 0, "nothing was sent over the unreachable kv port");
  const got = await completionWithReuse(b.url, `${p} question`);
  assert.equal(got.text, (await completionWithReuse(plain.url, `${p} question`)).text);
  assert.equal(got.cached, m.tokens, "the entry loaded, not recomputed");
  const loaded = await metrics(b.url);
  assert.ok(blockBytes(loaded, "loaded", "http") > 0, "the load came over HTTP");
  assert.equal(blockBytes(loaded, "loaded", "tcp"), 0);
});

test("a compact store's entries are v2 with compact2b blocks: written coded, loaded over TCP and HTTP, shared prefixes sent once", async () => {
  await using compact = await createKvStorePod({ blockTokens: BLOCK, codec: "compact", tenantSalt: "t4", tiers: [], kvTransport: "auto", kvPort: 0 });
  await using compactHttp = await listen(compact.app);
  await using a = await withStore(compactHttp.url);
  const p = `compact ${doc}`;
  const key = (await postJson(`${a.url}/v1/contexts`, { text: p })).json.key as string;
  const hit = await compact.store.get(key);
  assert.ok(hit && isManifest(hit.value), "the entry is a v2 manifest");
  const m = decodeManifest(hit.value);
  assert.equal(m.blocks[0]!.codec, "none", "the meta block is stored as it is");
  for (const b of m.blocks.slice(1)) {
    assert.equal(b.codec, "compact2b");
    assert.ok(b.bytes < b.rawBytes, `kv block ${b.index}: ${b.bytes} coded of ${b.rawBytes}`);
  }
  assert.equal(m.stateBytes, m.blocks.reduce((n, b) => n + b.rawBytes, 0));
  for (const transport of ["tcp", "http"] as const) {
    await using b = await withStore(compactHttp.url, { kvTransport: transport });
    const got = await completionWithReuse(b.url, `${p} question`);
    // The TCP pod wrote its longer prompt back: the HTTP pod may load that entry.
    assert.ok(got.cached >= m.tokens, `loaded over ${transport}, not recomputed (cached ${got.cached})`);
    assert.ok(blockBytes(await metrics(b.url), "loaded", transport) > 0, `loaded over ${transport}`);
  }
  const longer = `${p} ${doc} and more words after it`;
  const longKey = (await postJson(`${a.url}/v1/contexts`, { text: longer })).json.key as string;
  const ml = decodeManifest((await compact.store.get(longKey))!.value);
  assert.deepEqual(
    ml.blocks.slice(1, m.blocks.length).map((b) => b.key),
    m.blocks.slice(1).map((b) => b.key),
    "the shorter entry's coded blocks are the longer one's",
  );
  assert.ok(blockBytes(await metrics(a.url), "deduped", "tcp") > 0, "held blocks were not sent again");
});

test("POST /v1/kv/blocks/send refuses a bad order, port or id with a 400 naming the field", async () => {
  const keys = ["ab".repeat(32)];
  for (const [body, param] of [
    [{ keys, port: 9, id: "x", order: "sideways" }, "order"],
    [{ keys, port: 0, id: "x", order: "any" }, "port"],
    [{ keys, port: 9, id: "bad id!", order: "manifest" }, "id"],
  ] as const) {
    const res = await postJson(`${storeHttp.url}/v1/kv/blocks/send`, body);
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.equal((res.json.error as { param?: string }).param, param);
  }
});
