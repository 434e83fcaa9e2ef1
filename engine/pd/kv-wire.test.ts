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

test("the stream decodes whatever pieces the network cuts it into, across frame boundaries", async () => {
  const state = randomBytes(50_000);
  const whole = Buffer.concat([...encodeKvHandoff(header, state, 4096)]);
  for (const sizes of [[1, 2, 3, 5, 7], [4097, 13], [whole.length]]) {
    async function* recut(): AsyncGenerator<Uint8Array> {
      for (let off = 0, i = 0; off < whole.length; i++) {
        const n = sizes[i % sizes.length]!;
        yield new Uint8Array(whole.buffer, whole.byteOffset + off, Math.min(n, whole.length - off));
        off += n;
      }
    }
    const { state: out } = await decodeKvHandoff(recut());
    assert.deepEqual(out, state, `pieces of ${sizes.join("/")} bytes`);
  }
});

test("a header without a valid state size, or a stream longer than it says, is refused", async () => {
  const frames = [...encodeKvHandoff(header, randomBytes(3000), 1000)];
  const json = JSON.parse(frames[0]!.subarray(9).toString("utf8")) as Record<string, unknown>;
  const head = (h: Record<string, unknown>): Buffer => {
    const body = Buffer.from(JSON.stringify(h));
    const b = Buffer.alloc(9);
    frames[0]!.copy(b, 0, 0, 5);
    b.writeUInt32LE(body.length, 5);
    return Buffer.concat([b, body]);
  };
  await assert.rejects(decodeKvHandoff(from([head({ ...json, stateBytes: -1 }), ...frames.slice(1)])), /valid stateBytes/);
  await assert.rejects(decodeKvHandoff(from([head({ ...json, stateBytes: 2000 }), ...frames.slice(1)])), /longer than its header/);
});
