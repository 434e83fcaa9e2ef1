/**
 * The KV of RAG documents computed on their own ([BOS] + document), kept in host memory so a
 * document that comes back in another position is joined instead of recomputed (issue 26). Keyed
 * by the tenant's KV namespace and the document's tokens: one tenant never gets another's entry
 * (a hit would show in its TTFT). Least recently used entries go first when the bytes exceed the
 * budget.
 */
import { createHash } from "node:crypto";
import type { Token } from "../runtime/runtime.ts";

export class ChunkCache {
  private readonly entries = new Map<string, Buffer>();
  private used = 0;
  hits = 0;
  misses = 0;

  constructor(readonly maxBytes: number) {}

  static key(namespace: string, tokens: readonly Token[]): string {
    return `${namespace}\0${createHash("sha256").update(Int32Array.from(tokens)).digest("hex")}`;
  }

  get bytes(): number {
    return this.used;
  }

  /** Whether the entry is kept (not counted as a hit or a miss, not made recent). */
  has(key: string): boolean {
    return this.entries.has(key);
  }

  get(key: string): Buffer | undefined {
    const state = this.entries.get(key);
    if (!state) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    this.entries.delete(key);
    this.entries.set(key, state);
    return state;
  }

  put(key: string, state: Buffer): void {
    if (state.length > this.maxBytes) return;
    const old = this.entries.get(key);
    if (old) this.used -= old.length;
    this.entries.delete(key);
    this.entries.set(key, state);
    this.used += state.length;
    for (const [k, v] of this.entries) {
      if (this.used <= this.maxBytes) break;
      this.entries.delete(k);
      this.used -= v.length;
    }
  }
}
