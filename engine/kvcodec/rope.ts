/**
 * Rotary position embedding, undone and redone on K rows. llama.cpp stores keys after RoPE, so a
 * channel of the stored keys rotates with the token's position; undoing it gives channels whose
 * statistics (mean, spread, outlier channels) hold still along tokens, which is what per-channel
 * quantisation wants. The rotation is orthogonal, so quantisation error norms carry over.
 * Styles: "neox" pairs channel i with i + d/2 (Gemma, Qwen, ...); "norm" pairs 2i with 2i + 1
 * (Llama). Angle of pair i at position p: p * base^(-2i/d).
 */
export type RopeStyle = "neox" | "norm";

export interface Rope {
  style: RopeStyle;
  base: number;
}

/** cos and sin per (token, pair), token-major; consecutive positions by angle addition. */
export interface RopeTables {
  pairs: number;
  cos: Float64Array;
  sin: Float64Array;
}

/** Each pair's angle per position step, and its cosine and sine (what the recurrence advances by). */
export interface RopeSteps {
  theta: Float64Array;
  stepCos: Float64Array;
  stepSin: Float64Array;
}

/** ropeSteps' results by dimension and base: a model has a handful, and a block load asks for them per block. */
const STEPS = new Map<string, RopeSteps>();

/** The steps of a rope of `dim` channels and `base`; computed once per (dim, base) and shared: callers must not write to them. */
export function ropeSteps(dim: number, base: number): RopeSteps {
  const key = `${dim}/${base}`;
  let steps = STEPS.get(key);
  if (!steps) {
    const theta = Float64Array.from({ length: dim >> 1 }, (_, i) => base ** ((-2 * i) / dim));
    steps = { theta, stepCos: theta.map(Math.cos), stepSin: theta.map(Math.sin) };
    STEPS.set(key, steps);
  }
  return steps;
}

/** Token t's angles come from the previous token's by one step (else they are computed afresh: a seed). */
export const followsPrevious = (positions: Int32Array, t: number): boolean => t > 0 && positions[t] === positions[t - 1]! + 1;

export function ropeTables(positions: Int32Array, dim: number, base: number): RopeTables {
  const pairs = dim >> 1;
  const cos = new Float64Array(positions.length * pairs);
  const sin = new Float64Array(positions.length * pairs);
  const { theta, stepCos, stepSin } = ropeSteps(dim, base);
  for (let t = 0; t < positions.length; t++) {
    const o = t * pairs;
    const follows = followsPrevious(positions, t);
    for (let i = 0; i < pairs; i++) {
      if (follows) {
        const c = cos[o - pairs + i]!;
        const s = sin[o - pairs + i]!;
        cos[o + i] = c * stepCos[i]! - s * stepSin[i]!;
        sin[o + i] = s * stepCos[i]! + c * stepSin[i]!;
      } else {
        cos[o + i] = Math.cos(positions[t]! * theta[i]!);
        sin[o + i] = Math.sin(positions[t]! * theta[i]!);
      }
    }
  }
  return { pairs, cos, sin };
}

/**
 * Rotates every row of a tokens x dim f32 matrix (token-major) in place, by +angle (`direction`
 * 1, what llama.cpp applies) or -angle (-1, to undo it).
 */
export function rotateRows(x: Float32Array, tables: RopeTables, style: RopeStyle, direction: 1 | -1): void {
  const { pairs, cos, sin } = tables;
  const dim = pairs * 2;
  const tokens = x.length / dim;
  const [stride, offset] = style === "neox" ? [1, pairs] : [2, 1];
  for (let t = 0; t < tokens; t++) {
    const row = t * dim;
    const o = t * pairs;
    for (let i = 0; i < pairs; i++) {
      const a = row + i * stride;
      const b = a + offset;
      const c = cos[o + i]!;
      const s = direction * sin[o + i]!;
      const xa = x[a]!;
      const xb = x[b]!;
      x[a] = xa * c - xb * s;
      x[b] = xb * c + xa * s;
    }
  }
}
