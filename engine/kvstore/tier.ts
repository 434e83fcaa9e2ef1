/** One storage tier of the KV store. Values are v1 KV entries (kv-entry.ts), v2 manifests and v2 blocks (kv-blocks.ts), opaque here. */
import type { KvEntryHeader } from "./kv-entry.ts";
import type { TierMedium } from "./tier-spec.ts";

export interface TierEntry {
  key: string;
  value: Buffer;
}

export interface TierStats {
  bytes: number;
  blocks: number;
}

export interface KvTier {
  readonly name: string;
  readonly medium: TierMedium;
  /** The value, or undefined on a miss (absent, expired, or failed its checksum and deleted). */
  get(key: string): Promise<Buffer | undefined>;
  has(key: string): Promise<boolean>;
  /** Stores the value; returns the entries evicted to make room (for demotion). */
  put(key: string, value: Buffer): Promise<TierEntry[]>;
  delete(key: string): Promise<void>;
  stats(): TierStats;
  /** Headers of the entries the tier held when it opened (a persistent tier), to rebuild the store's aliases. */
  headers?(): AsyncIterable<{ key: string; header: Pick<KvEntryHeader, "tokens" | "prefixKeys"> }>;
  /** Counts of entries rejected by checksum since start. */
  readonly corrupt: number;
}

/** A key is the hex of a SHA-256 (block-keys.ts); anything else never reaches a tier. */
export function checkKey(key: string): string {
  if (!/^[0-9a-f]{64}$/.test(key)) throw new Error(`bad KV key ${JSON.stringify(key.slice(0, 80))}`);
  return key;
}
