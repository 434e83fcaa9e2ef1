import { test } from "node:test";
import assert from "node:assert/strict";
import type { RuntimeSequence } from "../runtime/runtime.ts";
import { QueueAbortedError, QueueFullError, SequencePool } from "./sequence-pool.ts";

const seq = (id: number, tokens: number[]): RuntimeSequence =>
  ({ id, contextTokens: () => tokens }) as unknown as RuntimeSequence;

test("a request leases the free sequence with the longest common prefix", async () => {
  const pool = new SequencePool([seq(0, [1, 2]), seq(1, [1, 2, 3, 4]), seq(2, [])], 1);
  const lease = await pool.acquire([1, 2, 3, 9]);
  assert.equal(lease.sequence.id, 1);
  assert.equal(pool.running, 1);
});

test("the queue is bounded and refuses at once when full", async () => {
  const pool = new SequencePool([seq(0, [])], 1);
  const first = await pool.acquire([1]);
  const queued = pool.acquire([2]);
  await assert.rejects(pool.acquire([3]), QueueFullError);
  assert.equal(pool.queued, 1);
  first.release();
  const second = await queued;
  assert.equal(second.sequence.id, 0);
  assert.equal(pool.queued, 0);
});

test("a request cancelled while queued leaves the queue", async () => {
  const pool = new SequencePool([seq(0, [])], 4);
  await pool.acquire([1]);
  const ac = new AbortController();
  const queued = pool.acquire([2], ac.signal);
  ac.abort();
  await assert.rejects(queued, QueueAbortedError);
  assert.equal(pool.queued, 0);
});
