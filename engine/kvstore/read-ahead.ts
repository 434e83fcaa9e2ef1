/**
 * Reads started ahead of a load. A lookup that finds an entry in a tier slower than memory (disk,
 * object store) starts reading the entry and, for a v2 manifest, its blocks in order, `window` at a
 * time, while the pod decides whether to load, fetches the manifest and asks for the blocks: the
 * tier's per-request latency and those round trips overlap the transfer instead of adding to it.
 * On the object-store tier a pod's 8K load waited ~45 ms from lookup to the first block read, and
 * each block read then waited for the send of the block before it (bench:kv-link, docs/kv-store.md).
 *
 * A read is handed to the first get of its key and forgotten (the next get reads the tiers again);
 * one that no load takes is dropped after `ttlMs`. Reads whose values are held here total at most
 * `maxBytes`: past that, the rest of an entry is read when the load asks for it.
 */
import { decodeManifest, isManifest, KvBlockError } from "./kv-blocks.ts";
import { inWindows, readWindow } from "./in-windows.ts";

export interface AheadHit {
  value: Buffer;
  tier: string;
}

export interface ReadAheadOptions {
  /** Bytes of values read ahead and not yet taken. Default 256 MiB. */
  maxBytes?: number;
  /** How long a read no load took is kept. Default 30 s. */
  ttlMs?: number;
  /** Block reads in flight per entry. Default: readWindow of the entry's largest block (8 to 32, in-windows.ts). */
  window?: number;
}

interface Read {
  hit: Promise<AheadHit | undefined>;
  at: number;
  bytes: number;
}

export type ReadAheadOutcome = "started" | "taken" | "expired";

export class ReadAhead {
  private readonly reads = new Map<string, Read>();
  private held = 0;
  /** Entries being read ahead now. */
  private active = 0;
  /** Keys a get asked for before their read ahead began (read by that get: not read again here). */
  private readonly claimed = new Set<string>();
  private readonly maxBytes: number;
  private readonly ttlMs: number;
  private readonly window: number | undefined;

  constructor(
    private readonly read: (key: string) => Promise<AheadHit | undefined>,
    private readonly count: (outcome: ReadAheadOutcome) => void = () => undefined,
    opts: ReadAheadOptions = {},
  ) {
    this.maxBytes = opts.maxBytes ?? 256 * 2 ** 20;
    this.ttlMs = opts.ttlMs ?? 30_000;
    this.window = opts.window === undefined ? undefined : Math.max(1, opts.window);
  }

  /** Bytes held for reads no get has taken yet. */
  get heldBytes(): number {
    return this.held;
  }

  /** The read started ahead for `key`, now taken; undefined when none was. */
  take(key: string): Promise<AheadHit | undefined> | undefined {
    this.sweep();
    const r = this.reads.get(key);
    if (!r) {
      if (this.active > 0) this.claimed.add(key);
      return undefined;
    }
    this.forget(key, r);
    this.count("taken");
    return r.hit;
  }

  /**
   * Reads the entry and, when it is a v2 manifest, its meta block, then its kv blocks in order,
   * `window` at a time, until `maxBytes` are held. Resolves when every read it started has ended (never rejects).
   */
  async entry(key: string): Promise<void> {
    this.active++;
    try {
      await this.blocksOf(await this.start(key));
    } finally {
      if (--this.active === 0) this.claimed.clear();
    }
  }

  private async blocksOf(hit: AheadHit | undefined): Promise<void> {
    if (!hit || !isManifest(hit.value)) return;
    let keys: string[];
    let width: number;
    try {
      const blocks = decodeManifest(hit.value).blocks;
      keys = blocks.map((b) => b.key);
      width = this.window ?? readWindow(Math.max(...blocks.map((b) => b.bytes)));
    } catch (err) {
      if (err instanceof KvBlockError) return; // the load's own read names the corruption
      throw err;
    }
    const take = async (key: string): Promise<void> => {
      if (this.held < this.maxBytes && !this.claimed.delete(key)) await this.start(key);
    };
    // The meta block alone first: a load can place nothing before it, and read beside an 8K
    // entry's 32 kv blocks on a link they share it arrived with the last of them (bench:kv-link).
    await take(keys[0]!);
    await inWindows(keys.slice(1), width, take);
  }

  private start(key: string): Promise<AheadHit | undefined> {
    this.sweep();
    const known = this.reads.get(key);
    if (known) return known.hit;
    const r: Read = { hit: this.read(key).catch(() => undefined), at: Date.now(), bytes: 0 };
    this.reads.set(key, r);
    this.count("started");
    void r.hit.then((hit) => {
      // Counted while it waits here (not once a get took it).
      if (hit && this.reads.get(key) === r) {
        r.bytes = hit.value.length;
        this.held += r.bytes;
      }
    });
    return r.hit;
  }

  private forget(key: string, r: Read): void {
    this.reads.delete(key);
    this.held -= r.bytes;
    r.bytes = 0;
  }

  private sweep(): void {
    const old = Date.now() - this.ttlMs;
    for (const [key, r] of this.reads) {
      if (r.at > old) break; // insertion order is start order
      this.forget(key, r);
      this.count("expired");
    }
  }

  /** Drops every read not taken (the store is closing). */
  clear(): void {
    for (const [key, r] of this.reads) this.forget(key, r);
  }
}
