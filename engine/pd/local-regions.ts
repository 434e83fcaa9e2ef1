/**
 * The local path's memory (local-handoff.ts): regions a decode pod owns and lends to prefill pods
 * on its machine one hand-off at a time, and the prefill pod's mappings of them. A region is device
 * memory shared by a CUDA IPC handle on a GPU pod, else POSIX shared memory
 * (engine/native/src/shared-region.h).
 */
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import type { SharedRegions } from "../native/binding.ts";

/**
 * Which machine this process runs on, as pods on it all see it: the kernel's boot id (not
 * namespaced: every container of a node reads the same), else the host name.
 */
export function nodeIdentity(): string {
  try {
    return readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    return hostname();
  }
}

interface Region {
  name: string;
  handle: number;
  bytes: number;
}

/** A decode pod's default cap on the memory it lends (LLMFLEET_KV_LOCAL_BYTES overrides; 0: no local path). */
export const LOCAL_LEND_DEFAULT = 2 * 2 ** 30;

/** The probe region's size (LocalRegions.probe). */
export const PROBE_BYTES = 2 ** 20;

/** How long a region lent for a hand-off that was never staged stays lent. */
const LEND_MS = 30_000;

/** Decode side: regions of this pod, at most capBytes in all, each lent to one hand-off until it is imported. */
export class LocalRegions {
  private readonly free: Region[] = [];
  private readonly lent = new Map<string, { region: Region; until: number }>();
  private total = 0;
  /**
   * A small region of the same kind made at start, never lent: a prefill pod maps it before it asks
   * for a real one, so that pods which cannot share memory (no shared IPC namespace, another GPU)
   * find out without this pod making GB-sized regions for them.
   */
  readonly probe: Region;

  constructor(
    private readonly addon: SharedRegions,
    readonly capBytes: number,
    /** Regions are device memory (a GPU pod with a CUDA runtime). */
    readonly device: boolean,
  ) {
    const made = addon.kvRegionCreate(PROBE_BYTES, device);
    this.probe = { name: made.name, handle: made.handle, bytes: PROBE_BYTES };
  }

  /** A region of at least `bytes` lent for one hand-off (reused, or made within the cap); undefined when the cap is reached. */
  reserve(bytes: number): Region | undefined {
    this.sweep();
    const i = this.bestFree(bytes);
    let region = i >= 0 ? this.free.splice(i, 1)[0] : undefined;
    if (!region) {
      // Room for one more: free regions too small or too large go first.
      const size = Math.ceil((bytes * 9) / 8); // the next state a few tokens longer fits too
      while (this.total + size > this.capBytes && this.free.length > 0) this.drop(this.free.shift()!);
      if (this.total + size > this.capBytes) return undefined;
      const made = this.addon.kvRegionCreate(size, this.device);
      region = { name: made.name, handle: made.handle, bytes: size };
      this.total += size;
    }
    this.lent.set(region.name, { region, until: Date.now() + LEND_MS });
    return region;
  }

  /** The region lent under this name, held until release (a staged hand-off); undefined when it is not lent. */
  hold(name: string): Region | undefined {
    const l = this.lent.get(name);
    if (!l) return undefined;
    l.until = Infinity;
    return l.region;
  }

  /** Back to the free regions (its hand-off imported, failed or expired). */
  release(name: string): void {
    const l = this.lent.get(name);
    if (!l) return;
    this.lent.delete(name);
    this.free.push(l.region);
  }

  get bytes(): number {
    return this.total;
  }

  close(): void {
    for (const r of this.free.splice(0)) this.drop(r);
    for (const l of this.lent.values()) this.drop(l.region);
    this.lent.clear();
    this.addon.kvRegionClose(this.probe.handle);
  }

  private bestFree(bytes: number): number {
    let best = -1;
    this.free.forEach((r, i) => {
      if (r.bytes >= bytes && r.bytes <= 2 * bytes && (best < 0 || r.bytes < this.free[best]!.bytes)) best = i;
    });
    return best;
  }

  private sweep(): void {
    const now = Date.now();
    for (const [name, l] of this.lent) if (l.until < now) this.release(name);
  }

  private drop(r: Region): void {
    this.addon.kvRegionClose(r.handle);
    this.total -= r.bytes;
  }
}

/**
 * Prefill side: this process's mappings of decode pods' regions, by name; the least recently used
 * are closed past `maxBytes` mapped (a decode pod that restarted leaves mappings of regions no one
 * will lend again, and a mapping keeps its memory alive: on a GPU, device memory).
 */
export class RegionMappings {
  private readonly open = new Map<string, { handle: number; bytes: number }>();
  private total = 0;

  constructor(
    private readonly addon: SharedRegions,
    readonly maxBytes = 2 * LOCAL_LEND_DEFAULT,
  ) {}

  /** This process's handle of the region (mapped on first use); throws with the reason when it cannot be mapped. */
  map(name: string, bytes: number): number {
    const known = this.open.get(name);
    if (known !== undefined) {
      this.open.delete(name);
      this.open.set(name, known);
      return known.handle;
    }
    const handle = this.addon.kvRegionOpen(name, bytes);
    this.open.set(name, { handle, bytes });
    this.total += bytes;
    for (const [oldest, m] of this.open) {
      if (this.total <= this.maxBytes || oldest === name) break;
      this.open.delete(oldest);
      this.total -= m.bytes;
      this.addon.kvRegionClose(m.handle);
    }
    return handle;
  }

  get bytes(): number {
    return this.total;
  }

  close(): void {
    for (const m of this.open.values()) this.addon.kvRegionClose(m.handle);
    this.open.clear();
    this.total = 0;
  }
}
