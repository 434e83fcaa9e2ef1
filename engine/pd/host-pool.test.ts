/**
 * The native hand-off's host memory and checksum (engine/native/src/host-pool.h, pool-buffer.h,
 * kv-net.cpp): received states' blocks come back to the pool (at collection, or at once through
 * kvRelease) and are reused; the CRC-32C that guards every chunk is the standard one at any size.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { eventually } from "../../testing/eventually.ts";
import { KV_SEND_STATUS } from "./kv-transport.ts";
import { useKvListener } from "../../testing/kv-listener.ts";

const listener = useKvListener();

/** CRC-32C bit by bit: the reference the native checksum (three interleaved chains, combined) must match. */
function crc32cReference(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const b of bytes) {
    crc ^= b;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

test("CRC-32C of large buffers (three chains combined) matches the bitwise definition at every split", () => {
  const data = randomBytes(2 ** 20 + 29);
  for (const n of [4095, 4096, 4097, 24 * 1000 + 13, 65_536 + 7, data.length]) {
    assert.equal(listener.kv.kvChecksum(data.subarray(0, n)), crc32cReference(data.subarray(0, n)), `${n} bytes`);
  }
});

test("received states' memory comes back to the host pool and is reused", async () => {
  setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc") as () => void;
  const state = randomBytes(6 << 20);
  const stage = async (id: string): Promise<void> => {
    assert.equal((await listener.kv.kvSend(state, "127.0.0.1", listener.port, id, "{}", 1 << 20, 5_000, 2)).status, KV_SEND_STATUS.ok);
    assert.ok(listener.kv.kvTake(listener.handle, id)?.state.equals(state)); // dropped right away
  };
  await stage("h-pool-0");
  // The taken Buffer's block goes back to the pool when V8 collects it.
  await eventually(async () => {
    gc();
    await new Promise((r) => setImmediate(r));
    assert.ok(listener.kv.kvPoolStats!().cachedBlocks >= 1);
  });
  const before = listener.kv.kvPoolStats!();
  await stage("h-pool-1");
  const after = listener.kv.kvPoolStats!();
  assert.equal(after.hits, before.hits + 1, "the next state of that size reuses the block");
  assert.equal(after.misses, before.misses);
  assert.equal(after.pinned, false, "no GPU here: page-aligned heap blocks, pooled the same way");
});

test("kvRelease gives a taken state's block back at once (no garbage collection) and detaches its Buffer", async () => {
  const state = randomBytes(5 << 20);
  const stageAndTake = async (id: string): Promise<Buffer> => {
    assert.equal((await listener.kv.kvSend(state, "127.0.0.1", listener.port, id, "{}", 1 << 20, 5_000)).status, KV_SEND_STATUS.ok);
    const taken = listener.kv.kvTake(listener.handle, id);
    assert.ok(taken?.state.equals(state));
    return taken!.state;
  };
  const first = await stageAndTake("h-release-0");
  const view = first.subarray(100, 200);
  const cached = listener.kv.kvPoolStats!().cachedBlocks;
  assert.equal(listener.kv.kvRelease!(first), true);
  assert.equal(first.length, 0, "released: the Buffer no longer reaches the memory");
  assert.equal(view.length, 0, "nor does any view of it");
  assert.equal(listener.kv.kvPoolStats!().cachedBlocks, cached + 1, "the block is in the pool now, while its Buffer is still referenced");
  assert.equal(listener.kv.kvRelease!(first), false, "a second release is refused");
  assert.equal(listener.kv.kvRelease!(Buffer.alloc(64)), false, "a JavaScript buffer is not the pool's");
  const before = listener.kv.kvPoolStats!();
  const second = await stageAndTake("h-release-1");
  assert.equal(listener.kv.kvPoolStats!().hits, before.hits + 1, "the next state of that size reuses the released block");
  assert.equal(listener.kv.kvRelease!(second), true);
});

test("kvAlloc hands out pool blocks (reused after kvRelease) and refuses sizes that are not byte counts", () => {
  const kv = listener.kv;
  const first = kv.kvAlloc!(3 << 20);
  assert.equal(first.length, 3 << 20);
  first.fill(7);
  assert.equal(kv.kvRelease!(first), true, "a kvAlloc block is the pool's");
  const before = kv.kvPoolStats!();
  const second = kv.kvAlloc!(3 << 20);
  assert.equal(kv.kvPoolStats!().hits, before.hits + 1, "the released block is reused");
  assert.equal(kv.kvRelease!(second), true);
  for (const bad of [0, -1, 1.5, Number.NaN, 2 ** 41]) assert.throws(() => kv.kvAlloc!(bad), RangeError, String(bad));
  assert.throws(() => kv.kvAlloc!("1" as unknown as number), TypeError);
});
