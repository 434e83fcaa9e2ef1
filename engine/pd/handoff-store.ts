/**
 * Decode side: KV states received from prefill pods, waiting for the router's generate call.
 * Bounded (a full store refuses new hand-offs: back-pressure to the prefill pod) and expiring
 * (a router that never comes back must not pin memory).
 */
import type { ImportedLocal } from "../serving/completion-service.ts";

export interface StagedState {
  tokens: number[];
  /** The state in host memory; absent for a local hand-off (local: its rows are in a region). */
  state?: Buffer;
  local?: ImportedLocal;
  /** Prompt tokens the prefill pod reused (the hand-off header's cachedTokens). */
  cachedTokens: number;
  expiresAt: number;
}

export class HandoffStoreFullError extends Error {}

export class HandoffStore implements AsyncDisposable {
  private readonly staged = new Map<string, StagedState>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(
    readonly maxEntries: number,
    readonly ttlMs = 60_000,
  ) {
    this.sweeper = setInterval(() => this.sweep(), Math.min(ttlMs, 5_000));
    this.sweeper.unref();
  }

  get size(): number {
    return this.staged.size;
  }

  get bytes(): number {
    let total = 0;
    for (const s of this.staged.values()) total += s.state?.length ?? 0;
    return total;
  }

  /** Stages a state in host memory (`state`) or in a shared region (`local`). */
  put(id: string, tokens: number[], held: { state?: Buffer; local?: ImportedLocal }, cachedTokens = 0): void {
    this.sweep();
    if (this.staged.size >= this.maxEntries) throw new HandoffStoreFullError(`decode pod holds ${this.maxEntries} staged KV states; retry later`);
    this.staged.set(id, { tokens, ...held, cachedTokens, expiresAt: Date.now() + this.ttlMs });
  }

  /** Removes and returns the staged state; undefined when unknown or expired. */
  take(id: string): StagedState | undefined {
    const s = this.staged.get(id);
    this.staged.delete(id);
    if (s && s.expiresAt >= Date.now()) return s;
    s?.local?.done();
    return undefined;
  }

  private sweep(): void {
    const now = Date.now();
    for (const [id, s] of this.staged) {
      if (s.expiresAt >= now) continue;
      this.staged.delete(id);
      s.local?.done(); // its region back to the pod's free ones
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    clearInterval(this.sweeper);
    for (const s of this.staged.values()) s.local?.done();
    this.staged.clear();
  }
}
