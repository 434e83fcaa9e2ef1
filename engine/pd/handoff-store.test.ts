/**
 * The decode side's staging store on a mocked clock: a staged state expires after its TTL (a
 * router that never comes back), the sweeper drops it unasked, and expiry frees room in a full store.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { HandoffStore, HandoffStoreFullError } from "./handoff-store.ts";
import type { ImportedLocal } from "../serving/completion-service.ts";

test("a staged state is taken until its TTL, expires after it, and the sweeper drops it unasked", async (t) => {
  t.mock.timers.enable({ apis: ["Date", "setInterval"], now: 1_000_000 });
  await using store = new HandoffStore(2, 10_000);
  store.put("a", [1, 2], { state: Buffer.alloc(4) });
  store.put("b", [3], { state: Buffer.alloc(4) });
  assert.throws(() => store.put("c", [4], { state: Buffer.alloc(4) }), HandoffStoreFullError);
  t.mock.timers.tick(10_000);
  assert.deepEqual(store.take("a")?.tokens, [1, 2], "fresh at its TTL");
  t.mock.timers.tick(1);
  assert.equal(store.take("b"), undefined, "expired");
  store.put("c", [4], { state: Buffer.alloc(4) });
  t.mock.timers.tick(15_000);
  assert.equal(store.size, 0, "the sweeper dropped c without a take");
});

test("an expired state frees its room for the next hand-off", async (t) => {
  t.mock.timers.enable({ apis: ["Date", "setInterval"], now: 1_000_000 });
  await using store = new HandoffStore(1, 10_000);
  store.put("a", [1], { state: Buffer.alloc(4) });
  t.mock.timers.tick(1_000);
  assert.throws(() => store.put("b", [2], { state: Buffer.alloc(4) }), HandoffStoreFullError);
  t.mock.timers.tick(9_001);
  store.put("b", [2], { state: Buffer.alloc(4) });
  assert.deepEqual(store.take("b")?.tokens, [2]);
});

test("a staged local hand-off gives its region back once: when taken late, swept, or the store is disposed", async (t) => {
  t.mock.timers.enable({ apis: ["Date", "setInterval"], now: 1_000_000 });
  const given: string[] = [];
  const local = (name: string): { local: ImportedLocal } => ({ local: { region: 1, state: { tokens: [], size: 8, meta: Buffer.alloc(8), rows: new Float64Array() }, done: () => given.push(name) } });
  const store = new HandoffStore(4, 10_000);
  store.put("taken", [1], local("taken"));
  store.put("late", [2], local("late"));
  store.put("swept", [3], local("swept"));
  assert.ok(store.take("taken")?.local, "taken in time: the importer gives it back");
  t.mock.timers.tick(10_001);
  assert.equal(store.take("late"), undefined);
  t.mock.timers.tick(5_000);
  store.put("disposed", [4], local("disposed"));
  await store[Symbol.asyncDispose]();
  assert.deepEqual(given, ["late", "swept", "disposed"]);
  assert.equal(store.bytes, 0, "a local hand-off holds no host bytes");
});
