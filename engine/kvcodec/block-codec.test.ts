/**
 * compact2b, compact's transform per v2 kv block (block-codec.ts), on Gemma-shaped synthetic states
 * (testing/kv-state.ts) in both V layouts, with a sliding-window section holding part of a block:
 * the state decoded block by block is close to the original (position 0 exact) and byte-identical
 * outside its K/V rows; the native encoder and decoder are byte-identical to the JavaScript ones;
 * blocks of a shared prefix are the same bytes under the same key; a window whose cells wrapped
 * (rows out of position order in the state) decodes to the same rows; a corrupt, truncated or
 * misplaced block is refused with an error naming it; compact1b's blocks (what stores wrote before
 * compact2b: the same values, the two-state rANS stream) still decode, to compact2b's state. The
 * addon is built on first use.
 */
import { before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { nativeAddonPath } from "../native/binding.ts";
import { syntheticSeqState } from "../../testing/kv-state.ts";
import { blockKey, KvBlockError, splitState, StateJoiner, type SplitState } from "../kvstore/kv-blocks.ts";
import { parse, plan } from "../kvstore/kv-block-layout.ts";
import { truncateSeqState } from "../runtime/seq-state.ts";
import { blockCodecFor, COMPACT1_BLOCKS, COMPACT_BLOCKS, kvBlockCodec } from "./block-codec.ts";
import { splitKvBlocks } from "./codec-offload.ts";
import { useNativeKvCodec } from "./native-codec.ts";
import { F16_TO_F32, isTensor, splitState as stateParts, type KvTensor } from "./state-tensors.ts";

const B = 32;
let addonPath: string;

before(async () => {
  addonPath = await nativeAddonPath();
});

const CASES = [
  { name: "rows", tokens: 4 * B, vTransposed: false },
  { name: "transposed V", tokens: 4 * B, vTransposed: true },
  // The sliding-window section holds positions 70..127: none of block 0 and 1, part of block 2.
  { name: "sliding window", tokens: 4 * B, vTransposed: true, windows: [0, 58] },
];

const stateOf = (c: (typeof CASES)[number]): Buffer => syntheticSeqState({ ...c, seed: 7 });

/** Splits and codes in JavaScript (no addon) or natively. */
function codedSplit(state: Buffer, native: boolean): SplitState {
  useNativeKvCodec(native ? addonPath : undefined);
  return splitState(state, B, { codec: COMPACT_BLOCKS });
}

function decode(split: SplitState, native: boolean, order?: number[]): Buffer {
  useNativeKvCodec(native ? addonPath : undefined);
  const j = new StateJoiner(split.meta, B);
  for (const i of order ?? split.blocks.map((_, i) => i)) j.placeCoded(i, split.blocks[i]!, COMPACT_BLOCKS);
  return j.finish();
}

const f32 = (t: KvTensor, k: number): number => F16_TO_F32[t.data.readUInt16LE(2 * k)]!;

/** RMS error of b against a over the tensor, relative to a's RMS; and whether position 0's elements are exact. */
function tensorError(a: KvTensor, b: KvTensor): { rel: number; sinkExact: boolean } {
  let err = 0;
  let ref = 0;
  let sinkExact = true;
  const tokens = a.tokenAxis === 0 ? a.rows : a.cols;
  for (let k = 0; k < a.data.length / 2; k++) {
    const d = f32(a, k) - f32(b, k);
    err += d * d;
    ref += f32(a, k) ** 2;
    const token = a.tokenAxis === 0 ? Math.floor(k / a.cols) : k % tokens;
    if (a.positions[token] === 0 && d !== 0) sinkExact = false;
  }
  return { rel: Math.sqrt(err / ref), sinkExact };
}

for (const c of CASES) {
  test(`compact2b (${c.name}): decoded block by block, the state is close to the original and its structure byte-identical`, () => {
    const state = stateOf(c);
    const split = codedSplit(state, true);
    const coded = split.blocks.reduce((n, b) => n + b.length, 0);
    assert.ok(coded < split.rawSizes.reduce((n, b) => n + b, 0) / 2.5, `coded ${coded} of ${split.rawSizes.reduce((n, b) => n + b, 0)}`);
    const out = decode(split, true, [2, 0, 3, 1]);
    assert.equal(out.length, state.length);
    const [a, b] = [stateParts(state), stateParts(out)];
    assert.equal(a.length, b.length);
    a.forEach((part, i) => {
      const other = b[i]!;
      if (!isTensor(part) || !isTensor(other))
        return assert.ok(Buffer.isBuffer(other) && (part as Buffer).equals(other), `part ${i} (not K/V rows) byte-identical`);
      const { rel, sinkExact } = tensorError(part, other);
      // 4 % of the RMS on this fixture; a windowed section's first row is the fixture's outlier row
      // (kept exact only at position 0), which widens the steps of the partial block that holds it.
      assert.ok(rel < (part.positions[0] === 0 ? 0.05 : 0.08), `${part.kind}${part.layer} of ${part.layers}: relative RMS error ${rel}`);
      assert.ok(sinkExact, `${part.kind}${part.layer}: position 0 exact`);
    });
  });

  test(`compact2b (${c.name}): native encoding and decoding are byte-identical to JavaScript's`, () => {
    const state = stateOf(c);
    const [js, native] = [codedSplit(state, false), codedSplit(state, true)];
    js.blocks.forEach((b, i) => assert.ok(b.equals(native.blocks[i]!), `block ${i}: native and JavaScript bytes differ`));
    assert.ok(decode(js, false).equals(decode(js, true)), "native and JavaScript decodes differ");
  });
}

for (const codec of [COMPACT_BLOCKS, kvBlockCodec("compact2b@0.2s")!]) {
  test(`${codec.name}: a shorter entry's blocks are the same bytes and keys in a longer one (dedup)`, () => {
    useNativeKvCodec(addonPath);
    const long = syntheticSeqState({ tokens: 4 * B, vTransposed: true, seed: 3 });
    const [a, b] = [splitState(truncateSeqState(long, 2 * B), B, { codec }), splitState(long, B, { codec })];
    for (let i = 0; i < 2; i++) {
      assert.ok(a.blocks[i]!.equals(b.blocks[i]!), `block ${i} bytes`);
      assert.equal(blockKey(`k${i}`, "kv", codec.name, a.shapes[i]!), blockKey(`k${i}`, "kv", codec.name, b.shapes[i]!));
    }
    assert.notEqual(blockKey("k0", "kv", codec.name, a.shapes[0]!), blockKey("k0", "kv", "none", a.shapes[0]!), "the codec is part of the key");
  });
}

test("compact1b blocks, written before compact2b, still decode (native and JavaScript) to the state compact2b's decode to", () => {
  const state = syntheticSeqState({ tokens: 4 * B, vTransposed: true, windows: [0, 58], seed: 8 });
  useNativeKvCodec(addonPath);
  const [old, wide] = [splitState(state, B, { codec: COMPACT1_BLOCKS }), splitState(state, B, { codec: COMPACT_BLOCKS })];
  const sizes = [old, wide].map((s) => s.blocks.reduce((n, b) => n + b.length, 0));
  // The wide stream's 32 states (128 bytes a tensor block against 8) and its 16-bit words: a little larger.
  assert.ok(sizes[1]! > sizes[0]! && sizes[1]! < sizes[0]! * 1.1, `compact1b ${sizes[0]} B, compact2b ${sizes[1]} B`);
  const want = new StateJoiner(wide.meta, B);
  want.placeCodedMany(
    wide.blocks.map((coded, i) => ({ i, coded })),
    COMPACT_BLOCKS,
  );
  const expected = want.finish();
  try {
    for (const native of [true, false]) {
      useNativeKvCodec(native ? addonPath : undefined);
      const j = new StateJoiner(old.meta, B);
      old.blocks.forEach((b, i) => j.placeCoded(i, b, kvBlockCodec("compact1b")!));
      assert.ok(j.finish().equals(expected), `${native ? "native" : "JavaScript"}: compact1b's state equals compact2b's`);
      // A block's codec is checked against its segments: compact1b's bytes are not compact2b's.
      assert.throws(() => new StateJoiner(old.meta, B).placeCoded(1, old.blocks[1]!, COMPACT_BLOCKS), /segment 0 has kind 3, the block's layout and codec say 4/);
    }
  } finally {
    useNativeKvCodec(addonPath);
  }
});

/** SHA-256 of `state` split into compact2b blocks of `T` tokens and decoded by the addon in a child process whose wide decoder takes the `simd` path. */
function decodeDigestWith(simd: string, state: Buffer, T: number): string {
  const dir = mkdtempSync(join(tmpdir(), "llmfleet-scalar-"));
  try {
    writeFileSync(join(dir, "state"), state);
    const here = dirname(fileURLToPath(import.meta.url));
    const script = `
      import { readFileSync } from "node:fs";
      import { createHash } from "node:crypto";
      import { useNativeKvCodec } from "${join(here, "native-codec.ts")}";
      import { COMPACT_BLOCKS } from "${join(here, "block-codec.ts")}";
      import { splitState, StateJoiner } from "${join(here, "../kvstore/kv-blocks.ts")}";
      useNativeKvCodec(${JSON.stringify(addonPath)});
      const split = splitState(readFileSync(${JSON.stringify(join(dir, "state"))}), ${T}, { codec: COMPACT_BLOCKS });
      const j = new StateJoiner(split.meta, ${T});
      j.placeCodedMany(split.blocks.map((coded, i) => ({ i, coded })), COMPACT_BLOCKS);
      process.stdout.write(createHash("sha256").update(j.finish()).digest("hex"));`;
    return execFileSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
      env: { ...process.env, LLMFLEET_KVCODEC_SIMD: simd },
      encoding: "utf8",
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("compact2b blocks of 128 tokens (32-lane streams: AVX-512, AVX2 and one lane at a time): native and JavaScript agree; a corrupt stream is refused", () => {
  const T = 128;
  const state = syntheticSeqState({ tokens: 2 * T, vTransposed: true, seed: 10 });
  const split = (native: boolean): SplitState => {
    useNativeKvCodec(native ? addonPath : undefined);
    return splitState(state, T, { codec: COMPACT_BLOCKS });
  };
  const join = (s: SplitState, native: boolean, blocks = s.blocks): Buffer => {
    useNativeKvCodec(native ? addonPath : undefined);
    const j = new StateJoiner(s.meta, T);
    j.placeCodedMany(
      blocks.map((coded, i) => ({ i, coded })),
      COMPACT_BLOCKS,
    );
    return j.finish();
  };
  try {
    const [js, native] = [split(false), split(true)];
    js.blocks.forEach((b, i) => assert.ok(b.equals(native.blocks[i]!), `block ${i}: native and JavaScript bytes differ`));
    const decoded = join(native, true);
    assert.ok(decoded.equals(join(native, false)), "native and JavaScript decodes differ");
    // Same values as compact1b, whose two-state stream is decoded by another path.
    useNativeKvCodec(addonPath);
    const old = splitState(state, T, { codec: COMPACT1_BLOCKS });
    const j = new StateJoiner(old.meta, T);
    old.blocks.forEach((b, i) => j.placeCoded(i, b, COMPACT1_BLOCKS));
    assert.ok(j.finish().equals(decoded), "compact1b's state");
    // The other CPUs' paths (LLMFLEET_KVCODEC_SIMD, read once when the addon loads: a child process
    // each): four AVX2 vectors, and the lanes one at a time; the same state.
    for (const simd of ["avx2", "none"]) assert.equal(decodeDigestWith(simd, state, T), createHash("sha256").update(decoded).digest("hex"), `LLMFLEET_KVCODEC_SIMD=${simd}`);
    // Words of block 1's last tensor overwritten (lengths kept): refused, natively and in JavaScript.
    const bad = Buffer.from(native.blocks[1]!);
    bad.fill(0, bad.length - 600, bad.length - 300);
    for (const n of [true, false]) assert.throws(() => join(native, n, [native.blocks[0]!, bad]), /kv block 1 does not decode with codec compact2b/, n ? "native" : "JavaScript");
  } finally {
    useNativeKvCodec(addonPath);
  }
});

test("compact2b's key holds which streams hold their whole prefix: a window that moved gives another key", () => {
  useNativeKvCodec(addonPath);
  const codec = kvBlockCodec("compact2b@0.2s")!;
  // The sliding-window section holds all of a 2-block entry, but only blocks 1 and 2 of a 3-block one:
  // block 1 holds the same positions in both (same raw shape), yet only the first is a whole prefix.
  const short = splitState(syntheticSeqState({ tokens: 2 * B, windows: [0, 2 * B], seed: 4 }), B);
  const long = syntheticSeqState({ tokens: 3 * B, windows: [0, 2 * B], seed: 4 });
  assert.equal(short.shapes[1], splitState(long, B).shapes[1], "raw shapes agree");
  const [a, b] = [splitState(syntheticSeqState({ tokens: 2 * B, windows: [0, 2 * B], seed: 4 }), B, { codec }), splitState(long, B, { codec })];
  assert.notEqual(a.shapes[1], b.shapes[1], "coded shapes differ");
  assert.notEqual(a.shapes[0], b.shapes[0], "block 0: the window of the long entry holds none of it, another layout");
});

test("compact2b@SCALEs: a full-attention stream's later blocks are coded coarser, as compact1 codes a longer tensor", () => {
  useNativeKvCodec(addonPath);
  const state = syntheticSeqState({ tokens: 32 * B, seed: 6, sections: [3] });
  const [flat, span] = [splitState(state, B, { codec: kvBlockCodec("compact2b@0.2")! }), splitState(state, B, { codec: kvBlockCodec("compact2b@0.2s")! })];
  // Block i's stream holds (i + 1) * 32 cells: up to 512 (block 15) the flat step, past it ((i + 1) * 32 / 512)^0.35 as large.
  for (const i of [0, 7, 15]) assert.ok(span.blocks[i]!.equals(flat.blocks[i]!), `block ${i}: never finer than the flat step`);
  assert.ok(span.blocks[31]!.length < flat.blocks[31]!.length, "coarser past 512 cells");
  assert.ok(span.blocks[31]!.length < span.blocks[16]!.length, "coarser with the prefix");
  const out = new StateJoiner(span.meta, B);
  span.blocks.forEach((b, i) => out.placeCoded(i, b, kvBlockCodec("compact2b@0.2s")!));
  assert.equal(out.finish().length, state.length);
});

test("compact2b: a corrupt, truncated or misplaced block is refused with a KvBlockError naming it", () => {
  useNativeKvCodec(addonPath);
  const split = splitState(syntheticSeqState({ tokens: 2 * B, vTransposed: true, seed: 5 }), B, { codec: COMPACT_BLOCKS });
  const block = split.blocks[1]!;
  const refused = (data: Buffer, i: number, re: RegExp): void => {
    const j = new StateJoiner(split.meta, B);
    assert.throws(
      () => j.placeCoded(i, data, COMPACT_BLOCKS),
      (err: unknown) => err instanceof KvBlockError && re.test(err.message),
      String(re),
    );
  };
  refused(block.subarray(0, block.length - 9), 1, /kv block 1 does not decode with codec compact2b/);
  refused(Buffer.concat([block, Buffer.alloc(3)]), 1, /kv block 1 .*3 bytes after the last segment/);
  const wrongKind = Buffer.from(block);
  wrongKind[0] = 0;
  refused(wrongKind, 1, /kv block 1 .*segment 0 has kind 0/);
  const rans = Buffer.from(block);
  for (let k = 200; k < 260; k++) rans[k] = 0xff;
  refused(rans, 1, /kv block 1 does not decode/);
});

for (const native of [true, false]) {
  test(`compact2b, ${native ? "native" : "JavaScript"}: blocks decoded several per pass give the state one per pass gives; a corrupt one in a pass is named`, () => {
    useNativeKvCodec(native ? addonPath : undefined);
    try {
      const state = syntheticSeqState({ tokens: 6 * B, vTransposed: true, windows: [0, 3 * B], seed: 12 });
      const split = splitState(state, B, { codec: COMPACT_BLOCKS });
      const one = new StateJoiner(split.meta, B);
      split.blocks.forEach((b, i) => one.placeCoded(i, b, COMPACT_BLOCKS));
      const many = new StateJoiner(split.meta, B);
      many.placeCodedMany(
        split.blocks.slice(0, 4).map((coded, i) => ({ i, coded })),
        COMPACT_BLOCKS,
      );
      many.placeCodedMany(
        split.blocks.slice(4).map((coded, k) => ({ i: 4 + k, coded })),
        COMPACT_BLOCKS,
      );
      assert.ok(many.finish().equals(one.finish()), "same bytes");
      const bad = split.blocks.map((b, i) => (i === 2 ? b.subarray(0, b.length - 9) : b));
      const j = new StateJoiner(split.meta, B);
      assert.throws(
        () =>
          j.placeCodedMany(
            bad.slice(0, 4).map((coded, i) => ({ i, coded })),
            COMPACT_BLOCKS,
          ),
        (err: unknown) => err instanceof KvBlockError && /kv block 2 does not decode with codec compact2b/.test(err.message),
      );
    } finally {
      useNativeKvCodec(addonPath);
    }
  });
}

test("compact2b on a worker thread (placeCodedManyAsync, kvDecodeAsync): the same state, the event loop free during the pass, a corrupt block in the pass named", async () => {
  useNativeKvCodec(addonPath);
  const state = syntheticSeqState({ tokens: 24 * B, vTransposed: true, windows: [0, 3 * B], seed: 12 });
  const split = splitState(state, B, { codec: COMPACT_BLOCKS });
  const sync = new StateJoiner(split.meta, B);
  sync.placeCodedMany(
    split.blocks.map((coded, i) => ({ i, coded })),
    COMPACT_BLOCKS,
  );
  const async_ = new StateJoiner(split.meta, B);
  // Event-loop turns while the passes run: none can pass during a synchronous decode (the awaits between passes are microtasks).
  let turns = 0;
  let spinning = true;
  const spin = (): void => void (spinning && (turns++, setImmediate(spin)));
  setImmediate(spin);
  const passes = [split.blocks.slice(0, 12), split.blocks.slice(12)];
  try {
    await async_.placeCodedManyAsync(
      passes[0]!.map((coded, i) => ({ i, coded })),
      COMPACT_BLOCKS,
    );
    await async_.placeCodedManyAsync(
      passes[1]!.map((coded, k) => ({ i: 12 + k, coded })),
      COMPACT_BLOCKS,
    );
  } finally {
    spinning = false;
  }
  assert.ok(async_.finish().equals(sync.finish()), "same bytes as the synchronous pass");
  assert.ok(turns > 0, "the event loop turned while the passes decoded");
  const bad = split.blocks.map((b, i) => (i === 5 ? b.subarray(0, b.length - 9) : b));
  await assert.rejects(
    new StateJoiner(split.meta, B).placeCodedManyAsync(
      bad.slice(0, 8).map((coded, i) => ({ i, coded })),
      COMPACT_BLOCKS,
    ),
    (err: unknown) => err instanceof KvBlockError && /kv block 5 does not decode with codec compact2b/.test(err.message),
  );
});

test("compact2b: a window whose cells wrapped (rows out of position order in the state) decodes through scratch to the rows in order give, native and JavaScript", () => {
  const opts = { tokens: 6 * B, vTransposed: true, windows: [0, 3 * B], seed: 12 };
  const wrapped = syntheticSeqState({ ...opts, rings: [0, B / 2] });
  assert.equal(plan(parse(wrapped, true), B).runs[1]!.filter((r) => r.block === 3).length, 2, "block 3's window rows are two runs in the state");
  /** Every block decoded into a fresh state (CODED_BATCH at a time), then its rows cut out in position order (raw blocks). */
  const decodedRows = (state: Buffer, native: boolean): Buffer[] => {
    const split = codedSplit(state, native);
    const j = new StateJoiner(split.meta, B);
    j.placeCodedMany(
      split.blocks.map((coded, i) => ({ i, coded })),
      COMPACT_BLOCKS,
    );
    return splitState(j.finish(), B).blocks;
  };
  try {
    const want = decodedRows(syntheticSeqState(opts), true);
    for (const native of [true, false]) {
      decodedRows(wrapped, native).forEach((rows, i) => assert.ok(rows.equals(want[i]!), `${native ? "native" : "JavaScript"}: block ${i}`));
    }
  } finally {
    useNativeKvCodec(addonPath);
  }
});

test("compact2b on the codec worker: the same blocks as inline; store codecs map to block codecs", async () => {
  useNativeKvCodec(addonPath);
  const state = syntheticSeqState({ tokens: 3 * B + 5, vTransposed: false, seed: 9 });
  const inline = splitState(truncateSeqState(state, 3 * B), B, { codec: COMPACT_BLOCKS });
  const offloaded = await splitKvBlocks(state, { tokens: 3 * B, blockTokens: B, codec: "compact2b" }, 0);
  assert.ok(offloaded.meta.equals(inline.meta));
  offloaded.blocks.forEach((b, i) => assert.ok(b.equals(inline.blocks[i]!), `block ${i}`));
  assert.deepEqual(offloaded.rawSizes, inline.rawSizes);
  assert.equal(blockCodecFor("compact1"), "compact2b");
  assert.equal(blockCodecFor("compact1", ["none", "compact2b", "compact1b"]), "compact2b");
  assert.equal(blockCodecFor("compact1", ["none", "compact1b"]), "compact1b", "a store from before compact2b gets compact1b");
  assert.equal(blockCodecFor("none"), "none");
  assert.equal(blockCodecFor("lossless"), undefined);
  assert.equal(kvBlockCodec("compact2b"), COMPACT_BLOCKS);
  assert.equal(kvBlockCodec("compact1b"), COMPACT1_BLOCKS);
  assert.equal(kvBlockCodec("compact2b@0.2")?.name, "compact2b@0.2");
  assert.equal(kvBlockCodec("compact1b@0.2s")?.name, "compact1b@0.2s");
  assert.equal(kvBlockCodec("compact1"), undefined);
});
