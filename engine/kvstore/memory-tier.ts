/** Memory tier: LRU by bytes (a Map keeps insertion order; a hit re-inserts). */
import type { KvTier, TierEntry, TierStats } from "./tier.ts";
import type { TierSpec } from "./tier-spec.ts";

interface Slot {
  value: Buffer;
  storedAt: number;
}

export class MemoryTier implements KvTier {
  readonly medium = "memory" as const;
  readonly name: string;
  readonly corrupt = 0;
  private readonly slots = new Map<string, Slot>();
  private bytes = 0;
  private readonly capacity: number;
  private readonly ttlMs: number | undefined;

  constructor(spec: Pick<TierSpec, "name" | "capacityBytes" | "ttlMs">) {
    this.name = spec.name;
    this.capacity = spec.capacityBytes ?? Infinity;
    this.ttlMs = spec.ttlMs;
  }

  private live(key: string): Slot | undefined {
    const slot = this.slots.get(key);
    if (slot && this.ttlMs !== undefined && Date.now() - slot.storedAt > this.ttlMs) {
      this.remove(key);
      return undefined;
    }
    return slot;
  }

  async get(key: string): Promise<Buffer | undefined> {
    const slot = this.live(key);
    if (!slot) return undefined;
    this.slots.delete(key);
    this.slots.set(key, slot);
    return slot.value;
  }

  async has(key: string): Promise<boolean> {
    return this.live(key) !== undefined;
  }

  async put(key: string, value: Buffer): Promise<TierEntry[]> {
    this.remove(key);
    if (value.length > this.capacity) return [{ key, value }];
    const evicted: TierEntry[] = [];
    for (const [k, slot] of this.slots) {
      if (this.bytes + value.length <= this.capacity) break;
      evicted.push({ key: k, value: slot.value });
      this.remove(k);
    }
    this.slots.set(key, { value, storedAt: Date.now() });
    this.bytes += value.length;
    return evicted;
  }

  async delete(key: string): Promise<void> {
    this.remove(key);
  }

  private remove(key: string): void {
    const slot = this.slots.get(key);
    if (!slot) return;
    this.slots.delete(key);
    this.bytes -= slot.value.length;
  }

  stats(): TierStats {
    return { bytes: this.bytes, blocks: this.slots.size };
  }
}
