/**
 * The tiers in lookup order (memory, disk, object store). Caching is inclusive: a hit in a lower
 * tier is copied (promoted) into the first tier; a write goes to the first tier; an entry
 * evicted from tier i for capacity is written (demoted) to tier i+1 unless that tier has it;
 * evictions from the last tier are gone. A tier that fails (object store down) is skipped.
 * Entries' intermediate block keys are aliases (alias-index.ts): a lookup may answer a longer
 * entry that starts with the asked prefix.
 */
import { AliasIndex } from "./alias-index.ts";
import { KvEntryError, readStoredHeader } from "./kv-entry.ts";
import type { KvStoreMetrics } from "./store-metrics.ts";
import type { KvTier } from "./tier.ts";
import { crc32c } from "./crc32c.ts";
import { ReadAhead, type ReadAheadOptions } from "./read-ahead.ts";
import { inWindows } from "./in-windows.ts";

/** A stored v2 block's size and CRC-32C (what a manifest names it by). */
export interface BlockSum {
  bytes: number;
  crc32c: number;
}

/**
 * Keys a lookup asks about at once after the longest (TieredStore.longest): a miss of an 8K prompt
 * in 256-token blocks is then 1 + 4 object-store round trips, not 32.
 */
export const LOOKUP_WINDOW = 8;

/** Blocks whose size and CRC-32C the store remembers (the oldest are forgotten, then read back when asked). */
const MAX_BLOCK_SUMS = 1 << 20;

export interface StoreHit {
  value: Buffer;
  tier: string;
}

/** keys[index] is held; `entry` names what to GET: keys[index] itself, or a longer entry (an alias). */
export interface LongestMatch {
  index: number;
  tier?: string;
  entry?: { key: string; blocks: number };
}

export interface TieredStoreOptions {
  /** Tokens per block: an entry's aliases are indexed only when its header's token count matches its key chain. */
  blockTokens?: number;
  /** Bound of the alias index in (alias, entry) pairs. Default 1,000,000 (~200 MB at most). */
  maxAliasPairs?: number;
  /** Keys a lookup asks the tiers about at once, after the longest alone (longest). Default LOOKUP_WINDOW. */
  lookupWindow?: number;
  /** Reads started ahead of a load after a lookup hit below memory (read-ahead.ts); false: none. */
  readAhead?: ReadAheadOptions | false;
  log?: (line: string) => void;
}

export class TieredStore implements AsyncDisposable {
  private readonly blockSums = new Map<string, BlockSum>();
  private readonly background = new Set<Promise<void>>();
  readonly aliases: AliasIndex;
  private readonly ahead: ReadAhead | undefined;
  private readonly log: (line: string) => void;

  constructor(
    readonly tiers: readonly KvTier[],
    private readonly metrics: KvStoreMetrics,
    private readonly opts: TieredStoreOptions = {},
  ) {
    if (tiers.length === 0) throw new Error("a KV store needs at least one tier");
    this.aliases = new AliasIndex(opts.maxAliasPairs);
    this.log = opts.log ?? ((l) => process.stderr.write(`${l}\n`));
    if (opts.readAhead !== false) this.ahead = new ReadAhead((key) => this.read(key), (outcome) => metrics.readAhead.inc({ outcome }), opts.readAhead);
  }

  /** Indexes the aliases of entries a tier kept over a restart (the disk tier's files). */
  async indexAliases(): Promise<void> {
    for (const tier of this.tiers) {
      if (!tier.headers) continue;
      for await (const { key, header } of tier.headers()) this.indexEntry(key, header.tokens, header.prefixKeys);
    }
  }

  private indexEntry(key: string, tokens: number, prefixKeys: string[] | undefined): void {
    const bt = this.opts.blockTokens;
    if (bt !== undefined && prefixKeys && prefixKeys.length * bt !== tokens) return;
    this.aliases.add(key, prefixKeys);
  }

  private indexValue(key: string, value: Buffer): void {
    try {
      const header = readStoredHeader(value);
      this.indexEntry(key, header.tokens, header.prefixKeys);
    } catch (err) {
      if (!(err instanceof KvEntryError)) throw err;
      this.aliases.drop(key);
    }
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

  /** The entry under `key` from the first tier that holds it (a read started ahead of a load, when there is one). */
  get(key: string): Promise<StoreHit | undefined> {
    return this.ahead?.take(key) ?? this.read(key);
  }

  /**
   * After a lookup found `key` in `tierName`: below memory, the entry and its blocks start to be
   * read now (read-ahead.ts), for the load that usually follows.
   */
  readAheadOf(key: string, tierName: string | undefined): void {
    const tier = this.tiers.find((t) => t.name === tierName);
    if (!this.ahead || !tier || tier.medium === "memory") return;
    this.inBackground(this.ahead.entry(key));
  }

  private async read(key: string): Promise<StoreHit | undefined> {
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

  /**
   * Index of the longest key (keys[i] names a prefix of i+1 blocks) held by any tier, or -1.
   * With `aliases`, a key that only prefixes a held entry counts too (the whole entry is
   * preferred when both exist); an alias whose entry is gone is dropped on the way.
   * The longest is asked alone first (a context learned once is most often asked whole); then
   * `lookupWindow` keys at a time, longest first, each window's questions in flight together: on an
   * object store each is a request (a HEAD), and a miss on a prompt of n blocks would otherwise
   * wait for n of them one after another.
   */
  async longest(keys: readonly string[], aliases = false): Promise<LongestMatch> {
    const width = this.lookupWidth;
    for (let top = keys.length - 1; top >= 0; ) {
      const from = Math.max(0, top - (top === keys.length - 1 ? 0 : width - 1));
      const indices = Array.from({ length: top - from + 1 }, (_, j) => top - j);
      const found = await Promise.all(indices.map((i) => this.matchAt(keys[i]!, i, aliases)));
      const j = found.findIndex((f) => f !== undefined);
      if (j >= 0) {
        if (found[j]!.viaAlias) this.metrics.aliasHits.inc();
        return { index: indices[j]!, tier: found[j]!.tier, entry: found[j]!.entry };
      }
      top = from - 1;
    }
    return { index: -1 };
  }

  /** keys[i] held in a tier (the entry is itself), else through an alias when asked. */
  private async matchAt(key: string, i: number, aliases: boolean): Promise<(Omit<LongestMatch, "index"> & { viaAlias: boolean }) | undefined> {
    const tier = await this.holder(key);
    if (tier) return { tier, entry: { key, blocks: i + 1 }, viaAlias: false };
    const viaAlias = aliases ? await this.liveAlias(key) : undefined;
    return viaAlias ? { ...viaAlias, viaAlias: true } : undefined;
  }

  private async liveAlias(alias: string): Promise<Omit<LongestMatch, "index"> | undefined> {
    for (const target of this.aliases.candidates(alias)) {
      const tier = await this.holder(target.key);
      if (tier) return { tier, entry: target };
      this.aliases.drop(target.key);
    }
    return undefined;
  }

  private async holder(key: string): Promise<string | undefined> {
    for (const tier of this.tiers) {
      if (await this.guard(tier, "has", () => tier.has(key), false)) return tier.name;
    }
    return undefined;
  }

  async put(key: string, value: Buffer): Promise<void> {
    this.indexValue(key, value);
    await this.putAt(0, key, value);
  }

  /**
   * Stores a v2 block (kv-blocks.ts; no header) unless a block is already held under its key: the
   * first writer's stays (manifests already name its size and CRC-32C; another writer's bytes for
   * the same prefix may differ, as a GPU's KV does from batch to batch). Returns what is held.
   */
  async putBlock(key: string, value: Buffer, crc = crc32c(value)): Promise<BlockSum & { stored: boolean }> {
    const held = await this.blockSum(key);
    if (held) return { ...held, stored: false };
    await this.putAt(0, key, value);
    this.rememberSum(key, { bytes: value.length, crc32c: crc });
    return { bytes: value.length, crc32c: crc, stored: true };
  }

  /** Size and CRC-32C of the block held under `key` (undefined: none): remembered from its put, else read once. */
  async blockSum(key: string): Promise<BlockSum | undefined> {
    if (!(await this.holder(key))) {
      this.blockSums.delete(key);
      return undefined;
    }
    const known = this.blockSums.get(key);
    if (known) return known;
    const hit = await this.get(key);
    if (!hit) return undefined;
    const sum = { bytes: hit.value.length, crc32c: crc32c(hit.value) };
    this.rememberSum(key, sum);
    return sum;
  }

  private rememberSum(key: string, sum: BlockSum): void {
    this.blockSums.delete(key);
    this.blockSums.set(key, sum);
    if (this.blockSums.size > MAX_BLOCK_SUMS) this.blockSums.delete(this.blockSums.keys().next().value!);
  }

  /** blockSum of each key, lookupWindow at a time (each may be an object-store HEAD and GET). */
  async blockSumsOf(keys: readonly string[]): Promise<(BlockSum | undefined)[]> {
    const sums: (BlockSum | undefined)[] = new Array<BlockSum | undefined>(keys.length).fill(undefined);
    await inWindows(
      keys.map((_, i) => i),
      this.lookupWidth,
      async (i) => void (sums[i] = await this.blockSum(keys[i]!)),
    );
    return sums;
  }

  /** Keys asked about at once (longest, blockSumsOf). */
  private get lookupWidth(): number {
    return Math.max(1, this.opts.lookupWindow ?? LOOKUP_WINDOW);
  }

  /** Which of the keys any tier holds (a v2 writer uploads only the others). */
  async hasMany(keys: readonly string[]): Promise<boolean[]> {
    return Promise.all(keys.map(async (k) => (await this.holder(k)) !== undefined));
  }

  private async putAt(i: number, key: string, value: Buffer): Promise<void> {
    const tier = this.tiers[i]!;
    const evicted = await this.guard(tier, "put", () => tier.put(key, value), []);
    const next = this.tiers[i + 1];
    for (const e of evicted) {
      if (e.key !== key) this.metrics.evictions.inc({ tier: tier.name });
      if (!next) await this.dropAliasesIfGone(e.key);
      if (!next || (await this.guard(next, "has", () => next.has(e.key), false))) continue;
      this.metrics.demotions.inc({ tier: next.name });
      await this.putAt(i + 1, e.key, e.value);
    }
  }

  /** After a last-tier eviction: the entry may still be in an upper tier (caching is inclusive). */
  private async dropAliasesIfGone(key: string): Promise<void> {
    if (!(await this.holder(key))) this.aliases.drop(key);
  }

  async delete(key: string): Promise<void> {
    this.aliases.drop(key);
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
    this.ahead?.clear();
  }
}
