/**
 * `npm run bench:kv-decode [-- --tokens N --codec NAME --synthetic --out FILE]`: decoding speed of
 * a qpre-family codec (default compact) in the engine's native addon against the JavaScript
 * decoder, measured in the same run on the same entry: GB/s of F16 state out (best of 20 runs,
 * JavaScript 3), each run into a fresh state as a load decodes, for
 * the coded tensors alone and for the whole entry (container and Brotli parts included), native on
 * 1 thread and on every core. The state: Gemma 3 270M's (Q4_K_M from the model cache, CPU) after
 * N tokens of this repository's docs; --synthetic: a Gemma-shaped synthetic state
 * (testing/kv-state.ts), no model (its values compress more than real ones, so it decodes faster).
 * Also encoding (a write-back), JavaScript against native, GB/s of F16 state in. Checks that every
 * native decode and encode is byte-identical to the JavaScript one. Writes
 * bench/results/kv-decode.json.
 */
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { availableParallelism, cpus, loadavg } from "node:os";
import { parseArgs } from "node:util";
import { kvCodec } from "../engine/kvcodec/codec.ts";
import { decodeTensorsNatively, nativeKvCodec, useNativeKvCodec } from "../engine/kvcodec/native-codec.ts";
import { decodeTensorsInJs, rebuildState } from "../engine/kvcodec/qpre.ts";
import { nativeAddonPath } from "../engine/native/binding.ts";
import { cacheRoot } from "../engine/model/fetch.ts";
import { startPod } from "../testing/engine.ts";
import { syntheticSeqState } from "../testing/kv-state.ts";

const { values: v } = parseArgs({
  options: { tokens: { type: "string" }, codec: { type: "string" }, out: { type: "string" }, synthetic: { type: "boolean" } },
});
const TOKENS = Number(v.tokens ?? 4096);
const CODEC = v.codec ?? "compact";

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
  };
  const out = v.out ?? "bench/results/kv-decode.json";
  await writeFile(out, `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

await main();
