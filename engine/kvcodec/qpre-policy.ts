/**
 * Steps for the qpre codecs, from measured sensitivities. A tensor's sensitivity is the logit KL
 * (KL(exact || perturbed) of the next-token distribution, teacher-forced over 256 tokens) when
 * Gaussian noise of 0.3 x its standard deviation is added to it alone; measured on Gemma 3 270M
 * over calibration text that is not among the kv-codec bench's contexts (docs/concepts.md,
 * docs/kv-store.md). For small noise KL ≈ a_t·step_t², and the bits of a tensor of N_t elements
 * fall by N_t·log2 per doubling of its step, so the steps that minimise the summed KL for a size
 * are step_t ∝ (N_t / a_t)^½; a flatter exponent (0.35) measured slightly better, as KL grows
 * faster than quadratically in the most sensitive tensors.
 * Keys of the second and first full-attention layers are 100-600x more sensitive than anything in
 * the sliding-window layers; full-attention values and sliding-window tensors sit near the
 * measurement's floor. States of other layouts get the floor sensitivity for every tensor.
 */
import type { TensorPolicy } from "./qpre.ts";
import type { KvTensor } from "./state-tensors.ts";

/** Sensitivity (KL at noise 0.3 sd) per layer, for a section of `layers` layers; [keys, values]. */
export type Sensitivities = Record<number, [number[], number[]]>;

export const GEMMA3_270M: Sensitivities = {
  3: [
    [0.1227, 0.6308, 0.00347],
    [0.00189, 0.00402, 0.00049],
  ],
  15: [
    [0.00065, 0.00067, 0.001, 0.00063, 0.00133, 0.0013, 0.00137, 0.00219, 0.00132, 0.01119, 0.00213, 0.00156, 0.00079, 0.00266, 0.00118],
    [0.00093, 0.00077, 0.00069, 0.00058, 0.00067, 0.00079, 0.00067, 0.00064, 0.00073, 0.00064, 0.00097, 0.00065, 0.00062, 0.00037, 0.0003],
  ],
};
/**
 * The same measured with the attention sink (position 0) exact and the keys scaled by their
 * query gains (query-gains.ts), as the qsink codecs code them, noise 0.3 x the RMS channel spread
 * (over the gain-scaled channels for keys), KL averaged over four calibration texts
 * (docs/concepts.md, docs/kv-store.md, docs/autoscaling.md, docs/runbooks.md; none is a bench
 * context). The sink and the gains take most of the first two full-attention layers' key
 * sensitivity away: they end 3-6x above the rest, not 100-600x.
 */
export const GEMMA3_270M_SINK: Sensitivities = {
  3: [
    [0.0039, 0.00648, 0.00054],
    [0.00114, 0.00225, 0.00031],
  ],
  15: [
    [0.00101, 0.00124, 0.00092, 0.00082, 0.00119, 0.0007, 0.001, 0.00103, 0.00152, 0.00169, 0.00129, 0.00038, 0.00055, 0.00051, 0.00035],
    [0.00078, 0.00191, 0.00175, 0.00106, 0.00075, 0.00085, 0.00093, 0.001, 0.0017, 0.0011, 0.00179, 0.00084, 0.00076, 0.00038, 0.0005],
  ],
};

/** Below this, the measurement does not tell tensors apart. */
const FLOOR = 0.0006;
export const EXPONENT = 0.35;
/** A sliding-window tensor of Gemma 3 270M holds 512 cells; N_t is counted against it. */
export const REFERENCE_CELLS = 512;

function sensitivity(t: Pick<KvTensor, "kind" | "layer" | "layers">, table: Sensitivities): number {
  const row = table[t.layers]?.[t.kind === "k" ? 0 : 1]?.[t.layer];
  return Math.max(row ?? FLOOR, FLOOR);
}

/**
 * `scale` sets the size: the step of a floor-sensitivity tensor of REFERENCE_CELLS cells, as a
 * fraction of its RMS channel spread.
 */
export function sensitivityPolicy(
  scale: number,
  recentTokens: number,
  recentScale: number,
  table: Sensitivities = GEMMA3_270M,
): (t: Pick<KvTensor, "kind" | "layer" | "layers" | "positions">) => TensorPolicy {
  return (t) => {
    const cells = t.positions.length / REFERENCE_CELLS;
    return { step: scale * ((cells * FLOOR) / sensitivity(t, table)) ** EXPONENT, recentTokens, recentScale };
  };
}
