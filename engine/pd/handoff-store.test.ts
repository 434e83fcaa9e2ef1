/**
 * The decode side's staging store on a mocked clock: a staged state expires after its TTL (a
 * router that never comes back), the sweeper drops it unasked, and expiry frees room in a full store.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { HandoffStore, HandoffStoreFullError } from "./handoff-store.ts";

test("a staged state is taken until its TTL, expires after it, and the sweeper drops it unasked", async (t) => {
  t.mock.timers.enable({ apis: ["Date", "setInterval"], now: 1_000_000 });
  await using store = new HandoffStore(2, 10_000);
  store.put("a", [1, 2], Buffer.alloc(4));
  store.put("b", [3], Buffer.alloc(4));
  assert.throws(() => store.put("c", [4], Buffer.alloc(4)), HandoffStoreFullError);
  t.mock.timers.tick(10_000);
  assert.deepEqual(store.take("a")?.tokens, [1, 2], "fresh at its TTL");
  t.mock.timers.tick(1);
  assert.equal(store.take("b"), undefined, "expired");
  store.put("c", [4], Buffer.alloc(4));
  t.mock.timers.tick(15_000);
  assert.equal(store.size, 0, "the sweeper dropped c without a take");
});

test("an expired state frees its room for the next hand-off", async (t) => {
  t.mock.timers.enable({ apis: ["Date", "setInterval"], now: 1_000_000 });
  await using store = new HandoffStore(1, 10_000);
  store.put("a", [1], Buffer.alloc(4));
  t.mock.timers.tick(1_000);
  assert.throws(() => store.put("b", [2], Buffer.alloc(4)), HandoffStoreFullError);
  t.mock.timers.tick(9_001);
  store.put("b", [2], Buffer.alloc(4));
  assert.deepEqual(store.take("b")?.tokens, [2]);
});
