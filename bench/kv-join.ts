/**
 * `npm run bench:kv-join` (a diagnostic of the KV store's load path, issue 19): the pod assembles a
 * loaded entry's state from its blocks (StateJoiner: each block's rows copied into place) before
 * llama.cpp copies it to the device. This times that assembly for a 7B-shaped synthetic state (32
 * layers, 8 KV heads x 128 channels, f16; BENCH_TOKENS tokens, default 4096: 0.54 GB) into a fresh
 * Buffer.allocUnsafe (the baseline: what a load did before, every page faulted in as it is first
 * written) and into a block of the addon's host pool (kvAlloc: reused, so its pages are there; on a
 * GPU also page-locked), BENCH_ROUNDS rounds each, and prints the ratio of the medians. Writes
 * bench/results/kv-join.json (BENCH_OUT elsewhere).
 */
import { writeFile } from "node:fs/promises";
import { cpus, loadavg } from "node:os";
import { syntheticSeqState } from "../testing/kv-state.ts";
import { splitState, StateJoiner } from "../engine/kvstore/kv-blocks.ts";
import { kvStreamAddon } from "../engine/pd/kv-transport.ts";
import { noOptions } from "./cli.ts";

noOptions();

const TOKENS = Number(process.env.BENCH_TOKENS ?? 4096);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const BLOCK_TOKENS = 256;

const kv = await kvStreamAddon();
if (!kv?.kvAlloc || !kv.kvRelease) throw new Error("the native addon (kv-stream with kvAlloc) is not available");
const state = syntheticSeqState({ tokens: TOKENS, sections: [32], channels: 1024 });
const split = splitState(state, BLOCK_TOKENS);
process.stderr.write(`bench:kv-join: ${TOKENS} tokens, ${(state.length / 1e9).toFixed(3)} GB, ${split.blocks.length} blocks\n`);

/** Milliseconds to join the blocks into a state made by `alloc`, and whether it equals the original. */
function join(alloc: ((n: number) => Buffer) | undefined): { ms: number; out: Buffer } {
  const t0 = performance.now();
  const j = new StateJoiner(split.meta, BLOCK_TOKENS, false, alloc);
  split.blocks.forEach((b, i) => j.place(i, b));
  const out = j.finish();
  return { ms: performance.now() - t0, out };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const runs: Record<string, number[]> = { allocUnsafe: [], pool: [] };
const load = loadavg()[0]!;
for (let r = 0; r < ROUNDS; r++) {
  const fresh = join(undefined);
  if (r === 0 && !fresh.out.equals(state)) throw new Error("the joined state differs from the original");
  runs.allocUnsafe!.push(fresh.ms);
  const pooled = join((n) => kv.kvAlloc!(n));
  if (r === 0 && !pooled.out.equals(state)) throw new Error("the joined state (pool) differs from the original");
  runs.pool!.push(pooled.ms);
  kv.kvRelease(pooled.out);
}
const gbS = (ms: number): number => Math.round((state.length / ms / 1e6) * 100) / 100;
const result = {
  date: new Date().toISOString(),
  machine: `${cpus()[0]?.model ?? "?"} x${cpus().length}; load average ${load.toFixed(2)} at the start, ${loadavg()[0]!.toFixed(2)} at the end`,
  tokens: TOKENS,
  state_bytes: state.length,
  blocks: split.blocks.length,
  rounds: ROUNDS,
  ms: runs,
  join_ms_alloc_unsafe: Math.round(median(runs.allocUnsafe!) * 10) / 10,
  join_ms_pool: Math.round(median(runs.pool!) * 10) / 10,
  gb_s_alloc_unsafe: gbS(median(runs.allocUnsafe!)),
  gb_s_pool: gbS(median(runs.pool!)),
  ratio_pool_vs_alloc_unsafe: Math.round((median(runs.allocUnsafe!) / median(runs.pool!)) * 100) / 100,
};
const out = process.env.BENCH_OUT ?? "bench/results/kv-join.json";
await writeFile(out, `${JSON.stringify(result, null, 2)}\n`);
process.stderr.write(
  `bench:kv-join: allocUnsafe ${result.join_ms_alloc_unsafe} ms (${result.gb_s_alloc_unsafe} GB/s), pool ${result.join_ms_pool} ms (${result.gb_s_pool} GB/s): ${result.ratio_pool_vs_alloc_unsafe}x; ${out}\n`,
);
