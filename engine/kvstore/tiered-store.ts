/**
 * The tiers in lookup order (memory, disk, object store). Caching is inclusive: a hit in a lower
 * tier is copied (promoted) into the first tier; a write goes to the first tier; an entry
 * evicted from tier i for capacity is written (demoted) to tier i+1 unless that tier has it;
 * evictions from the last tier are gone. A tier that fails (object store down) is skipped.
 */
import type { KvStoreMetrics } from "./store-metrics.ts";
import type { KvTier } from "./tier.ts";

export interface StoreHit {
  value: Buffer;
  tier: string;
}

export class TieredStore implements AsyncDisposable {
  private readonly background = new Set<Promise<void>>();

  constructor(
    readonly tiers: readonly KvTier[],
    private readonly metrics: KvStoreMetrics,
    private readonly log: (line: string) => void = (l) => process.stderr.write(`${l}\n`),
  ) {
    if (tiers.length === 0) throw new Error("a KV store needs at least one tier");
  }

  private async guard<T>(tier: KvTier, op: string, fn: () => Promise<T>, fallback: T): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      this.metrics.tierErrors.inc({ tier: tier.name, op });
      this.log(`kvstore: tier ${tier.name} ${op} failed: ${(err as Error).message}`);
      return fallback;
    }
  }

  async get(key: string): Promise<StoreHit | undefined> {
    for (const [i, tier] of this.tiers.entries()) {
      const t0 = performance.now();
      const value = await this.guard(tier, "get", () => tier.get(key), undefined);
      if (!value) continue;
      this.metrics.loadSeconds.observe({ tier: tier.name }, (performance.now() - t0) / 1000);
      this.metrics.hits.inc({ tier: tier.name });
      if (i > 0) this.inBackground(this.promote(tier, key, value));
      return { value, tier: tier.name };
    }
    this.metrics.misses.inc();
    return undefined;
  }

  private async promote(from: KvTier, key: string, value: Buffer): Promise<void> {
    this.metrics.promotions.inc({ tier: from.name });
    await this.putAt(0, key, value);
  }

  /** Index of the longest key (keys[i] names a prefix of i+1 blocks) held by any tier, or -1. */
  async longest(keys: readonly string[]): Promise<{ index: number; tier?: string }> {
    for (let i = keys.length - 1; i >= 0; i--) {
      const tier = await this.holder(keys[i]!);
      if (tier) return { index: i, tier };
    }
    return { index: -1 };
  }

  private async holder(key: string): Promise<string | undefined> {
    for (const tier of this.tiers) {
      if (await this.guard(tier, "has", () => tier.has(key), false)) return tier.name;
    }
    return undefined;
  }

  async put(key: string, value: Buffer): Promise<void> {
    await this.putAt(0, key, value);
  }

  private async putAt(i: number, key: string, value: Buffer): Promise<void> {
    const tier = this.tiers[i]!;
    const evicted = await this.guard(tier, "put", () => tier.put(key, value), []);
    const next = this.tiers[i + 1];
    for (const e of evicted) {
      if (e.key !== key) this.metrics.evictions.inc({ tier: tier.name });
      if (!next || (await this.guard(next, "has", () => next.has(e.key), false))) continue;
      this.metrics.demotions.inc({ tier: next.name });
      await this.putAt(i + 1, e.key, e.value);
    }
  }

  async delete(key: string): Promise<void> {
    for (const tier of this.tiers) await this.guard(tier, "delete", () => tier.delete(key), undefined);
  }

  /** Leaves the entry only in the named tier and the tiers below it (benchmarks, tests). */
  async placeIn(key: string, tierName: string): Promise<boolean> {
    const at = this.tiers.findIndex((t) => t.name === tierName);
    const hit = await this.get(key);
    await this.settled();
    if (at < 0 || !hit) return false;
    await this.tiers[at]!.put(key, hit.value);
    for (const tier of this.tiers.slice(0, at)) await tier.delete(key);
    return true;
  }

  private inBackground(p: Promise<void>): void {
    this.background.add(p);
    void p.finally(() => this.background.delete(p));
  }

  /** Waits for promotions in flight. */
  async settled(): Promise<void> {
    await Promise.all([...this.background]);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.settled();
  }
}
