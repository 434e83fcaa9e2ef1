/**
 * A store's lookup (TieredStore.longest) on a tier where each question is a round trip, as an
 * object store's HEAD is: the longest key alone first, then eight at a time, longest first. The
 * answer is the one asking key by key gives; a miss of 33 keys takes 1 + 4 rounds, not 33 (the
 * time that saves is bench:kv-lookup's).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { MemoryTier } from "./memory-tier.ts";
import { TieredStore } from "./tiered-store.ts";
import { createKvStoreMetrics } from "./store-metrics.ts";
import type { KvTier } from "./tier.ts";

const hex = (n: number): string => n.toString(16).padStart(64, "0");
const KEYS = Array.from({ length: 33 }, (_, i) => hex(0xa000 + i));

/** A real memory tier whose has() waits `ms` (a round trip), counting calls and the most in flight at once. */
function slowTier(ms: number): { tier: KvTier; calls: () => number; mostInFlight: () => number } {
  const tier = new MemoryTier({ name: "slow", capacityBytes: 2 ** 20, ttlMs: undefined });
  const has = tier.has.bind(tier);
  let calls = 0;
  let inFlight = 0;
  let most = 0;
  tier.has = async (key: string) => {
    calls++;
    most = Math.max(most, ++inFlight);
    await new Promise((r) => setTimeout(r, ms));
    inFlight--;
    return has(key);
  };
  return { tier, calls: () => calls, mostInFlight: () => most };
}

async function storeWith(held: number[], window?: number): Promise<{ store: TieredStore; slow: ReturnType<typeof slowTier> }> {
  const slow = slowTier(20);
  for (const i of held) await slow.tier.put(KEYS[i]!, Buffer.from(`entry ${i}`));
  const store = new TieredStore([slow.tier], createKvStoreMetrics([slow.tier], false, () => 0), { readAhead: false, ...(window ? { lookupWindow: window } : {}) });
  return { store, slow };
}

test("a hit of the whole prompt is one question", async () => {
  const { store, slow } = await storeWith([32]);
  assert.deepEqual(await store.longest(KEYS), { index: 32, tier: "slow", entry: { key: KEYS[32], blocks: 33 } });
  assert.equal(slow.calls(), 1);
});

test("the longest held key is found, as key by key finds it, with eight questions in flight at a time", async () => {
  for (const held of [[3], [3, 20], [0], [29, 30], [23, 24, 31]]) {
    const { store, slow } = await storeWith(held);
    const { store: serial } = await storeWith(held, 1);
    const want = Math.max(...held);
    assert.equal((await store.longest(KEYS)).index, want, `held ${held.join(",")}`);
    assert.equal((await serial.longest(KEYS)).index, want);
    assert.ok(slow.mostInFlight() <= 8, `at most 8 in flight, saw ${slow.mostInFlight()}`);
  }
});

test("a miss of 33 keys asks each once, eight at a time after the first (1 + 4 rounds); lookupWindow 1 asks one at a time (33)", async () => {
  const { store, slow } = await storeWith([]);
  assert.equal((await store.longest(KEYS)).index, -1);
  assert.equal(slow.calls(), 33, "every key asked once");
  assert.equal(slow.mostInFlight(), 8);
  const { store: serial, slow: one } = await storeWith([], 1);
  assert.equal((await serial.longest(KEYS)).index, -1);
  assert.equal(one.calls(), 33);
  assert.equal(one.mostInFlight(), 1);
});

test("the sizes and CRC-32Cs of held blocks (POST /v1/kv/blocks/info) are asked eight at a time, each the one asked alone gives", async () => {
  const { store, slow } = await storeWith([]);
  // Half stored through the store (their sums remembered), half straight into the tier (read back to sum).
  for (const [i, k] of KEYS.slice(0, 20).entries()) {
    if (i % 2 === 0) await store.putBlock(k, Buffer.alloc(100 + i, i));
    else await slow.tier.put(k, Buffer.alloc(100 + i, i));
  }
  const asked = [...KEYS.slice(0, 20), hex(0xfff)]; // and one the store does not hold
  const sums = await store.blockSumsOf(asked);
  assert.ok(slow.mostInFlight() > 1 && slow.mostInFlight() <= 8, `in flight at once: ${slow.mostInFlight()}`);
  for (const [i, k] of asked.entries()) assert.deepEqual(sums[i], await store.blockSum(k), `key ${i}`);
  assert.equal(sums.at(-1), undefined);
});
