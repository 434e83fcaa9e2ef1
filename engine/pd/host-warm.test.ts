/**
 * The host pool's warmed region (engine/native/src/host-pool.h, pd/host-warm.ts): how much a pod
 * warms, and that blocks are carved from the region, given back to it, and that what does not fit
 * falls back to the pool's own blocks. The pool is process-wide: this file's process has its own.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { kvStreamAddon } from "./kv-transport.ts";
import { HOST_WARM_AUTO_MAX, hostWarmBytes, warmHostPool } from "./host-warm.ts";

const MiB = 2 ** 20;

test("auto warms three quarters of the pool's cap (at most 3 GiB) on a page-locked pool of a pod that moves KV states, else nothing", () => {
  const gpu = { pinned: true, capBytes: 4 * 2 ** 30 };
  assert.equal(hostWarmBytes("auto", gpu, true), HOST_WARM_AUTO_MAX);
  assert.equal(hostWarmBytes("auto", { pinned: true, capBytes: 1024 * MiB }, true), 768 * MiB);
  assert.equal(hostWarmBytes("auto", gpu, false), 0, "no KV store, no P/D role");
  assert.equal(hostWarmBytes("auto", { pinned: false, capBytes: 4 * 2 ** 30 }, true), 0, "a CPU pool");
  assert.equal(hostWarmBytes("auto", undefined, true), 0, "no addon");
  assert.equal(hostWarmBytes(64 * MiB, { pinned: false, capBytes: 0 }, false), 64 * MiB, "a number is taken as given");
  assert.equal(hostWarmBytes(0, gpu, true), 0);
});

test("blocks are carved from the warmed region, given back to it, and what does not fit takes a block of its own", async () => {
  const addon = await kvStreamAddon();
  assert.ok(addon?.kvPoolWarm && addon.kvAlloc && addon.kvRelease && addon.kvPoolStats, "the native addon has the host pool");
  const lines: string[] = [];
  await warmHostPool(addon, 32 * MiB, false, (l) => lines.push(l));
  assert.match(lines.join("\n"), /host pool: 32 MiB for KV states faulted in in \d/);
  const warmed = addon.kvPoolStats();
  assert.equal(warmed.warmBytes, 32 * MiB);
  // A second warm keeps the first region.
  assert.equal((await addon.kvPoolWarm(64 * MiB)).bytes, 32 * MiB);

  const a = addon.kvAlloc(10 * MiB);
  const b = addon.kvAlloc(12 * MiB);
  let s = addon.kvPoolStats();
  assert.equal(s.warmHits, 2);
  assert.equal(s.warmUsedBytes, 22 * MiB);
  assert.equal(s.misses, warmed.misses, "no block page-locked anew");
  a.fill(1);
  b.fill(2);
  assert.equal(a[a.length - 1], 1, "the carved blocks do not overlap");

  // 10 MiB free at the end: a 16 MiB block does not fit and takes its own.
  const c = addon.kvAlloc(16 * MiB);
  s = addon.kvPoolStats();
  assert.equal(s.warmHits, 2);
  assert.equal(s.misses, warmed.misses + 1);

  // Given back, the region's free ranges merge: one 32 MiB block fits again.
  addon.kvRelease(a);
  addon.kvRelease(b);
  assert.equal(addon.kvPoolStats().warmUsedBytes, 0);
  const whole = addon.kvAlloc(32 * MiB);
  assert.equal(addon.kvPoolStats().warmHits, 3);
  addon.kvRelease(whole);
  addon.kvRelease(c);
  // The region counts against the cap: the block of its own is kept if the cap less the region has room.
  s = addon.kvPoolStats();
  assert.equal(s.cachedBytes <= s.capBytes - s.warmBytes!, true);
});

test("kvPoolWarm refuses a bad size with a message naming it; a failed warm is logged and the pod goes on", async () => {
  const addon = await kvStreamAddon();
  assert.ok(addon?.kvPoolWarm);
  assert.throws(() => void addon.kvPoolWarm!(-1), /kvPoolWarm: bytes must be an integer from 1 to 2\^40/);
  const lines: string[] = [];
  const failing = { ...addon, kvPoolWarm: (): Promise<never> => Promise.reject(new Error("kvPoolWarm: out of host memory for 1 bytes")) };
  await warmHostPool(failing, 1, true, (l) => lines.push(l));
  assert.deepEqual(lines, ["host pool: not warmed (kvPoolWarm: out of host memory for 1 bytes); KV states page-lock their memory as they come"]);
});
