/**
 * The store's alias index: every intermediate block-prefix key of an entry (kv-entry.ts
 * `prefixKeys`) names that entry, so a prompt that shares only the first k blocks of a stored
 * prompt is served the longer entry and cuts it to k blocks itself (prefix-cache.ts).
 *
 * Memory only, across all tiers (an entry keeps its key when promoted or demoted). It may be
 * stale, never wrong about tokens: aliases are dropped with their entry (delete, eviction from
 * the last tier), an entry found gone at lookup (TTL, object-store eviction) drops its aliases
 * there, and an entry gone between lookup and GET is a 404, i.e. a recompute. Keys are the same
 * salted chain hashes as entry keys, so a tenant's alias can only match that tenant's prompts.
 * Bounded: past `maxPairs` (alias, entry) pairs the oldest entries' aliases are forgotten (the
 * entries themselves stay and serve their own key).
 */
import { checkKey } from "./tier.ts";

export interface AliasTarget {
  /** Key of the entry to fetch. */
  key: string;
  /** Blocks that entry holds (more than the alias names). */
  blocks: number;
}

export class AliasIndex {
  /** alias key -> entry keys that hold it as a strict prefix. */
  private readonly byAlias = new Map<string, Set<string>>();
  /** entry key -> its prefix keys (last = the entry key), oldest registration first. */
  private readonly entries = new Map<string, readonly string[]>();
  private pairCount = 0;

  constructor(readonly maxPairs = 1_000_000) {}

  /** Registers the aliases of `entry`; a chain that does not end in `entry` or has a bad key is ignored. */
  add(entry: string, prefixKeys: readonly string[] | undefined): void {
    this.drop(entry);
    if (!validChain(entry, prefixKeys) || prefixKeys.length < 2) return;
    const aliases = prefixKeys.slice(0, -1);
    this.entries.set(entry, prefixKeys);
    for (const alias of aliases) {
      const set = this.byAlias.get(alias) ?? new Set<string>();
      this.byAlias.set(alias, set.add(entry));
    }
    this.pairCount += aliases.length;
    this.bound();
  }

  drop(entry: string): void {
    const chain = this.entries.get(entry);
    if (!chain) return;
    this.entries.delete(entry);
    for (const alias of chain.slice(0, -1)) {
      const set = this.byAlias.get(alias);
      set?.delete(entry);
      if (set?.size === 0) this.byAlias.delete(alias);
    }
    this.pairCount -= chain.length - 1;
  }

  private bound(): void {
    for (const entry of this.entries.keys()) {
      if (this.pairCount <= this.maxPairs) return;
      this.drop(entry);
    }
  }

  /** Entries that hold `alias` as a prefix, fewest blocks first (least to fetch and cut). */
  candidates(alias: string): AliasTarget[] {
    const set = this.byAlias.get(alias);
    if (!set) return [];
    return [...set].map((key) => ({ key, blocks: this.entries.get(key)!.length })).sort((a, b) => a.blocks - b.blocks);
  }

  /** (alias, entry) pairs held. */
  get pairs(): number {
    return this.pairCount;
  }
}

function validChain(entry: string, keys: readonly string[] | undefined): keys is readonly string[] {
  if (!Array.isArray(keys) || keys.at(-1) !== entry) return false;
  try {
    keys.forEach(checkKey);
    return new Set(keys).size === keys.length;
  } catch {
    return false;
  }
}
