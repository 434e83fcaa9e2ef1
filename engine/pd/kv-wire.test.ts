import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { decodeKvHandoff, encodeKvHandoff, KvWireError } from "./kv-wire.ts";

const header = { handoffId: "h1", model: "m", tokens: [1, 2, 3], vTransposed: true };

async function* from(frames: Iterable<Buffer>): AsyncGenerator<Buffer> {
  yield* frames;
}

test("a state survives the wire in small chunks", async () => {
  const state = randomBytes(10_000);
  const { header: h, state: out } = await decodeKvHandoff(from(encodeKvHandoff(header, state, 1000)));
  assert.deepEqual(out, state);
  assert.equal(h.stateBytes, 10_000);
  assert.deepEqual(h.tokens, [1, 2, 3]);
});

test("a corrupted chunk fails its checksum", async () => {
  const frames = [...encodeKvHandoff(header, randomBytes(3000), 1000)];
  const chunk = frames[2]!;
  chunk[20] = chunk[20]! ^ 0xff;
  await assert.rejects(decodeKvHandoff(from(frames)), (e: Error) => e instanceof KvWireError && /CRC-32/.test(e.message));
});

test("a truncated stream is an error, not a short state", async () => {
  const frames = [...encodeKvHandoff(header, randomBytes(3000), 1000)].slice(0, 3);
  await assert.rejects(decodeKvHandoff(from(frames)), KvWireError);
});
