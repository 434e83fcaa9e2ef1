/**
 * `npm run bench:kv-decode [-- --tokens N --codec NAME --out FILE]`: decoding speed of a
 * qpre-family codec (default compact) in the engine's native addon against the JavaScript decoder,
 * measured in the same run on the same entry: GB/s of F16 state out, best of five, for the coded
 * tensors alone and for the whole entry (container and Brotli parts included), native on 1 thread
 * and on every core. Diagnostic: a synthetic Gemma-3-270M-shaped state (testing/kv-state.ts;
 * speed does not depend on the values beyond their statistics), no model. Checks that every
 * native decode is byte-identical to the JavaScript one. Writes bench/results/kv-decode.json.
 */
import { writeFile } from "node:fs/promises";
import { availableParallelism, cpus, loadavg } from "node:os";
import { parseArgs } from "node:util";
import { kvCodec } from "../engine/kvcodec/codec.ts";
import { decodeTensorsNatively, nativeKvCodec, useNativeKvCodec } from "../engine/kvcodec/native-decode.ts";
import { decodeTensorsInJs, rebuildState } from "../engine/kvcodec/qpre.ts";
import { nativeAddonPath } from "../engine/native/binding.ts";
import { syntheticSeqState } from "../testing/kv-state.ts";

const { values: v } = parseArgs({ options: { tokens: { type: "string" }, codec: { type: "string" }, out: { type: "string" } } });
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

async function main(): Promise<void> {
  useNativeKvCodec(await nativeAddonPath());
  const addon = nativeKvCodec();
  if (!addon) throw new Error("the native addon has no kvDecode");
  const state = syntheticSeqState({ tokens: TOKENS, vTransposed: true });
  const codec = kvCodec(CODEC);
  const payload = codec.encode(state);
  const tensorBytes = rebuildState(payload).coded.reduce((a, t) => a + t.slot.data.length, 0);
  // Tensors alone: the state is rebuilt before the clock starts.
  const tensors = (decode: (c: ReturnType<typeof rebuildState>["coded"]) => void): { state: Buffer; seconds: number } => {
    let seconds = Infinity;
    let last = Buffer.alloc(0);
    for (let i = 0; i < 5; i++) {
      const r = rebuildState(payload);
      const t0 = performance.now();
      decode(r.coded);
      seconds = Math.min(seconds, (performance.now() - t0) / 1000);
      last = r.state;
    }
    return { state: last, seconds };
  };
  const js = tensors(decodeTensorsInJs);
  const cores = availableParallelism();
  const native1 = tensors((c) => decodeTensorsNatively(addon, c, 1));
  const nativeN = tensors((c) => decodeTensorsNatively(addon, c, cores));
  useNativeKvCodec(undefined);
  const jsEntry = best(3, () => codec.decode(payload));
  useNativeKvCodec(await nativeAddonPath());
  const nativeEntry = best(5, () => codec.decode(payload));
  for (const [name, s] of [["native 1 thread", native1.state], [`native ${cores} threads`, nativeN.state], ["native entry", nativeEntry.value]] as const) {
    if (!s.equals(js.state)) throw new Error(`${name}: the decoded state differs from the JavaScript decoder's`);
  }
  const gbps = (bytes: number, seconds: number): number => Number((bytes / seconds / 1e9).toFixed(3));
  const result = {
    bench: "kv-decode",
    date: new Date().toISOString(),
    machine: { cpu: cpus()[0]?.model, cores, loadavg: loadavg().map((l) => Number(l.toFixed(2))) },
    codec: codec.name,
    tokens: TOKENS,
    stateBytes: state.length,
    payloadBytes: payload.length,
    tensorBytes,
    bitIdentical: true,
    tensorsGBps: { js: gbps(tensorBytes, js.seconds), native1: gbps(tensorBytes, native1.seconds), [`native${cores}`]: gbps(tensorBytes, nativeN.seconds) },
    entryGBps: { js: gbps(state.length, jsEntry.seconds), [`native${cores}`]: gbps(state.length, nativeEntry.seconds) },
    speedup: { tensors1: Number((js.seconds / native1.seconds).toFixed(1)), [`tensors${cores}`]: Number((js.seconds / nativeN.seconds).toFixed(1)), entry: Number((jsEntry.seconds / nativeEntry.seconds).toFixed(1)) },
  };
  const out = v.out ?? "bench/results/kv-decode.json";
  await writeFile(out, `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

await main();
