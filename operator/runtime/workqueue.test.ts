import { test } from "node:test";
import assert from "node:assert/strict";
import { WorkQueue } from "./workqueue.ts";

test("a key is queued once however often it is added", async () => {
  const q = new WorkQueue();
  q.add("a");
  q.add("b");
  q.add("a");
  assert.equal(q.length, 2);
  assert.equal(await q.get(), "a");
  assert.equal(await q.get(), "b");
});

test("a key added while processing is processed once more afterwards, not concurrently", async () => {
  const q = new WorkQueue();
  q.add("a");
  const k = await q.get();
  q.add("a");
  q.add("a");
  assert.equal(q.length, 0, "not handed out while in flight");
  q.done(k ?? "");
  assert.equal(q.length, 1);
  assert.equal(await q.get(), "a");
});

test("failures back off exponentially up to the maximum, and forget resets", () => {
  const q = new WorkQueue({ baseMs: 100, maxMs: 1000 });
  const delays = [1, 2, 3, 4, 5].map(() => {
    const d = q.addRateLimited("k");
    q.shutdown();
    return d;
  });
  assert.deepEqual(delays, [100, 200, 400, 800, 1000]);
  q.forget("k");
  assert.equal(q.addRateLimited("k"), 100);
});

test("get waits for an add, and shutdown releases waiters", async () => {
  const q = new WorkQueue();
  const pending = q.get();
  q.add("x");
  assert.equal(await pending, "x");
  const waiting = q.get();
  q.shutdown();
  assert.equal(await waiting, undefined);
});
