/**
 * `npm run bench:kv-codec-arch [-- --tokens N]`: the KV codecs on a second architecture — a
 * llama-shaped synthetic model (synthetic://1b: 16 layers, 32 heads, 8 KV heads of 64 channels,
 * every layer full attention, no q-norm, no sliding window; random weights) — where nothing was
 * ever measured or tuned. Size and speed only: its weights are random, so its outputs carry no
 * quality to compare. Per codec: bytes against f16, encode and decode MB/s (of f16 state, best of
 * three; the qpre-family codecs, compact among them, run natively since the pod loads the engine's
 * addon: `qpre_family_coder` says which), and that the decoded state loads. The native runtime,
 * CPU; the default model's figures are bench:kv-codec's. Writes bench/results/kv-codec-arch.json.
 */
import { writeFile } from "node:fs/promises";
import { availableParallelism, cpus, loadavg } from "node:os";
import { benchArgs } from "./cli.ts";
import { kvCodec } from "../engine/kvcodec/codec.ts";
import { nativeKvCodec } from "../engine/kvcodec/native-codec.ts";
import { startPod } from "../testing/engine.ts";

const { values: v } = benchArgs({ options: { tokens: { type: "string" }, out: { type: "string" } } });
const TOKENS = Number(v.tokens ?? 512);
const CODECS = ["none", "lossless", "int8", "qsink4", "compact"];

function bestOf3<T>(fn: () => T): { value: T; seconds: number } {
  let best: { value: T; seconds: number } | undefined;
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    const value = fn();
    const seconds = (performance.now() - t0) / 1000;
    if (!best || seconds < best.seconds) best = { value, seconds };
  }
  return best!;
}

async function main(): Promise<void> {
  await using pod = await startPod({ model: "synthetic://1b", parallel: 1, ctxSize: TOKENS + 64, threads: availableParallelism(), batchSize: 512 });
  const runtime = pod.pod.service.runtime;
  const seq = runtime.sequences[0]!;
  const words = Array.from({ length: TOKENS * 2 }, (_, i) => `w${(i * 7919) % 1000}`).join(" ");
  const tokens = runtime.tokenize(words).slice(0, TOKENS);
  const t0 = performance.now();
  await seq.evaluatePrefix(tokens);
  process.stderr.write(`kv-codec-arch: prefill of ${tokens.length} tokens took ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  const state = await seq.exportState();
  const codecs: Record<string, Record<string, number | boolean | string>> = {};
  for (const name of CODECS) {
    const codec = kvCodec(name);
    const enc = bestOf3(() => codec.encode(state));
    const dec = bestOf3(() => codec.decode(enc.value));
    await seq.clear();
    await seq.importState(dec.value);
    const loads = [...seq.contextTokens()].length === tokens.length;
    codecs[name] = {
      writes: codec.name,
      bytes: enc.value.length,
      compression_vs_f16: state.length / enc.value.length,
      encode_mb_s: state.length / 1e6 / enc.seconds,
      decode_mb_s: state.length / 1e6 / dec.seconds,
      exact: dec.value.equals(state),
      loads,
    };
    process.stderr.write(`kv-codec-arch: ${name}: ${JSON.stringify(codecs[name])}\n`);
  }
  const out = {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? "unknown", load_avg: loadavg() },
    model: "synthetic://1b (llama-shaped, random weights, f16): 16 layers, 8 KV heads x 64",
    // The pod's runtime loads the engine's addon, and with it the qpre-family codecs run natively (native-codec.ts).
    qpre_family_coder: nativeKvCodec() ? "native" : "javascript",
    tokens: tokens.length,
    state_bytes: state.length,
    codecs,
  };
  await writeFile(v.out ?? new URL("./results/kv-codec-arch.json", import.meta.url), `${JSON.stringify(out, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
}

await main();
