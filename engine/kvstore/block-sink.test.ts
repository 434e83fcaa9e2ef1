// BlockSink (block-sink.ts) on a real llama.cpp sequence state (native backend, tiny synthetic
// GGUF): the meta block first, then kv blocks in any order (a store pushes them as its reads end)
// give back the state byte for byte; a kv block before the meta block, a block twice or out of
// range, and a stream that ends short are refused with a message naming the block.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { ensureModel } from "../model/fetch.ts";
import { NativeRuntime } from "../runtime/native-runtime.ts";
import { truncateSeqState } from "../runtime/seq-state.ts";
import { KvBlockError, splitState, type KvManifest } from "./kv-blocks.ts";
import { crc32c } from "./crc32c.ts";
import { BlockSink } from "./block-sink.ts";

const BLOCK = 8;
let rt: NativeRuntime;
let state: Buffer;
let stored: Buffer[];
let manifest: KvManifest;

before(async () => {
  rt = await NativeRuntime.load({ modelPath: await ensureModel("synthetic://tiny"), threads: 1, contextSize: 256, parallel: 1, flashAttention: true });
  const seq = rt.sequences[0]!;
  await seq.evaluatePrefix(rt.tokenize(Array.from({ length: 40 }, (_, i) => `w${i % 13}`).join(" ")));
  state = truncateSeqState(await seq.exportState(), 4 * BLOCK);
  const split = splitState(state, BLOCK);
  stored = [split.meta, ...split.blocks];
  manifest = {
    model: "m",
    tokens: 4 * BLOCK,
    blockTokens: BLOCK,
    stateBytes: state.length,
    prefixKeys: ["p"],
    blocks: stored.map((data, i) => ({
      key: `${i}`.repeat(64).slice(0, 64),
      kind: i === 0 ? ("meta" as const) : ("kv" as const),
      ...(i > 0 ? { index: i - 1, pos0: (i - 1) * BLOCK, tokens: BLOCK } : {}),
      codec: "none",
      rawBytes: data.length,
      bytes: data.length,
      crc32c: crc32c(data),
    })),
  };
});
after(async () => {
  await rt?.[Symbol.asyncDispose]();
});

const sink = (): BlockSink => new BlockSink(manifest, (_b, data) => data);

test("the meta block, then kv blocks in any order, give back the state byte for byte", async () => {
  for (const order of [
    [0, 1, 2, 3, 4],
    [0, 3, 1, 4, 2],
    [0, 4, 3, 2, 1],
  ]) {
    const s = sink();
    for (const i of order) s.accept(stored[i]!, undefined, i);
    s.complete("the stream");
    assert.ok((await s.finish()).equals(state), `order ${order.join(",")}`);
  }
  const inOrder = sink(); // the HTTP stream: no index, the next in order
  for (const data of stored) inOrder.accept(data);
  assert.ok((await inOrder.finish()).equals(state));
});

test("a kv block before the meta block, a block twice or out of range, and a short stream are refused", async () => {
  assert.throws(() => sink().accept(stored[2]!, undefined, 2), (e: Error) => e instanceof KvBlockError && /kv block 1 arrived before the meta block/.test(e.message));
  const s = sink();
  s.accept(stored[0]!, undefined, 0);
  assert.throws(() => s.accept(stored[0]!, undefined, 0), /block 0 arrived twice/);
  s.accept(stored[3]!, undefined, 3);
  assert.throws(() => s.accept(stored[3]!, undefined, 3), /block 3 arrived twice/);
  assert.throws(() => s.accept(stored[1]!, undefined, 5), /block 5: the manifest has 5 blocks/);
  assert.throws(() => s.accept(stored[1]!, undefined, 1.5), /block 1.5: the manifest has 5 blocks/);
  assert.deepEqual(s.missing(), [1, 2, 4]);
  assert.throws(() => s.complete("the block stream"), /the block stream ended after 2 of 5 blocks/);
  await assert.rejects(s.finish(), /kv block 0 never arrived/);
});
