// KV entry format v2 (kv-blocks.ts) on real llama.cpp sequence states (native backend, tiny
// synthetic GGUF): split and join give back the exact bytes in both V layouts and out of order;
// blocks of a shared prefix are the same bytes under the same key in two entries (what dedup
// relies on); manifests and blocks refuse corruption and truncation with a clear error.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { ensureModel } from "../model/fetch.ts";
import { NativeRuntime } from "../runtime/native-runtime.ts";
import { normaliseSeqState, truncateSeqState } from "../runtime/seq-state.ts";
import {
  blockKey,
  decodeManifest,
  encodeManifest,
  joinState,
  KvBlockError,
  splitRuns,
  splitState,
  StateJoiner,
  verifyBlock,
  verifyBlockAsync,
  type KvManifest,
} from "./kv-blocks.ts";
import { crc32c, crc32cAsync, crc32cJs, useNativeCrc32c } from "./crc32c.ts";
import { splitKvBlocks } from "../kvcodec/codec-offload.ts";
import { kvStreamAddon, useAddonCrc32c } from "../pd/kv-transport.ts";
import { syntheticSeqState } from "../../testing/kv-state.ts";

const BLOCK = 8;
let rt: NativeRuntime;
let long: Buffer;
let tokens: number[];

before(async () => {
  rt = await NativeRuntime.load({ modelPath: await ensureModel("synthetic://tiny"), threads: 1, contextSize: 256, parallel: 2, flashAttention: true });
  const seq = rt.sequences[0]!;
  tokens = rt.tokenize(Array.from({ length: 40 }, (_, i) => `w${i % 13}`).join(" "));
  await seq.evaluatePrefix(tokens);
  long = await seq.exportState();
});
after(async () => {
  await rt?.[Symbol.asyncDispose]();
});

const aligned = (n: number): Buffer => truncateSeqState(long, n * BLOCK);

test("CRC-32C: the known check value, and JavaScript agrees with itself on odd lengths", () => {
  assert.equal(crc32cJs(Buffer.from("123456789")), 0xe3069283);
  assert.equal(crc32c(Buffer.from("123456789")), 0xe3069283);
  const b = Buffer.from(Array.from({ length: 1001 }, (_, i) => (i * 31) & 0xff));
  assert.equal(crc32cJs(b), crc32cJs(Buffer.from(b)));
});

test("split then join gives back the state byte for byte, in both V layouts", () => {
  for (const vTransposed of [false, true]) {
    const state = normaliseSeqState(aligned(4), { streams: 1, vTransposed });
    const split = splitState(state, BLOCK);
    assert.equal(split.blocks.length, 4);
    assert.equal(split.tokens, 4 * BLOCK);
    assert.ok(split.meta.length < state.length / 4, `meta ${split.meta.length} of ${state.length}`);
    assert.equal(split.meta.length + split.blocks.reduce((n, b) => n + b.length, 0), state.length);
    assert.ok(joinState(split.meta, split.blocks, BLOCK).equals(state), `round trip (vTransposed ${vTransposed})`);
  }
});

test("blocks can be placed in any order (streaming), and a missing one is refused", () => {
  const state = aligned(4);
  const split = splitState(state, BLOCK);
  const j = new StateJoiner(split.meta, BLOCK);
  for (const i of [2, 0, 3, 1]) j.place(i, split.blocks[i]!);
  assert.ok(j.finish().equals(state));
  const partial = new StateJoiner(split.meta, BLOCK);
  partial.place(0, split.blocks[0]!);
  assert.throws(() => partial.finish(), /kv block 1 never arrived/);
  assert.throws(() => partial.place(1, split.blocks[1]!.subarray(1)), /kv block 1 has \d+ bytes, the meta block says/);
});

test("a longer entry shares its first blocks with a shorter one: same bytes, same keys", () => {
  const a = splitState(aligned(2), BLOCK);
  const b = splitState(aligned(4), BLOCK);
  for (let i = 0; i < 2; i++) {
    assert.ok(a.blocks[i]!.equals(b.blocks[i]!), `block ${i} bytes`);
    assert.equal(a.shapes[i], b.shapes[i]);
    assert.equal(blockKey(`k${i}`, "kv", "none", a.shapes[i]!), blockKey(`k${i}`, "kv", "none", b.shapes[i]!));
  }
  assert.notEqual(blockKey("k0", "kv", "none", a.shapes[0]!), blockKey("k0", "kv", "qpre8", a.shapes[0]!));
  // Another V layout holds other bytes: another shape, another key.
  const t = splitState(normaliseSeqState(aligned(2), { streams: 1, vTransposed: true }), BLOCK);
  assert.notEqual(t.shapes[0], a.shapes[0]);
});

test("a state that is not a whole number of blocks is refused", () => {
  assert.throws(() => splitState(truncateSeqState(long, BLOCK + 3), BLOCK), (err: unknown) => err instanceof KvBlockError && /not a whole number/.test(err.message));
  assert.throws(() => splitState(aligned(2).subarray(0, 100), BLOCK), KvBlockError);
});

const manifest: KvManifest = {
  model: "m",
  tokens: 2 * BLOCK,
  blockTokens: BLOCK,
  stateBytes: 10,
  prefixKeys: ["a", "b"],
  blocks: [
    { key: "m0", kind: "meta", codec: "none", rawBytes: 1, bytes: 1, crc32c: 1 },
    { key: "k0", kind: "kv", index: 0, pos0: 0, tokens: BLOCK, codec: "none", rawBytes: 1, bytes: 1, crc32c: 1 },
    { key: "k1", kind: "kv", index: 1, pos0: BLOCK, tokens: BLOCK, codec: "none", rawBytes: 1, bytes: 1, crc32c: 1 },
  ],
};

test("manifest frames round-trip; a corrupted, truncated or inconsistent one is refused", () => {
  const frame = encodeManifest(manifest);
  assert.deepEqual(decodeManifest(frame), manifest);
  const bad = Buffer.from(frame);
  bad.writeUInt8(bad[20]! ^ 1, 20);
  assert.throws(() => decodeManifest(bad), /failed its CRC-32C/);
  assert.throws(() => decodeManifest(frame.subarray(0, frame.length - 3)), /truncated/);
  assert.throws(() => decodeManifest(encodeManifest({ ...manifest, tokens: 3 * BLOCK })), /names 2 kv blocks for 24 tokens/);
  assert.throws(() => decodeManifest(Buffer.from("LFKE....")), /not a v2 KV manifest/);
});

test("a block is checked against its manifest entry: corrupt and truncated are named", () => {
  const data = splitState(aligned(2), BLOCK).blocks[1]!;
  const entry = { key: "ab".repeat(32), kind: "kv" as const, index: 1, bytes: data.length, crc32c: crc32c(data) };
  verifyBlock(entry, data);
  const flipped = Buffer.from(data);
  flipped.writeUInt8(flipped[7]! ^ 0x10, 7);
  assert.throws(() => verifyBlock(entry, flipped), /kv block 1 ababababab.. failed its CRC-32C .*corrupt/);
  assert.throws(() => verifyBlock(entry, data.subarray(0, data.length - 1)), /kv block 1 .* the manifest says \d+ \(truncated\)/);
});

test("crc32cAsync on the addon's worker: the values of crc32c below and above its threshold; verifyBlockAsync refuses as verifyBlock does", async (t) => {
  const addon = await kvStreamAddon();
  if (!addon?.kvScatter) return t.skip("the native addon is not available");
  useAddonCrc32c(addon);
  try {
    for (const n of [0, 9, 4097, 2 ** 20 - 1, 2 ** 20, 3 * 2 ** 20 + 5]) {
      const b = Buffer.from(Array.from({ length: n }, (_, i) => (i * 131 + (i >> 9)) & 0xff));
      assert.equal(await crc32cAsync(b), crc32cJs(b), `${n} bytes`);
    }
    const data = Buffer.alloc(2 ** 21, 7);
    const entry = { key: "cd".repeat(32), kind: "kv" as const, index: 3, bytes: data.length, crc32c: crc32cJs(data) };
    await verifyBlockAsync(entry, data);
    const flipped = Buffer.from(data);
    flipped.writeUInt8(6, 2 ** 20 + 3);
    await assert.rejects(verifyBlockAsync(entry, flipped), /kv block 3 cdcdcdcdcd.. failed its CRC-32C .*corrupt/);
    await assert.rejects(verifyBlockAsync(entry, data.subarray(1)), /kv block 3 .* the manifest says 2097152 \(truncated\)/);
  } finally {
    useNativeCrc32c(undefined);
  }
});

test("the codec worker cuts and splits a longer state to the same blocks as inline (write-backs off the event loop)", async () => {
  const inline = splitState(aligned(3), BLOCK);
  const offloaded = await splitKvBlocks(long, { tokens: 3 * BLOCK, blockTokens: BLOCK }, 0);
  assert.ok(offloaded.meta.equals(inline.meta));
  assert.equal(offloaded.blocks.length, 3);
  offloaded.blocks.forEach((b, i) => assert.ok(b.equals(inline.blocks[i]!), `block ${i}`));
  assert.deepEqual(offloaded.shapes, inline.shapes);
});

test("splitRuns' meta and row copies make splitState's blocks byte for byte, in both V layouts and from a sliding-window state", async () => {
  const states = [
    ...[false, true].map((vTransposed) => normaliseSeqState(aligned(4), { streams: 1, vTransposed })),
    // A Gemma-like state: a full-attention section and a 2-block window whose ring has wrapped.
    syntheticSeqState({ tokens: 4 * BLOCK, windows: [0, 2 * BLOCK], rings: [0, 5], vTransposed: true }),
  ];
  const addon = await kvStreamAddon();
  for (const [n, state] of states.entries()) {
    const want = splitState(state, BLOCK);
    const { meta, runs, blockEnds, rawSizes, shapes, tokens: t } = splitRuns(state, BLOCK);
    assert.ok(meta.equals(want.meta), `meta (state ${n})`);
    assert.deepEqual([rawSizes, shapes, t], [want.rawSizes, want.shapes, want.tokens]);
    const data = Buffer.alloc(blockEnds.at(-1)!);
    for (let i = 0; i < runs.length; i += 3) state.copy(data, runs[i + 1]!, runs[i]!, runs[i]! + runs[i + 2]!);
    want.blocks.forEach((b, i) => assert.ok(b.equals(data.subarray(i === 0 ? 0 : blockEnds[i - 1]!, blockEnds[i]!)), `block ${i} (state ${n})`));
    // The addon's gather (a write-back's, on a worker thread): the same bytes, each block's CRC-32C.
    const got = await addon!.kvGather!(state, runs, blockEnds.at(-1)!, blockEnds);
    assert.ok(got.data.equals(data), `kvGather (state ${n})`);
    assert.deepEqual([...got.crcs], want.blocks.map((b) => crc32cJs(b)));
    assert.equal(addon!.kvRelease!(got.data), true, "a pool block, given back");
  }
  assert.throws(() => addon!.kvGather!(long, Float64Array.of(long.length - 4, 0, 8), 8, Float64Array.of(8)), /run 0 lies outside the source/);
  assert.throws(() => addon!.kvGather!(long, Float64Array.of(0, 4, 8), 8, Float64Array.of(8)), /run 0 lies outside the source or the output/);
});
