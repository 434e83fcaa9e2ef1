/**
 * The perturbation floor's perturbation (bench/kv-quality.ts, bench/rag-join.ts): the quality a
 * state keeps after FLOOR_FLIPS imperceptible changes of its KV, FLOOR_SEEDS seeds. Apart from
 * kv-quality.ts so benchmarks bundled without node-llama-cpp (the GPU machine's) can use it.
 */
import { isTensor, splitState } from "../engine/kvcodec/state-tensors.ts";

export const FLOOR_FLIPS = 1000;
export const FLOOR_SEEDS = 3;

/** A seeded generator (mulberry32): the floor's perturbations are the same in every run. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** A copy of the state with the lowest bit of `flips` random F16 K/V elements flipped (one ulp each). */
export function perturbed(raw: Buffer, flips: number, seed: number): Buffer {
  const state = Buffer.from(raw);
  const tensors = splitState(state).filter(isTensor);
  const total = tensors.reduce((a, t) => a + t.data.length / 2, 0);
  const next = random(seed);
  for (let f = 0; f < flips; f++) {
    let e = Math.floor(next() * total);
    let k = 0;
    while (e >= tensors[k]!.data.length / 2) e -= tensors[k++]!.data.length / 2;
    tensors[k]!.data[2 * e] = tensors[k]!.data[2 * e]! ^ 1;
  }
  return state;
}
