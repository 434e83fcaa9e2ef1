/**
 * `npm run bench:kv-decode [-- --tokens N --codec NAME --block-codec NAME --block-tokens B --synthetic --out FILE]`: decoding speed of
 * a qpre-family codec (default compact) in the engine's native addon against the JavaScript
 * decoder, measured in the same run on the same entry: GB/s of F16 state out (best of 20 runs,
 * JavaScript 3), each run into a fresh state as a load decodes, for
 * the coded tensors alone and for the whole entry (container and Brotli parts included), native on
 * 1 thread and on every core. The state: Gemma 3 270M's (Q4_K_M from the model cache, CPU) after
 * N tokens of this repository's docs; --synthetic: a Gemma-shaped synthetic state
 * (testing/kv-state.ts), no model (its values compress more than real ones, so it decodes faster).
 * Also encoding (a write-back), JavaScript against native, GB/s of F16 state in. Checks that every
 * native decode and encode is byte-identical to the JavaScript one. `perBlock`: the v2 path, the
 * state in --block-tokens (default 256) blocks coded by --block-codec (default compact2b, what a
 * compact store writes) one by one and decoded into the state as a load does, CODED_BATCH blocks per
 * native pass (StateJoiner.placeCodedMany); `perBlockBaseline`: the same for compact1b (the two-state
 * rANS stream compact2b replaced), measured in the same run, and `perBlockSpeedup` the ratio
 * (LLMFLEET_KVCODEC_SIMD=avx2|none: compact2b's AVX2 or one-lane path, `wideStreamSimd`).
 * Writes bench/results/kv-decode.json (or --out).
 */
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { availableParallelism, cpus, loadavg } from "node:os";
import { benchArgs } from "./cli.ts";
import { kvCodec } from "../engine/kvcodec/codec.ts";
import { decodeTensorsNatively, nativeKvCodec, useNativeKvCodec, type NativeKvCodecAddon } from "../engine/kvcodec/native-codec.ts";
import { decodeTensorsInJs, rebuildState } from "../engine/kvcodec/qpre.ts";
import { nativeAddonPath } from "../engine/native/binding.ts";
import { cacheRoot } from "../engine/model/fetch.ts";
import { startPod } from "../testing/engine.ts";
import { syntheticSeqState } from "../testing/kv-state.ts";
import { COMPACT_BLOCKS, kvBlockCodec } from "../engine/kvcodec/block-codec.ts";
import { splitState, type KvBlockCodec, type SplitState } from "../engine/kvstore/kv-blocks.ts";
import { joinCodedBlocks } from "./coded-blocks.ts";
import { truncateSeqState } from "../engine/runtime/seq-state.ts";
import { kvStreamAddon } from "../engine/pd/kv-transport.ts";

const { values: v } = benchArgs({
  options: { tokens: { type: "string" }, codec: { type: "string" }, "block-codec": { type: "string" }, "block-tokens": { type: "string" }, out: { type: "string" }, synthetic: { type: "boolean" } },
});
const TOKENS = Number(v.tokens ?? 4096);
const CODEC = v.codec ?? "compact";
const BLOCK_CODEC = v["block-codec"] ?? COMPACT_BLOCKS.name;
/** The store's default --block-tokens. */
const BLOCK_TOKENS = Number(v["block-tokens"] ?? 256);
/** The per-block baseline: compact1b, the two-state rANS stream of compact's blocks before compact2b. */
const BASELINE_BLOCK_CODEC = "compact1b";

function best<T>(runs: number, fn: () => T): { value: T; seconds: number } {
  let out: { value: T; seconds: number } | undefined;
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const value = fn();
    const seconds = (performance.now() - t0) / 1000;
    if (!out || seconds < out.seconds) out = { value, seconds };
  }
  return out!;
}

const MODEL = join(cacheRoot(), "models", "gemma-3-270m-q4_k_m.gguf");

/** Gemma 3 270M's state after TOKENS tokens of docs/ (V transposed: no flash attention, as on CPU). */
async function modelState(): Promise<Buffer> {
  await using pod = await startPod({ model: MODEL, parallel: 1, ctxSize: TOKENS + 64, threads: availableParallelism(), batchSize: 512 });
  const runtime = pod.pod.service.runtime;
  const docs = await Promise.all((await readdir("docs")).sort().map((f) => readFile(join("docs", f), "utf8")));
  const tokens = runtime.tokenize(docs.join("\n\n")).slice(0, TOKENS);
  if (tokens.length < TOKENS) throw new Error(`docs/ holds only ${tokens.length} tokens`);
  const seq = runtime.sequences[0]!;
  await seq.evaluatePrefix(tokens);
  return seq.exportState();
}

/**
 * Decodes every block of the split into a state as a load does: CODED_BATCH blocks per native pass
 * (StateJoiner.placeCodedMany), into `alloc`'s buffer (a load's: the addon's pool block, reused from
 * load to load; default a fresh buffer, whose pages the kernel faults in and zeroes as it is
 * written); seconds.
 */
function joinBlocks(split: SplitState, codec: KvBlockCodec, alloc?: (bytes: number) => Buffer): { state: Buffer; seconds: number } {
  const t0 = performance.now();
  const state = joinCodedBlocks({ meta: split.meta, blocks: split.blocks, blockTokens: BLOCK_TOKENS }, codec, alloc);
  return { state, seconds: (performance.now() - t0) / 1000 };
}

const bestOf = (runs: number, fn: () => { state: Buffer; seconds: number }): { state: Buffer; seconds: number } =>
  Array.from({ length: runs }, fn).reduce((a, b) => (b.seconds < a.seconds ? b : a));

/**
 * The v2 path: the state cut to whole blocks of BLOCK_TOKENS, each coded by the block codec on its
 * own, then decoded into the state as BlockSink does, CODED_BATCH blocks per native pass: GB/s of F16
 * state out (meta block and row placement included), JavaScript, native on 1 thread and on every core.
 */
async function perBlock(whole: Buffer, addon: NativeKvCodecAddon, name: string): Promise<Record<string, unknown>> {
  const codec = kvBlockCodec(name);
  if (!codec) throw new Error(`unknown block codec ${name}`);
  const state = truncateSeqState(whole, Math.floor(TOKENS / BLOCK_TOKENS) * BLOCK_TOKENS);
  useNativeKvCodec(undefined);
  const jsSplit = best(2, () => splitState(state, BLOCK_TOKENS, { codec }));
  const js = bestOf(2, () => joinBlocks(jsSplit.value, codec));
  useNativeKvCodec(await nativeAddonPath());
  const split = best(5, () => splitState(state, BLOCK_TOKENS, { codec }));
  split.value.blocks.forEach((b, i) => {
    if (!b.equals(jsSplit.value.blocks[i]!)) throw new Error(`block ${i}: the native encoder's bytes differ from JavaScript's`);
  });
  const cores = availableParallelism();
  // The block codec decodes on every core (up to 8); for one thread the loaded addon's kvDecode is
  // called with 1 for the measurement, then restored.
  const kvDecode = addon.kvDecode;
  // A load decodes into a pool block of the addon (BlockClient.stateBlock), the same memory load
  // after load; given back after each run here as a load gives it back once imported.
  const pool = await kvStreamAddon();
  const poolAlloc = pool?.kvAlloc && pool.kvRelease ? pool.kvAlloc.bind(pool) : undefined;
  const native = (n: number, alloc?: (bytes: number) => Buffer): { state: Buffer; seconds: number } => {
    addon.kvDecode = (jobs, _threads, gains) => kvDecode.call(addon, jobs, n, gains);
    try {
      return bestOf(10, () => {
        const run = joinBlocks(split.value, codec, alloc);
        if (alloc && !run.state.equals(js.state)) throw new Error("per block: the native decode into a pool block differs from JavaScript's");
        if (alloc) pool!.kvRelease!(run.state);
        return run;
      });
    } finally {
      addon.kvDecode = kvDecode;
    }
  };
  const [one, all] = [native(1), native(cores)];
  for (const s of [one.state, all.state]) if (!s.equals(js.state)) throw new Error("per block: the native decode differs from JavaScript's");
  const [onePool, allPool] = poolAlloc ? [native(1, poolAlloc), native(cores, poolAlloc)] : [undefined, undefined];
  const gbps = (seconds: number): number => Number((state.length / seconds / 1e9).toFixed(3));
  const coded = split.value.blocks.reduce((n, b) => n + b.length, 0) + split.value.meta.length;
  return {
    codec: codec.name,
    blockTokens: BLOCK_TOKENS,
    blocks: split.value.blocks.length,
    stateBytes: state.length,
    storedBytes: coded,
    sizeRatioVsF16: Number((coded / state.length).toFixed(4)),
    bitIdentical: true,
    decodeGBps: { js: gbps(js.seconds), native1: gbps(one.seconds), [`native${cores}`]: gbps(all.seconds) },
    ...(onePool && allPool ? { decodeGBpsPoolBlock: { native1: gbps(onePool.seconds), [`native${cores}`]: gbps(allPool.seconds) } } : {}),
    decodeGBpsOf: "decodeGBps: into a fresh buffer each run; decodeGBpsPoolBlock: into the addon's pool block, reused, as a load decodes",
    perBlockMs: { [`native${cores}`]: Number(((all.seconds / split.value.blocks.length) * 1000).toFixed(2)) },
    encodeGBps: { js: gbps(jsSplit.seconds), [`native${cores}`]: gbps(split.seconds) },
  };
}

async function main(): Promise<void> {
  useNativeKvCodec(await nativeAddonPath());
  const addon = nativeKvCodec();
  if (!addon) throw new Error("the native addon has no kvDecode");
  const state = v.synthetic ? syntheticSeqState({ tokens: TOKENS, vTransposed: true }) : await modelState();
  const codec = kvCodec(CODEC);
  // Encoding (a write-back): JavaScript, then the addon; the same entry either way.
  useNativeKvCodec(undefined);
  const jsEncode = best(3, () => codec.encode(state));
  useNativeKvCodec(await nativeAddonPath());
  const nativeEncode = best(5, () => codec.encode(state));
  if (!nativeEncode.value.equals(jsEncode.value)) throw new Error("the native encoder's entry differs from the JavaScript encoder's");
  const payload = nativeEncode.value;
  const tensorBytes = rebuildState(payload).coded.reduce((a, t) => a + t.slot.data.length, 0);
  // Tensors alone: the state is rebuilt before the clock starts.
  // Every run into a fresh state, as a load decodes (its first writes fault the pages in).
  const tensors = (decode: (c: ReturnType<typeof rebuildState>["coded"]) => void, runs: number): { state: Buffer; seconds: number } => {
    let seconds = Infinity;
    let last: Buffer = Buffer.alloc(0);
    for (let i = 0; i < runs; i++) {
      const r = rebuildState(payload);
      const t0 = performance.now();
      decode(r.coded);
      seconds = Math.min(seconds, (performance.now() - t0) / 1000);
      last = r.state;
    }
    return { state: last, seconds };
  };
  const js = tensors(decodeTensorsInJs, 3);
  const cores = availableParallelism();
  const native1 = tensors((c) => decodeTensorsNatively(addon, c, 1), 20);
  const nativeN = tensors((c) => decodeTensorsNatively(addon, c, cores), 20);
  useNativeKvCodec(undefined);
  const jsEntry = best(3, () => codec.decode(payload));
  useNativeKvCodec(await nativeAddonPath());
  const nativeEntry = best(20, () => codec.decode(payload));
  for (const [name, s] of [
    ["native 1 thread", native1.state],
    [`native ${cores} threads`, nativeN.state],
    ["native entry", nativeEntry.value],
  ] as const) {
    if (!s.equals(js.state)) throw new Error(`${name}: the decoded state differs from the JavaScript decoder's`);
  }
  const gbps = (bytes: number, seconds: number): number => Number((bytes / seconds / 1e9).toFixed(3));
  const result = {
    bench: "kv-decode",
    date: new Date().toISOString(),
    machine: { cpu: cpus()[0]?.model, cores, loadavg: loadavg().map((l) => Number(l.toFixed(2))) },
    // compact2b's vector path (kvcodec-wide.h): LLMFLEET_KVCODEC_SIMD=avx2|none times a narrower one.
    wideStreamSimd: process.env.LLMFLEET_KVCODEC_SIMD ?? "the widest the CPU has",
    codec: codec.name,
    state: v.synthetic ? "synthetic (testing/kv-state.ts)" : "gemma-3-270m Q4_K_M, docs/",
    tokens: TOKENS,
    stateBytes: state.length,
    payloadBytes: payload.length,
    tensorBytes,
    bitIdentical: true,
    tensorsGBps: { js: gbps(tensorBytes, js.seconds), native1: gbps(tensorBytes, native1.seconds), [`native${cores}`]: gbps(tensorBytes, nativeN.seconds) },
    entryGBps: { js: gbps(state.length, jsEntry.seconds), [`native${cores}`]: gbps(state.length, nativeEntry.seconds) },
    encodeGBps: { js: gbps(state.length, jsEncode.seconds), [`native${cores}`]: gbps(state.length, nativeEncode.seconds) },
    speedup: {
      tensors1: Number((js.seconds / native1.seconds).toFixed(1)),
      [`tensors${cores}`]: Number((js.seconds / nativeN.seconds).toFixed(1)),
      entry: Number((jsEntry.seconds / nativeEntry.seconds).toFixed(1)),
      encode: Number((jsEncode.seconds / nativeEncode.seconds).toFixed(1)),
    },
    perBlock: await perBlock(state, addon, BLOCK_CODEC),
    perBlockBaseline: await perBlock(state, addon, BASELINE_BLOCK_CODEC),
  };
  const gbpsOf = (r: Record<string, unknown>): number => ((r.decodeGBpsPoolBlock ?? r.decodeGBps) as Record<string, number>)[`native${cores}`]!;
  Object.assign(result, {
    perBlockSpeedup: { of: `${BLOCK_CODEC} against ${BASELINE_BLOCK_CODEC}, native on ${cores} threads into the pool block`, ratio: Number((gbpsOf(result.perBlock) / gbpsOf(result.perBlockBaseline)).toFixed(2)) },
  });
  const out = v.out ?? "bench/results/kv-decode.json";
  await writeFile(out, `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

await main();
