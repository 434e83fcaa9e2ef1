/**
 * The native encoder and decoder of the qpre-family codecs (engine/native/src/kvcodec-*.cpp)
 * against the JavaScript ones: byte-identical entries and states for compact1, its research
 * variant, qsink4 (channel gains)
 * and qpre (recent block), in both V layouts, neox and norm RoPE, with a gap in the positions
 * (RoPE seeds) and an odd token count; a truncated or corrupted body throws or decodes to something, never crashes; bad
 * arguments are TypeErrors and RangeErrors; the decode pool, kept from call to call, gives the same
 * state at every thread count and after a failed call; the codec's worker thread decodes with the addon too,
 * and loading it there leaves the main thread's engine class working. The addon is built on first
 * use (scripts/native/build.sh).
 */
import { before, test } from "node:test";
import assert from "node:assert/strict";
import { ensureModel } from "../model/fetch.ts";
import { loadNativeAddon, nativeAddonPath } from "../native/binding.ts";
import { runCodec } from "./codec-offload.ts";
import { syntheticSeqState } from "../../testing/kv-state.ts";
import { rng } from "../../testing/rng.ts";
import { kvCodec } from "./codec.ts";
import { decodeTensorsNatively, encodeTensorsNatively, nativeKvCodec, useNativeKvCodec, type NativeKvCodecAddon } from "./native-codec.ts";
import { decodeTensorsInJs, rebuildState } from "./qpre.ts";

let addon: NativeKvCodecAddon;
let addonPath: string;

before(async () => {
  addonPath = await nativeAddonPath();
  useNativeKvCodec(addonPath);
  addon = nativeKvCodec()!;
  assert.ok(addon, "the addon has kvDecode");
});

function decodeBoth(payload: Buffer): { js: Buffer; native: Buffer } {
  const js = rebuildState(payload);
  decodeTensorsInJs(js.coded);
  const native = rebuildState(payload);
  decodeTensorsNatively(addon, native.coded);
  return { js: js.state, native: native.state };
}

const CASES = [
  { tokens: 300, vTransposed: false, gap: 0 },
  { tokens: 300, vTransposed: true, gap: 37 },
  { tokens: 77, vTransposed: true, gap: 0, rope: "norm" as const, sections: [4], channels: 128 },
  { tokens: 1, vTransposed: false, gap: 0 },
];

/** The codec's encoding in JavaScript (no addon) and natively. */
function encodeBoth(name: string, state: Buffer, path: string | undefined): { js: Buffer; native: Buffer } {
  useNativeKvCodec(undefined);
  const js = kvCodec(name).encode(state);
  useNativeKvCodec(path);
  return { js, native: kvCodec(name).encode(state) };
}

for (const name of ["compact", "compactu@0.2", "qsink4", "qpre"]) {
  test(`${name}: the native encoder's entry is byte-identical to the JavaScript encoder's`, () => {
    for (const c of CASES) {
      const { js, native } = encodeBoth(name, syntheticSeqState({ ...c, seed: c.tokens }), addonPath);
      assert.ok(js.equals(native), `${name} ${JSON.stringify(c)}: native and JavaScript entries differ`);
    }
  });

  test(`${name}: the native decoder's state is byte-identical to the JavaScript decoder's`, () => {
    for (const c of CASES) {
      const state = syntheticSeqState({ ...c, seed: c.tokens });
      const payload = kvCodec(name).encode(state);
      const { js, native } = decodeBoth(payload);
      if (c.rope)
        assert.ok(
          rebuildState(payload).coded.some((t) => t.body[(t.kind === 3 ? 4 : 0) + 9] === 2),
          "a key is coded with norm RoPE",
        );
      assert.equal(js.length, state.length);
      assert.ok(js.equals(native), `${name} ${JSON.stringify(c)}: native and JavaScript states differ`);
      assert.ok(kvCodec(name).decode(payload).equals(js), "the codec's decode (native) is the JavaScript state");
    }
  });
}

test("the decode pool, kept from call to call: every thread count and order of calls gives the JavaScript state; a failed call leaves it working", () => {
  // Windowed streams: tensors of 288 and of 64 tokens in one call (the queue takes the large ones first).
  const payload = kvCodec("compact").encode(syntheticSeqState({ tokens: 288, vTransposed: true, windows: [0, 64], seed: 4 }));
  const js = rebuildState(payload);
  decodeTensorsInJs(js.coded);
  const sizes = new Set(js.coded.map((t) => t.slot.rows * t.slot.cols));
  assert.ok(sizes.size > 1, "tensors of several sizes");
  const decodeWith = (threads: number): Buffer => {
    const r = rebuildState(payload);
    decodeTensorsNatively(addon, r.coded, threads);
    return r.state;
  };
  for (const threads of [2, 1, 4, 2, 3, 8, 2]) assert.ok(decodeWith(threads).equals(js.state), `${threads} threads`);
  const { coded } = rebuildState(payload);
  const bad = coded.map((t, i) => (i === coded.length - 1 ? { ...t, body: t.body.subarray(0, 20) } : t));
  assert.throws(() => decodeTensorsNatively(addon, bad, 4), /corrupt/);
  for (let k = 0; k < 20; k++) assert.ok(decodeWith(4).equals(js.state), `call ${k} after the failed one`);
});

test("a tensor at an odd byte offset decodes and encodes through a copy, to the same bytes", () => {
  const payload = kvCodec("compact").encode(syntheticSeqState({ tokens: 60, vTransposed: true }));
  const js = rebuildState(payload);
  decodeTensorsInJs(js.coded);
  const native = rebuildState(payload);
  const odd = native.coded.map((t) => ({ ...t, slot: { ...t.slot, data: Buffer.alloc(t.slot.data.length + 1).subarray(1) } }));
  decodeTensorsNatively(addon, odd);
  odd.forEach((t, i) => assert.ok(t.slot.data.equals(js.coded[i]!.slot.data), `tensor ${i}`));
  const t = js.coded[0]!;
  const job = { kind: 3, t: t.slot, step: 0.25, segments: [{ tokens: 60, scale: 1 }], exactRows: [0], ropes: [] };
  const aligned = encodeTensorsNatively(addon, [job])[0]!;
  const shifted = encodeTensorsNatively(addon, [{ ...job, t: { ...t.slot, data: Buffer.concat([Buffer.alloc(1), t.slot.data]).subarray(1) } }])[0]!;
  assert.ok(shifted.equals(aligned));
});

test("a truncated tensor body throws; a corrupted one throws or decodes, never crashes", () => {
  const payload = kvCodec("compact").encode(syntheticSeqState({ tokens: 200, vTransposed: true, gap: 5 }));
  const { coded } = rebuildState(payload);
  const rand = rng(9);
  for (const [i, t] of coded.entries()) {
    for (const cut of [0, 3, 9, 20, Math.floor(t.body.length / 2), t.body.length - 1]) {
      const bad = [{ ...t, body: t.body.subarray(0, cut) }];
      assert.throws(() => decodeTensorsNatively(addon, bad), /corrupt|RoPE/, `tensor ${i} cut at ${cut}`);
    }
    for (let k = 0; k < 40; k++) {
      const body = Buffer.from(t.body);
      for (let f = 0; f < 1 + (k % 4); f++) body[Math.floor(rand() * body.length)] = Math.floor(rand() * 256);
      try {
        decodeTensorsNatively(addon, [{ ...t, body }]);
      } catch (err) {
        assert.match((err as Error).message, /corrupt|RoPE|seeds/);
      }
    }
  }
});

test("bad arguments are TypeErrors and RangeErrors, encoding and decoding", () => {
  const { coded } = rebuildState(kvCodec("compact").encode(syntheticSeqState({ tokens: 20 })));
  const t = coded[0]!;
  const job = {
    kind: 3,
    body: t.body,
    out: new Uint16Array(t.slot.rows * t.slot.cols),
    rows: t.slot.rows,
    cols: t.slot.cols,
    tokenAxis: 0,
    positions: t.slot.positions,
  };
  assert.throws(() => addon.kvDecode("x" as never, 1, null), TypeError);
  assert.throws(() => addon.kvDecode([job], 0, null), RangeError);
  assert.throws(() => addon.kvDecode([{ ...job, out: new Uint16Array(3) }], 1, null), RangeError);
  assert.throws(() => addon.kvDecode([{ ...job, positions: new Int32Array(2) }], 1, null), RangeError);
  assert.throws(() => addon.kvDecode([{ ...job, body: [1, 2] as never }], 1, null), TypeError);
  assert.throws(() => addon.kvDecode([{ ...job, kind: 2 }], 1, null), RangeError);
  assert.throws(() => addon.kvDecode([job], 1, new Float32Array(3)), RangeError);
  // outStride (a strided target, block decoding into the state): token axis 1 only, at least cols, out long enough.
  assert.throws(() => addon.kvDecode([{ ...job, outStride: t.slot.cols }], 1, null), /outStride needs token axis 1/);
  const vt = { ...job, rows: 4, cols: 20, tokenAxis: 1, out: new Uint16Array(3 * 30 + 20) };
  assert.throws(() => addon.kvDecode([{ ...vt, outStride: 19 }], 1, null), RangeError);
  assert.throws(() => addon.kvDecode([{ ...vt, outStride: 31 }], 1, null), /\(rows - 1\) \* outStride \+ cols/);
  const t16 = new Uint16Array(t.slot.rows * t.slot.cols);
  const enc = {
    kind: 3,
    data: t16,
    rows: t.slot.rows,
    cols: t.slot.cols,
    tokenAxis: 0,
    key: false,
    positions: t.slot.positions,
    ropes: [],
    step: 0.5,
    segmentTokens: Uint32Array.of(20),
    segmentScales: Float64Array.of(1),
  };
  assert.equal(addon.kvEncode([enc], 1, null).length, 1);
  assert.throws(() => addon.kvEncode([{ ...enc, data: new Uint16Array(5) }], 1, null), RangeError);
  assert.throws(() => addon.kvEncode([{ ...enc, segmentTokens: Uint32Array.of(21) }], 1, null), RangeError);
  assert.throws(() => addon.kvEncode([{ ...enc, exactRows: Uint32Array.of(20) }], 1, null), RangeError);
  assert.throws(() => addon.kvEncode([{ ...enc, key: true, ropes: undefined as never }], 1, null), TypeError);
  assert.throws(
    () =>
      addon.kvEncode(
        [{ ...enc, key: true, ropes: [{ style: 1, base: 1e4, stepCos: new Float64Array(3), stepSin: new Float64Array(3), seeds: new Float64Array(6) }] }],
        1,
        null,
      ),
    RangeError,
  );
  assert.throws(() => addon.kvEncode([{ ...enc, step: 0 }], 1, null), RangeError);
});

test("the codec worker decodes natively, and the addon loaded there leaves the main thread's engine working", async () => {
  const state = syntheticSeqState({ tokens: 300, vTransposed: true });
  const payload = kvCodec("compact").encode(state);
  const js = rebuildState(payload);
  decodeTensorsInJs(js.coded);
  // minBytes 0: on the worker thread, which loads the addon the job names.
  assert.ok((await runCodec("decode", "compact", payload, 0)).equals(js.state));
  const engine = await (await loadNativeAddon()).load(await ensureModel("synthetic://tiny"), { contextSize: 256, sequences: 1, threads: 1 });
  assert.ok(engine.info().nVocab > 0);
  await engine.dispose();
});
