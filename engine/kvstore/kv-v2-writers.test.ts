/**
 * Two writers of one prefix whose KV bytes differ (a GPU computes a prefix's KV bit-differently from
 * batch to batch; seen on the H100 as "kv block 0 … failed its CRC-32C" on a later load): the
 * store keeps the first block under a key, refuses a manifest that names a held block by another
 * CRC-32C, and the writer names what is held — every entry stays loadable. Real kvstore pod over
 * HTTP, synthetic states.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Registry } from "prom-client";
import { listen, type Running } from "../../testing/engine.ts";
import { syntheticSeqState } from "../../testing/kv-state.ts";
import { createKvStorePod, type KvStorePod } from "../kvstore-pod.ts";
import { KvBlockClient, type BlockWriteTarget } from "./block-client.ts";
import { createKvClientMetrics } from "./client-metrics.ts";
import { crc32c } from "./crc32c.ts";
import { decodeManifest, encodeManifest, splitState } from "./kv-blocks.ts";
import { kvStreamAddon } from "../pd/kv-transport.ts";

const B = 32;
let store: KvStorePod;
let http: Running;

before(async () => {
  store = await createKvStorePod({ blockTokens: B, codec: "none", tenantSalt: "w", tiers: [], kvTransport: "http" });
  http = await listen(store.app);
});
after(async () => {
  await http?.[Symbol.asyncDispose]();
  await store?.[Symbol.asyncDispose]();
});

const chain = (name: string, n: number): string[] => Array.from({ length: n }, (_, i) => createHash("sha256").update(`${name}/${i}`).digest("hex"));
const client = (): KvBlockClient =>
  new KvBlockClient({ url: http.url, headers: () => ({}), model: "m", metrics: createKvClientMetrics(new Registry()), transport: "http", timeoutMs: 10_000 });
const config = { blockTokens: B, formats: ["v2"], blockCodecs: ["none"] };
const target = (keys: string[]): BlockWriteTarget => ({ keys, config, codec: "none", kvNamespace: "", signal: AbortSignal.timeout(10_000) });

async function load(key: string, tokens: number): Promise<Buffer> {
  const frame = (await store.store.get(key))!.value;
  return (await client().load(frame, key, { tokens, kvNamespace: "" }, AbortSignal.timeout(10_000))).state;
}

test("two writers of one prefix with different bytes: the first block stays, manifests name what is held, both entries load", async () => {
  // A and B hold the same tokens (same keys, same shapes) and different K/V bytes.
  const a = syntheticSeqState({ tokens: 2 * B, seed: 1 });
  const b = syntheticSeqState({ tokens: 2 * B, seed: 2 });
  const keys = chain("doc", 2);
  const first = await client().write(a, target(keys));
  const m = decodeManifest((await store.store.get(first.key))!.value);
  const block0 = m.blocks[1]!;

  // Another writer's upload of block 0 under the same key: kept out, answered with what is held.
  const other = splitState(b, B).blocks[0]!;
  assert.notEqual(crc32c(other), block0.crc32c, "the two writers' block 0 differ");
  const put = await fetch(`${http.url}/v1/kv/blocks/${block0.key}`, {
    method: "PUT",
    headers: { "content-type": "application/octet-stream", "x-llmfleet-crc32c": String(crc32c(other)) },
    body: other as unknown as BodyInit,
  });
  assert.equal(put.status, 200);
  assert.deepEqual(await put.json(), { bytes: block0.bytes, crc32c: block0.crc32c });
  assert.ok((await load(first.key, 2 * B)).equals(a), "the first entry still loads, byte for byte");

  // A manifest naming the held block by the other writer's CRC-32C is refused with a clear 409.
  const wrong = { ...m, blocks: m.blocks.map((x, i) => (i === 1 ? { ...x, crc32c: crc32c(other) } : x)) };
  const refused = await fetch(`${http.url}/v1/kv/${first.key}`, {
    method: "PUT",
    headers: { "content-type": "application/x-llmfleet-kv-manifest" },
    body: encodeManifest(wrong) as unknown as BodyInit,
  });
  assert.equal(refused.status, 409);
  const err = (await refused.json()) as { error: { code: string; message: string } };
  assert.equal(err.error.code, "block_mismatch");
  assert.match(err.error.message, /CRC-32C/);

  // The second writer's own entry (same prefix, then its own block): it names the held block 0.
  const second = await client().write(b, target(keys.slice(0, 1).concat(chain("doc-b", 2).slice(1))));
  const loaded = await load(second.key, 2 * B);
  const [ga, gb, gl] = [splitState(a, B), splitState(b, B), splitState(loaded, B)];
  assert.ok(gl.blocks[0]!.equals(ga.blocks[0]!), "block 0 is the first writer's");
  assert.ok(gl.blocks[1]!.equals(gb.blocks[1]!), "block 1 is the second writer's own");
});

test("a block stored by another writer after the has-check: the upload is answered with the held block, which the manifest names", async () => {
  const a = syntheticSeqState({ tokens: B, seed: 3 });
  const b = syntheticSeqState({ tokens: B, seed: 4 });
  const keys = chain("race", 1);
  const c = client();
  // The other writer's block lands between this writer's has-check and its upload.
  const has = (c as unknown as { has: (k: string[], s: AbortSignal) => Promise<boolean[]> }).has.bind(c);
  let raced = false;
  (c as unknown as { has: typeof has }).has = async (k, s) => {
    const got = await has(k, s);
    if (!raced) {
      raced = true;
      await client().write(b, target(keys));
    }
    return got;
  };
  const w = await c.write(a, target(keys));
  assert.ok(raced);
  const loaded = await load(w.key, B);
  assert.ok(splitState(loaded, B).blocks[0]!.equals(splitState(b, B).blocks[0]!), "the entry names the block the store holds (the other writer's)");
});

test("a block gone between the upload and the manifest (evicted): the store answers 409 and the writer writes again, once", async () => {
  const a = syntheticSeqState({ tokens: B, seed: 5 });
  const keys = chain("evicted", 1);
  const c = client();
  const send = (c as unknown as { sendMissing: (...args: unknown[]) => Promise<unknown> }).sendMissing.bind(c);
  let sends = 0;
  (c as unknown as { sendMissing: typeof send }).sendMissing = async (...args) => {
    const got = await send(...args);
    if (sends++ === 0) {
      const { blocks } = args[1] as { blocks: { key: string; kind: string }[] };
      await store.store.delete(blocks.find((x) => x.kind === "kv")!.key);
    }
    return got;
  };
  const w = await c.write(a, target(keys));
  assert.equal(sends, 2, "written twice: the first manifest was refused");
  assert.ok((await load(w.key, B)).equals(a));
});

/** A kvstore pod that takes blocks over TCP, the config it answers, and clients of it over TCP (a new one per call). */
async function tcpStorePod(salt: string): Promise<{ pod: KvStorePod; config: BlockWriteTarget["config"]; client: () => KvBlockClient } & AsyncDisposable> {
  const pod = await createKvStorePod({ blockTokens: B, codec: "none", tenantSalt: salt, tiers: [], kvTransport: "tcp", kvPort: 0 });
  const http = await listen(pod.app);
  const addon = (await kvStreamAddon())!;
  const config = (await (await fetch(`${http.url}/v1/kv/config`)).json()) as BlockWriteTarget["config"];
  return {
    pod,
    config,
    client: () => new KvBlockClient({ url: http.url, headers: () => ({}), model: "m", metrics: createKvClientMetrics(new Registry()), transport: "tcp", addon, timeoutMs: 10_000 }),
    async [Symbol.asyncDispose](): Promise<void> {
      await http[Symbol.asyncDispose]();
      await pod[Symbol.asyncDispose]();
    },
  };
}

test("two writers of one prefix uploading over TCP at once: neither takes the other's staged blocks, both entries store and load", async () => {
  await using tcp = await tcpStorePod("w2");
  const { pod: tcpStore, config: tcpConfig, client: tcpClient } = tcp;
  assert.equal(tcpConfig.uploadIds, true, "the store stages TCP uploads per writer");
  const [a, b] = [syntheticSeqState({ tokens: 3 * B, seed: 7 }), syntheticSeqState({ tokens: 3 * B, seed: 8 })];
  // The same prefix keys, the second writer's entry one block longer so the two manifests differ.
  const keys = chain("tcp-race", 3);
  const [wa, wb] = await Promise.all([
    tcpClient().write(a, { ...target(keys.slice(0, 2)), config: tcpConfig }),
    tcpClient().write(b, { ...target(keys), config: tcpConfig }),
  ]);
  assert.equal(wa.path, "tcp");
  assert.equal(wb.path, "tcp");
  for (const [w, tokens] of [[wa, 2 * B], [wb, 3 * B]] as const) {
    const frame = (await tcpStore.store.get(w.key))!.value;
    const loaded = (await tcpClient().load(frame, w.key, { tokens, kvNamespace: "" }, AbortSignal.timeout(10_000))).state;
    assert.equal(splitState(loaded, B).blocks.length, tokens / B, "the entry loads whole");
  }
});

test("over TCP, a write-back's blocks are gathered and a load's placed by the addon off the event loop: the same bytes, and a corrupt block is named", async () => {
  await using tcp = await tcpStorePod("w3");
  const { pod: tcpStore, config: tcpConfig } = tcp;
  const c = tcp.client();
  // Exactly the entry's tokens (what a write-back exports): kvGather cuts the blocks (590 KB each).
  const a = syntheticSeqState({ tokens: 3 * B, seed: 9 });
  const w = await c.write(a, { ...target(chain("gather", 3)), config: tcpConfig });
  const frame = (await tcpStore.store.get(w.key))!.value;
  const m = decodeManifest(frame);
  splitState(a, B).blocks.forEach((raw, i) => assert.equal(m.blocks[i + 1]!.crc32c, crc32c(raw), `block ${i}'s CRC-32C from the gather`));
  // Loaded: each block placed into the state by kvScatter, its CRC-32C checked as it is copied.
  const loaded = (await c.load(frame, w.key, { tokens: 3 * B, kvNamespace: "" }, AbortSignal.timeout(10_000))).state;
  assert.ok(loaded.equals(a), "byte for byte");
  const held = (await tcpStore.store.get(m.blocks[2]!.key))!.value;
  held[100]! ^= 0xff;
  await assert.rejects(c.load(frame, w.key, { tokens: 3 * B, kvNamespace: "" }, AbortSignal.timeout(10_000)), /kv block 1 \w+ failed its CRC-32C/);
});

test("a write says when it has read its state, before its upload ends: bytes overwritten then are not what is stored, on both split paths", async () => {
  await using tcp = await tcpStorePod("w4");
  // kvGather's copy (the addon, a state of exactly the entry's tokens) and the codec worker's (no addon, HTTP).
  const paths = [
    { name: "gather", c: tcp.client(), cfg: tcp.config, pod: tcp.pod },
    { name: "worker", c: client(), cfg: config, pod: store },
  ];
  for (const [n, { name, c, cfg, pod }] of paths.entries()) {
    const original = syntheticSeqState({ tokens: 3 * B, seed: 20 + n });
    const state = Buffer.from(original);
    let ended = false;
    let endedAtRead: boolean | undefined;
    const onStateRead = (): void => {
      endedAtRead = ended;
      state.fill(0); // a pool block given back and taken by another state
    };
    const w = await c.write(state, { ...target(chain(`read-${name}`, 3)), config: cfg, onStateRead }).finally(() => (ended = true));
    assert.equal(endedAtRead, false, `${name}: said read, and before the write ended`);
    const frame = (await pod.store.get(w.key))!.value;
    const loaded = await c.load(frame, w.key, { tokens: 3 * B, kvNamespace: "" }, AbortSignal.timeout(10_000));
    assert.ok(loaded.state.equals(original), `${name}: the stored entry is the state as it was`);
  }
});
