/**
 * The load side's sink of a v2 entry's blocks when the loading sequence imports parts (unified KV,
 * raw unsealed blocks): each kv block, checked against the manifest, is laid out as a state of its
 * own cells (block-parts.ts) and imported while later blocks are still arriving; the imports run one
 * at a time, each taking every part ready by then (one engine call, between decode steps). What is
 * left after the stream's last block is that block's own part. BlockSink is the other sink: the
 * whole state assembled, then imported.
 */
import { normaliseSeqState, type KvLayout } from "../runtime/seq-state.ts";
import type { PlacedPart } from "../runtime/runtime.ts";
import { crc32c } from "./crc32c.ts";
import { KvBlockError, verifyBlock, type KvManifest } from "./kv-blocks.ts";
import { PartJoiner, type PartLayout } from "./block-parts.ts";
import { BlockArrivals } from "./block-arrivals.ts";

export interface PartSinkOptions {
  /** The loading pod's KV layout: a part written by a pod of another one is normalised to it (seq-state.ts). */
  layout: KvLayout;
  /** Imports parts into the loading sequence (RuntimeSequence.importPartsAt). */
  importer: (parts: readonly PlacedPart[]) => Promise<void>;
  /** Blocks past this many tokens are checked and dropped, not imported (a prefix of a longer entry). */
  tokens: number;
  /** The addon's pool (a part's buffer, given back once imported) and its worker-thread copy; absent: heap buffers, copied inline. */
  alloc?: (bytes: number) => Buffer | Promise<Buffer>;
  free?: (buf: Buffer) => void;
  scatter?: (src: Uint8Array, dst: Uint8Array, runs: Float64Array) => Promise<number>;
}

/** True when every kv block of the entry can be imported as a part: raw, unsealed. */
export const partsFit = (m: KvManifest): boolean => m.blocks.every((b) => b.kind === "meta" || (b.codec === "none" && !b.enc));

export class PartSink extends BlockArrivals {
  private joiner: PartJoiner | undefined;
  private readonly ready: PlacedPart[] = [];
  private readonly placing: Promise<void>[] = [];
  private importing: Promise<void> | undefined;
  private error: unknown;
  /** Seconds the part imports took, each from its start to its end (waiting for the engine between decode steps included), summed. */
  importSeconds = 0;

  constructor(
    m: KvManifest,
    private readonly o: PartSinkOptions,
  ) {
    super(m);
  }

  /**
   * Takes stored block `i` (the meta block first): true when the sink keeps reading `stored` after
   * it returns (a kv block being laid out; `release` once done). KvBlockError for a block out of
   * range, taken twice or failing its check, and the error of an import that failed.
   */
  accept(stored: Buffer, release?: () => void, i = this.count): boolean {
    if (this.error) throw this.error;
    const b = this.take(i);
    if (i === 0) {
      verifyBlock(b, stored);
      this.joiner = PartJoiner.for(stored, this.m.blockTokens);
      if (this.joiner.blocks !== this.total - 1) throw new KvBlockError(`meta block describes ${this.joiner.blocks} kv blocks, the manifest ${this.total - 1}`);
      return false;
    }
    if (stored.length !== this.joiner!.size(i - 1)) {
      verifyBlock(b, stored); // names the truncation
      throw new KvBlockError(`kv block ${i - 1} has ${stored.length} bytes, the meta block says ${this.joiner!.size(i - 1)}`);
    }
    const lay = this.joiner!.part(i - 1);
    if (lay.from >= this.o.tokens) {
      verifyBlock(b, stored); // past the prefix the load wants: checked, not imported
      return false;
    }
    const placed = this.layOut(stored, lay, b.crc32c, i - 1).finally(() => release?.());
    placed.catch(() => undefined); // thrown by finish()
    this.placing.push(placed);
    return true;
  }

  /** Part `lay` of kv block `index` written from `stored` (checked against `crc` as it is copied), then queued for import. */
  private async layOut(stored: Buffer, lay: PartLayout, crc: number, index: number): Promise<void> {
    const out = this.o.alloc ? await this.o.alloc(lay.bytes) : Buffer.allocUnsafe(lay.bytes);
    try {
      for (const f of lay.fixed) f.data.copy(out, f.at);
      const got = this.o.scatter ? await this.o.scatter(stored, out, lay.runs) : copyRuns(stored, out, lay.runs);
      if (got !== crc) throw new KvBlockError(`kv block ${index} failed its CRC-32C (got ${got}, manifest says ${crc}): corrupt`);
    } catch (err) {
      this.o.free?.(out);
      throw err;
    }
    const state = normaliseSeqState(out, this.o.layout);
    if (state !== out) this.o.free?.(out);
    this.ready.push({ state, from: lay.from, to: Math.min(lay.to, this.o.tokens) });
    this.pump();
  }

  /** One import at a time, of every part ready when it starts. */
  private pump(): void {
    if (this.importing || this.ready.length === 0 || this.error) return;
    const batch = this.ready.splice(0);
    const t0 = performance.now();
    this.importing = this.o.importer(batch).then(
      () => {
        this.importSeconds += (performance.now() - t0) / 1000;
        this.done(batch);
      },
      (err: unknown) => {
        this.error ??= err;
        this.done(batch);
      },
    );
  }

  private done(batch: readonly PlacedPart[]): void {
    for (const p of batch) this.o.free?.(p.state);
    this.importing = undefined;
    this.pump();
  }

  /** The stream's next item (a sink that decodes nothing while it waits). */
  nextWhileIdle<T>(items: AsyncIterator<T>): Promise<IteratorResult<T>> {
    return items.next();
  }

  /** Once every part is laid out and imported; throws what failed. */
  async finish(): Promise<void> {
    if (!this.joiner) throw new KvBlockError("the meta block never arrived");
    await this.settled();
  }

  /** After a load that failed: what is being laid out or imported is waited for, what waits is given back (never throws). */
  async close(): Promise<void> {
    this.error ??= new KvBlockError("the load ended");
    await this.settled().catch(() => undefined);
    for (const p of this.ready.splice(0)) this.o.free?.(p.state);
  }

  private async settled(): Promise<void> {
    const laid = await Promise.allSettled(this.placing);
    while (this.importing) await this.importing;
    const failed = laid.find((d) => d.status === "rejected");
    if (failed) throw failed.reason;
    if (this.error) throw this.error;
  }
}

/** The runs (srcOffset, dstOffset, length) copied here; src's CRC-32C (kvScatter without the addon). */
function copyRuns(src: Buffer, dst: Buffer, runs: Float64Array): number {
  for (let k = 0; k < runs.length; k += 3) src.copy(dst, runs[k + 1]!, runs[k]!, runs[k]! + runs[k + 2]!);
  return crc32c(src);
}
