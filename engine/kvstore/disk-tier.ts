/**
 * Local-disk tier: one file per entry under `path/<2 hex>/<key>`. Writes are crash-safe
 * (temp file, fsync, rename: a reader sees the old entry or the whole new one, never a torn
 * one); every read checks the entry's SHA-256 and deletes a file that fails it. The LRU index
 * lives in memory and is rebuilt from the directory (oldest mtime first) on start, when
 * leftover temp files of an interrupted write are removed. `headers()` reads each file's entry
 * header so the store rebuilds its alias index from the entries themselves (nothing else is
 * persisted, so aliases cannot disagree with the files after a crash).
 */
import { randomUUID } from "node:crypto";
import { mkdir, open, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { isValidStoredValue, KV_ENTRY_HEAD_BYTES, kvEntryHeaderLength, readKvEntryHeader, readStoredHeader, type KvEntryHeader } from "./kv-entry.ts";
import { isManifest } from "./kv-blocks.ts";
import type { KvTier, TierEntry, TierStats } from "./tier.ts";
import type { TierSpec } from "./tier-spec.ts";

interface Slot {
  bytes: number;
  storedAt: number;
}

export class DiskTier implements KvTier {
  readonly medium = "disk" as const;
  readonly name: string;
  corrupt = 0;
  private readonly slots = new Map<string, Slot>();
  private bytes = 0;

  private constructor(private readonly spec: TierSpec & { path: string; capacityBytes: number }) {
    this.name = spec.name;
  }

  static async open(spec: TierSpec): Promise<DiskTier> {
    if (!spec.path || spec.capacityBytes === undefined) throw new Error(`disk tier ${spec.name} needs path and capacity`);
    const tier = new DiskTier({ ...spec, path: spec.path, capacityBytes: spec.capacityBytes });
    await mkdir(spec.path, { recursive: true });
    await tier.rebuildIndex();
    return tier;
  }

  private async rebuildIndex(): Promise<void> {
    const found: { key: string; slot: Slot }[] = [];
    for (const dir of await readdir(this.spec.path)) {
      if (!/^[0-9a-f]{2}$/.test(dir)) continue;
      for (const file of await readdir(join(this.spec.path, dir))) found.push(...(await this.indexFile(dir, file)));
    }
    found.sort((a, b) => a.slot.storedAt - b.slot.storedAt);
    for (const { key, slot } of found) this.add(key, slot);
  }

  private async indexFile(dir: string, file: string): Promise<{ key: string; slot: Slot }[]> {
    const full = join(this.spec.path, dir, file);
    if (!/^[0-9a-f]{64}$/.test(file)) {
      await rm(full, { force: true });
      return [];
    }
    const s = await stat(full);
    return [{ key: file, slot: { bytes: s.size, storedAt: s.mtimeMs } }];
  }

  private file(key: string): string {
    return join(this.spec.path, key.slice(0, 2), key);
  }

  private expired(slot: Slot): boolean {
    return this.spec.ttlMs !== undefined && Date.now() - slot.storedAt > this.spec.ttlMs;
  }

  async get(key: string): Promise<Buffer | undefined> {
    const slot = this.slots.get(key);
    if (!slot) return undefined;
    if (this.expired(slot)) {
      await this.delete(key);
      return undefined;
    }
    const value = await readFile(this.file(key)).catch(() => undefined);
    if (!value || !isValidStoredValue(value)) {
      if (value) this.corrupt++;
      await this.delete(key);
      return undefined;
    }
    this.slots.delete(key);
    this.slots.set(key, slot);
    return value;
  }

  async has(key: string): Promise<boolean> {
    const slot = this.slots.get(key);
    return slot !== undefined && !this.expired(slot);
  }

  async put(key: string, value: Buffer): Promise<TierEntry[]> {
    await this.delete(key);
    if (value.length > this.spec.capacityBytes) return [{ key, value }];
    const evicted = await this.makeRoom(value.length);
    const target = this.file(key);
    const tmp = `${target}.${randomUUID()}.tmp`;
    await mkdir(join(this.spec.path, key.slice(0, 2)), { recursive: true });
    const fh = await open(tmp, "w");
    try {
      await fh.writeFile(value);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, target);
    this.add(key, { bytes: value.length, storedAt: Date.now() });
    return evicted;
  }

  private async makeRoom(incoming: number): Promise<TierEntry[]> {
    const evicted: TierEntry[] = [];
    for (const key of [...this.slots.keys()]) {
      if (this.bytes + incoming <= this.spec.capacityBytes) break;
      const value = await readFile(this.file(key)).catch(() => undefined);
      if (value && isValidStoredValue(value)) evicted.push({ key, value });
      await this.delete(key);
    }
    return evicted;
  }

  private add(key: string, slot: Slot): void {
    this.slots.set(key, slot);
    this.bytes += slot.bytes;
  }

  async delete(key: string): Promise<void> {
    const slot = this.slots.get(key);
    if (!slot) return;
    this.slots.delete(key);
    this.bytes -= slot.bytes;
    await rm(this.file(key), { force: true });
  }

  async *headers(): AsyncGenerator<{ key: string; header: Pick<KvEntryHeader, "tokens" | "prefixKeys"> }> {
    for (const key of [...this.slots.keys()]) {
      const header = await this.readHeader(key).catch(() => undefined);
      if (header) yield { key, header };
    }
  }

  /** The entry's header without reading the payload (unchecked: indexing only). */
  private async readHeader(key: string): Promise<Pick<KvEntryHeader, "tokens" | "prefixKeys">> {
    const fh = await open(this.file(key), "r");
    try {
      const head = Buffer.alloc(KV_ENTRY_HEAD_BYTES);
      await fh.read(head, 0, head.length, 0);
      // A v2 manifest is small: read it whole; a v2 block (raw bytes) has no header and is skipped.
      if (isManifest(head)) return readStoredHeader(await readFile(this.file(key)));
      const json = Buffer.alloc(Math.min(kvEntryHeaderLength(head), 2 ** 20));
      await fh.read(json, 0, json.length, head.length);
      return readKvEntryHeader(Buffer.concat([head, json]));
    } finally {
      await fh.close();
    }
  }

  stats(): TierStats {
    return { bytes: this.bytes, blocks: this.slots.size };
  }
}
