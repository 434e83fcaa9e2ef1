/**
 * Read-ahead (read-ahead.ts): a lookup hit below memory starts reading the entry and its blocks;
 * each read is handed once to the load's get (the tier is read once per key), unused reads expire,
 * and what is held stays under its bound; an entry of small blocks gets more reads in flight than
 * one of large blocks. On a real disk tier, and end to end: a v2 entry written
 * by one pod to a disk-only kvstore loads on another over TCP with the same greedy output, every
 * block read ahead and taken.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DiskTier } from "./disk-tier.ts";
import { TieredStore } from "./tiered-store.ts";
import { createKvStoreMetrics } from "./store-metrics.ts";
import { encodeManifest, type KvManifest } from "./kv-blocks.ts";
import type { KvTier } from "./tier.ts";
import { createKvStorePod } from "../kvstore-pod.ts";
import { ReadAhead } from "./read-ahead.ts";
import { readWindow } from "./in-windows.ts";
import { completionWithReuse, listen, postJson, startPod } from "../../testing/engine.ts";

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "llmfleet-read-ahead-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const hex = (n: number): string => n.toString(16).padStart(64, "0");

/** A real disk tier whose reads are counted per key. */
async function countedDisk(name: string): Promise<{ tier: KvTier; reads: Map<string, number> }> {
  const disk = await DiskTier.open({ name, medium: "disk", capacityBytes: 2 ** 30, ttlMs: undefined, path: join(dir, name) });
  const reads = new Map<string, number>();
  const get = disk.get.bind(disk);
  disk.get = async (key: string) => {
    reads.set(key, (reads.get(key) ?? 0) + 1);
    return get(key);
  };
  return { tier: disk, reads };
}

/** A v2 manifest under `entry` naming a meta block and n - 1 kv blocks of `size` bytes (blocks i + 1 filled with i + 1), all stored. */
async function storeEntry(store: TieredStore, entry: string, n: number, size: number): Promise<string[]> {
  const keys = Array.from({ length: n }, (_, i) => hex(entry.charCodeAt(63) * 0x1000 + i));
  for (const [i, k] of keys.entries()) await store.putBlock(k, Buffer.alloc(size, i + 1));
  const m: KvManifest = {
    model: "m",
    tokens: (n - 1) * 16,
    blockTokens: 16,
    stateBytes: n * size,
    prefixKeys: [...keys.slice(2), entry],
    blocks: keys.map((key, i) =>
      i === 0
        ? { key, kind: "meta", codec: "none", rawBytes: size, bytes: size, crc32c: 0 }
        : { key, kind: "kv", index: i - 1, pos0: (i - 1) * 16, tokens: 16, codec: "none", rawBytes: size, bytes: size, crc32c: 0 },
    ),
  };
  await store.put(entry, encodeManifest(m));
  return keys;
}

const counter = async (store: { registry: { getSingleMetricAsString(n: string): Promise<string> } }, outcome: string): Promise<number> =>
  Number(new RegExp(`outcome="${outcome}"[^}]*\\} (\\d+)`).exec(await store.registry.getSingleMetricAsString("llmfleet_kv_read_ahead_total"))?.[1] ?? 0);

test("a lookup hit on disk reads the entry and its blocks ahead; the load's gets take them, each key read from the tier once", async () => {
  const { tier, reads } = await countedDisk("once");
  const metrics = createKvStoreMetrics([tier]);
  const store = new TieredStore([tier], metrics, { readAhead: { window: 3 } });
  const entry = hex(1);
  const keys = await storeEntry(store, entry, 10, 4096);
  reads.clear();
  const found = await store.longest([entry]);
  store.readAheadOf(found.entry!.key, found.tier);
  await store.settled();
  assert.equal(await counter(metrics, "started"), 11, "the manifest and its 10 blocks");
  for (const [i, k] of [entry, ...keys].entries()) {
    const hit = await store.get(k);
    assert.ok(hit, `block ${i} answered`);
    if (i > 0) assert.equal(hit.value[0], i, `block ${i - 1}'s bytes`);
  }
  assert.deepEqual([...reads.values()], Array(11).fill(1), "each key read from the tier once");
  assert.equal(await counter(metrics, "taken"), 11);
  assert.equal(await store.get(keys[0]!).then((h) => h?.value.length), 4096, "a later get reads the tier again");
  assert.equal(reads.get(keys[0]!), 2);
});

test("reads in flight: up to 32 of an entry's small blocks, 8 of its large ones (readWindow)", async () => {
  assert.deepEqual(
    [240e3, 2 ** 20, 4 * 2 ** 20, 32 * 2 ** 20, 0].map(readWindow),
    [32, 32, 16, 8, 32],
  );
  for (const [size, want] of [
    [240e3, 32],
    [32 * 2 ** 20, 8],
  ] as const) {
    const keys = Array.from({ length: 41 }, (_, i) => hex(0xb000 + i));
    const m: KvManifest = {
      model: "m",
      tokens: 40 * 16,
      blockTokens: 16,
      stateBytes: 41 * size,
      prefixKeys: [hex(0xbeef)],
      blocks: keys.map((key, i) => ({ key, kind: i === 0 ? "meta" : "kv", ...(i > 0 ? { index: i - 1, pos0: (i - 1) * 16, tokens: 16 } : {}), codec: "none", rawBytes: size, bytes: size, crc32c: 0 })),
    };
    let now = 0;
    let most = 0;
    // The manifest answers at once; each block after 2 ms, as a slow tier would, holding only a byte (under the byte bound).
    const ahead = new ReadAhead(async (key) => {
      if (key === hex(0xbeef)) return { value: encodeManifest(m), tier: "s3" };
      most = Math.max(most, ++now);
      await new Promise((r) => setTimeout(r, 2));
      now--;
      return { value: Buffer.alloc(1), tier: "s3" };
    });
    await ahead.entry(hex(0xbeef));
    assert.equal(most, want, `${size}-byte blocks: reads in flight`);
  }
});

test("read-ahead stops at its byte bound, drops reads no load takes after its TTL, and never runs for a memory tier", async () => {
  const { tier, reads } = await countedDisk("bounded");
  const metrics = createKvStoreMetrics([tier]);
  const store = new TieredStore([tier], metrics, { readAhead: { window: 1, maxBytes: 3 * 4096, ttlMs: 100 } });
  const entry = hex(2);
  await storeEntry(store, entry, 10, 4096);
  reads.clear();
  store.readAheadOf(entry, tier.name);
  await store.settled();
  // The manifest (small) plus blocks until 3 blocks' bytes are held.
  assert.equal(await counter(metrics, "started"), 4);
  await new Promise((r) => setTimeout(r, 150));
  store.readAheadOf(entry, tier.name); // a new lookup sweeps the old reads first
  await store.settled();
  assert.equal(await counter(metrics, "expired"), 4, "the unused reads are dropped");

  const memMetrics = createKvStoreMetrics([]);
  const { MemoryTier } = await import("./memory-tier.ts");
  const mem = new TieredStore([new MemoryTier({ name: "ram", capacityBytes: 2 ** 20, ttlMs: undefined })], memMetrics);
  await storeEntry(mem, hex(3), 2, 16);
  mem.readAheadOf(hex(3), "ram");
  await mem.settled();
  assert.equal(await counter(memMetrics, "started"), 0, "memory is read when the load asks");
});

test("end to end: a disk-only kvstore reads a lookup's blocks ahead, the load takes every one, greedy output as recomputed", async () => {
  const kv = await createKvStorePod({
    blockTokens: 16,
    codec: "none",
    tenantSalt: "ra",
    tiers: [{ name: "ssd", medium: "disk", capacityBytes: 2 ** 30, ttlMs: undefined, path: join(dir, "pod-ssd") }],
    kvTransport: "tcp",
    kvPort: 0,
  });
  await using http = await listen(kv.app);
  try {
    await using a = await startPod({ model: "synthetic://tiny", kvStore: http.url, kvTransport: "tcp" });
    await using b = await startPod({ model: "synthetic://tiny", kvStore: http.url, kvTransport: "tcp" });
    await using plain = await startPod({ model: "synthetic://tiny" });
    const doc = `read ahead ${Array.from({ length: 70 }, (_, i) => `w${i % 19}`).join(" ")}`;
    const warm = await postJson(`${a.url}/v1/contexts`, { text: doc });
    assert.equal(warm.status, 200);
    const got = await completionWithReuse(b.url, `${doc} question`);
    assert.ok(got.cached > 0, "pod B loaded the context from the store");
    assert.equal(got.text, (await completionWithReuse(plain.url, `${doc} question`)).text);
    await kv.store.settled();
    const started = await counter(kv.metrics, "started");
    assert.ok(started >= 2, `the manifest and blocks were read ahead (${started})`);
    assert.equal(await counter(kv.metrics, "taken"), started, "every read ahead was taken by the load");
  } finally {
    await kv[Symbol.asyncDispose]();
  }
});
