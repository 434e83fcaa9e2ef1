/**
 * Load only when it pays. A prefix from the KV store costs its lookup, transfer, decode and import;
 * recomputing it costs prefill. On CPU a load wins by far (an 8K context of the small model
 * recomputes in ~13 s), on a GPU it can lose (a 7B 8K context is ~1 GB and recomputes in ~0.44 s,
 * so a load needs ~2.3 GB/s end to end). The pod learns both rates from what it does (moving
 * averages of milliseconds per token, loads timed end to end, prefills of enough tokens to be
 * representative) and, per request, recomputes when loading the entry is expected to be slower.
 * Until both rates are known it loads (that is how it learns the load rate), and every
 * `exploreEvery`-th decision against loading loads anyway so that a faster store is noticed.
 */
export interface ReuseDecision {
  choice: "load" | "recompute";
  /** Estimates behind the choice (undefined while a rate is unknown). */
  loadMs?: number;
  recomputeMs?: number;
}

export interface ReuseEstimatorOptions {
  /** Weight of the newest sample in the moving averages. Default 0.3. */
  alpha?: number;
  /** Load anyway on every n-th decision to recompute, to keep the load rate current. Default 20. */
  exploreEvery?: number;
  /** Samples of fewer tokens say little about a rate and are ignored. Default 32. */
  minTokens?: number;
}

export class ReuseEstimator {
  private loadMsPerToken: number | undefined;
  private prefillMsPerToken: number | undefined;
  private recomputeStreak = 0;
  private readonly alpha: number;
  private readonly exploreEvery: number;
  private readonly minTokens: number;

  constructor(opts: ReuseEstimatorOptions = {}) {
    this.alpha = opts.alpha ?? 0.3;
    this.exploreEvery = opts.exploreEvery ?? 20;
    this.minTokens = opts.minTokens ?? 32;
  }

  private average(old: number | undefined, sample: number): number {
    return old === undefined ? sample : old + this.alpha * (sample - old);
  }

  /** A load of an entry of `tokens` tokens took `ms`, lookup to import. */
  observeLoad(tokens: number, ms: number): void {
    if (tokens >= this.minTokens && ms >= 0) this.loadMsPerToken = this.average(this.loadMsPerToken, ms / tokens);
  }

  /** The pod prefilled `tokens` tokens in `ms`. */
  observePrefill(tokens: number, ms: number): void {
    if (tokens >= this.minTokens && ms >= 0) this.prefillMsPerToken = this.average(this.prefillMsPerToken, ms / tokens);
  }

  /** Whether to load an entry of `entryTokens` tokens that would spare recomputing `recomputeTokens`. */
  decide(entryTokens: number, recomputeTokens: number): ReuseDecision {
    if (this.loadMsPerToken === undefined || this.prefillMsPerToken === undefined) return { choice: "load" };
    const loadMs = this.loadMsPerToken * entryTokens;
    const recomputeMs = this.prefillMsPerToken * recomputeTokens;
    if (loadMs <= recomputeMs) {
      this.recomputeStreak = 0;
      return { choice: "load", loadMs, recomputeMs };
    }
    this.recomputeStreak++;
    if (this.recomputeStreak >= this.exploreEvery) {
      this.recomputeStreak = 0;
      return { choice: "load", loadMs, recomputeMs };
    }
    return { choice: "recompute", loadMs, recomputeMs };
  }

  /** The learned rates (metrics, diagnostics). */
  rates(): { loadMsPerToken?: number; prefillMsPerToken?: number } {
    return { loadMsPerToken: this.loadMsPerToken, prefillMsPerToken: this.prefillMsPerToken };
  }
}
