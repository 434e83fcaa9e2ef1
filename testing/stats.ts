/** Small statistics for timing tests: median and the two-sample Kolmogorov–Smirnov test. */

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** The KS statistic D: the largest distance between the two empirical distribution functions. */
export function ksStatistic(a: readonly number[], b: readonly number[]): number {
  const x = [...a].sort((p, q) => p - q);
  const y = [...b].sort((p, q) => p - q);
  let i = 0;
  let j = 0;
  let d = 0;
  while (i < x.length && j < y.length) {
    const v = Math.min(x[i]!, y[j]!);
    while (i < x.length && x[i]! <= v) i++;
    while (j < y.length && y[j]! <= v) j++;
    d = Math.max(d, Math.abs(i / x.length - j / y.length));
  }
  return d;
}

/**
 * Two-sample KS test: D and its asymptotic p-value (Kolmogorov's distribution with Stephens'
 * small-sample correction, as in Numerical Recipes' kstwo). A small p separates the samples.
 */
export function ksTest(a: readonly number[], b: readonly number[]): { d: number; p: number } {
  const d = ksStatistic(a, b);
  const ne = Math.sqrt((a.length * b.length) / (a.length + b.length));
  const lambda = (ne + 0.12 + 0.11 / ne) * d;
  let sum = 0;
  for (let k = 1; k <= 100; k++) {
    const term = 2 * (k % 2 === 1 ? 1 : -1) * Math.exp(-2 * k * k * lambda * lambda);
    sum += term;
    if (Math.abs(term) < 1e-10) break;
  }
  return { d, p: lambda < 1e-3 ? 1 : Math.min(1, Math.max(0, sum)) };
}

/**
 * The shift between two paired samples (a[i] measured next to b[i]): the median of the
 * differences a[i] - b[i]. Pairing cancels what drifts slowly (a shared machine's load). On TTFTs
 * measured under load (heavy-tailed differences) it was steadier than the Hodges–Lehmann estimate
 * and than the median of log ratios: resampling five recorded rounds, a round with no effect
 * crossed 10 % in 3–17 % of resamples (100 pairs: 0–3 %), against 14–41 % for Hodges–Lehmann
 * and 44–63 % for the difference of the plain medians.
 */
export function pairedShift(a: readonly number[], b: readonly number[]): number {
  if (a.length !== b.length || a.length === 0) throw new Error(`pairedShift needs two samples of one length (${a.length}, ${b.length})`);
  return median(a.map((x, i) => x - b[i]!));
}
