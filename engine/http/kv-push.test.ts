// The kvstore's push of an entry's blocks (kv-push.ts) through the native TCP stream into a real
// listener, from a real disk tier whose reads are slowed per key: order "any" sends the meta block
// first and no kv block before the pod holds it, then each kv block as its read ends (a slow read
// no longer holds up the blocks after it); order "manifest" keeps the keys' order; reads, blocks
// held and sends stay within the read window; a missing block ends the push with its index; an
// upload to the store (its own listener) waits while the store pushes.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DiskTier } from "../kvstore/disk-tier.ts";
import { TieredStore } from "../kvstore/tiered-store.ts";
import { createKvStoreMetrics } from "../kvstore/store-metrics.ts";
import { useKvListener } from "../../testing/kv-listener.ts";
import { KV_SEND_STATUS } from "../pd/kv-transport.ts";
import { pushBlocks, type PushFailure, type PushOrder, type Staged } from "./kv-push.ts";

const listener = useKvListener();
const storeListener = useKvListener();
let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "llmfleet-kv-push-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const hex = (n: number): string => n.toString(16).padStart(64, "0");

/** A store on a real disk tier holding `n` blocks of `size` bytes (block i filled with i); reads of key i wait `delayMs(i)` first. */
async function slowStore(
  name: string,
  n: number,
  size: number,
  delayMs: (i: number) => number,
): Promise<{ store: TieredStore; keys: string[]; load: { reading: number; most: number } }> {
  const disk = await DiskTier.open({ name, medium: "disk", capacityBytes: 2 ** 30, ttlMs: undefined, path: join(dir, name) });
  const store = new TieredStore([disk], createKvStoreMetrics([disk]), { readAhead: false });
  const keys = Array.from({ length: n }, (_, i) => hex(0x5000 + i));
  for (const [i, k] of keys.entries()) await store.putBlock(k, Buffer.alloc(size, i));
  const load = { reading: 0, most: 0 };
  const get = disk.get.bind(disk);
  disk.get = async (key: string) => {
    load.most = Math.max(load.most, ++load.reading);
    await new Promise((r) => setTimeout(r, delayMs(keys.indexOf(key))));
    load.reading--;
    return get(key);
  };
  return { store, keys, load };
}

/** Pushes `keys` to the test listener, each block taken as its line comes (as a pod does); the lines in order, the failure, and whether each block arrived intact (block i all bytes i). */
async function push(store: TieredStore, keys: string[], order: PushOrder, id: string): Promise<{ lines: Staged[]; failure: PushFailure | undefined; intact: boolean[] }> {
  const lines: Staged[] = [];
  const intact: boolean[] = [];
  // The store's own listener (where pods upload; a push holds it paused) is not the pod's.
  const tcp = { addon: listener.kv, port: storeListener.port, handle: storeListener.handle };
  const failure = await pushBlocks({ store, metrics: createKvStoreMetrics([]) }, { tcp, keys, host: "127.0.0.1", port: listener.port, id }, order, (line) => {
    lines.push(line);
    const got = listener.kv.kvTake(listener.handle, `${id}.${line.index}`)?.state;
    intact.push(!!got && got.length === line.bytes && got.every((b) => b === (line.index & 0xff)));
    if (got) listener.kv.kvRelease?.(got);
  });
  return { lines, failure, intact };
}

test('order "any": the meta block first, then each kv block as its read ends; every block staged intact', async () => {
  // The meta block's read is slow (no kv block may pass it), and so is kv block 0's (index 1).
  const { store, keys } = await slowStore("any", 10, 4096, (i) => (i === 0 ? 60 : i === 1 ? 150 : 5));
  const { lines, failure, intact } = await push(store, keys, "any", "any1");
  assert.equal(failure, undefined);
  const order = lines.map((l) => l.index);
  assert.equal(order[0], 0, "the meta block first");
  assert.equal(order.at(-1), 1, `the slow read last, not holding up the rest: ${order.join(",")}`);
  assert.deepEqual([...order].sort((a, b) => a - b), [...keys.keys()]);
  assert.deepEqual(intact, Array(10).fill(true), "each block staged with its bytes");
});

test('order "manifest" keeps the keys\' order however the reads end', async () => {
  const { store, keys } = await slowStore("manifest", 10, 4096, (i) => (i === 1 ? 100 : 5));
  const { lines, failure } = await push(store, keys, "manifest", "man1");
  assert.equal(failure, undefined);
  assert.deepEqual(
    lines.map((l) => l.index),
    [...keys.keys()],
  );
});

test("reads, blocks held and sends stay within the read window (8 of 8 MiB blocks); a missing block ends the push", async () => {
  const big = await slowStore("window", 16, 8 * 2 ** 20, () => 20);
  const { lines, failure, intact } = await push(big.store, big.keys, "any", "win1");
  assert.equal(failure, undefined);
  assert.deepEqual(intact, Array(16).fill(true));
  assert.equal(lines.length, 16);
  assert.ok(big.load.most <= 8, `reads in flight: ${big.load.most}`);
  const small = await slowStore("missing", 6, 1024, () => 5);
  const gone = [...small.keys.slice(0, 3), hex(0xdead), ...small.keys.slice(4)];
  const { failure: missing } = await push(small.store, gone, "any", "miss1");
  assert.deepEqual(missing, { index: 3, error: "missing" });
});

test("an upload to the store waits while it pushes a load, and is staged once the push ends", async () => {
  const { store, keys } = await slowStore("hold", 4, 4096, () => 150);
  let pushEnded = 0;
  const pushing = push(store, keys, "any", "hold1").then((r) => ((pushEnded = performance.now()), r));
  await new Promise((r) => setTimeout(r, 50)); // the push under way (its reads take 150 ms each)
  const upload = randomBytes(2 * 2 ** 20);
  const sent = await listener.kv.kvSend(upload, "127.0.0.1", storeListener.port, "up1", "{}", 256 << 10, 10_000);
  const uploadEnded = performance.now();
  assert.equal(sent.status, KV_SEND_STATUS.ok);
  assert.equal((await pushing).failure, undefined);
  assert.ok(uploadEnded >= pushEnded - 5, `the upload was staged ${Math.round(pushEnded - uploadEnded)} ms before the push ended`);
  assert.ok(listener.kv.kvTake(storeListener.handle, "up1")!.state.equals(upload), "and arrived whole");
});
