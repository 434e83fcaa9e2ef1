/**
 * The load side's sink of a v2 entry's blocks (block-client.ts): each block checked against the
 * manifest, opened, and decoded or placed into the state as it arrives.
 */
import { KvBlockError, StateJoiner, verifyBlock, type BlockEntry, type KvManifest } from "./kv-blocks.ts";
import { setImmediate as tick } from "node:timers/promises";
import { kvBlockCodec } from "../kvcodec/block-codec.ts";
import { BlockArrivals } from "./block-arrivals.ts";

/**
 * Coded blocks decoded per native pass. A block before a sliding window holds few tensors (Gemma 3:
 * 6), too few for the decoder's threads to share: one pass per block decoded a 4K Gemma state at
 * 0.55 GB/s on 2 cores, eight blocks per pass at 0.67-0.69 (the whole-entry decoder's speed), four
 * at 0.50-0.68. A load still decodes while later blocks arrive, and decodes what it holds whenever
 * the stream idles (flush), so the pass after the stream ends holds only the last blocks to arrive.
 * Passes run on a worker thread, one at a time (kvDecodeAsync): the event loop takes the blocks
 * that arrive meanwhile, and they make the next pass.
 */
export const CODED_BATCH = 8;

/** Resolves true once the event loop has polled for I/O (what was already there comes first). */
const idle = (): Promise<boolean> => tick().then(() => true);

/** Raw blocks at least this large are placed by the addon on a worker thread (smaller: inline, where the call would cost more). */
const SCATTER_MIN_BYTES = 256 * 1024;

/**
 * Takes an entry's stored blocks, the meta block first and the kv blocks in any order (a store
 * pushes each as its read ends: reads sharing a slow link end together, so in-order blocks came in
 * one burst at the end, with nothing to decode before it): checks each against the manifest, opens
 * it, decodes it (its codec's, native when the addon is loaded; coded blocks CODED_BATCH at a time)
 * straight into the state and places its rows, while later blocks are still arriving.
 */
export class BlockSink extends BlockArrivals {
  private joiner: StateJoiner | undefined;
  /** Coded blocks checked and opened, not yet decoded: decoded CODED_BATCH at a time (one native pass); `release` once decoded. */
  private coded: { i: number; coded: Buffer; codec: string; release?: () => void }[] = [];
  /** The decode pass running (one at a time), and the first error of any. */
  private decoding: Promise<void> | undefined;
  private decodeError: unknown;

  /** Raw blocks being placed by the addon (kvScatter), each checked against its CRC-32C when done. */
  private readonly scattering: Promise<void>[] = [];

  constructor(
    m: KvManifest,
    private readonly open: (b: BlockEntry, stored: Buffer) => Buffer,
    /** Where the state is assembled (StateJoiner's alloc: the addon's pool when there is one). */
    private readonly alloc?: (bytes: number) => Buffer,
    /** The addon's kvScatter: unsealed raw blocks are checked and placed on a worker thread, off the event loop. */
    private readonly scatter?: (src: Uint8Array, dst: Uint8Array, runs: Float64Array) => Promise<number>,
  ) {
    super(m);
  }

  /**
   * Takes stored block `i` (default: the next in order); true when the sink keeps reading `stored`
   * after it returns (a coded block until it is decoded, a raw block being placed: each gets
   * `release` once done with). The meta block must come first; KvBlockError for a block out of
   * range or taken twice, and the error of a decode pass that failed.
   */
  accept(stored: Buffer, release?: () => void, i = this.count): boolean {
    if (this.decodeError) throw this.decodeError;
    const b = this.take(i);
    if (this.scatters(i, b, stored)) {
      this.scatterRaw(i, b, stored, release);
      return true;
    }
    verifyBlock(b, stored);
    const raw = this.open(b, stored);
    if (i === 0) {
      this.joiner = new StateJoiner(raw, this.m.blockTokens, false, this.alloc);
      if (this.joiner.blocks !== this.total - 1) throw new KvBlockError(`meta block describes ${this.joiner.blocks} kv blocks, the manifest ${this.total - 1}`);
    } else if (b.codec === "none") this.joiner!.place(i - 1, raw);
    else return this.hold({ i: i - 1, coded: raw, codec: b.codec }, raw.buffer === stored.buffer ? release : undefined);
    return false;
  }

  /** A coded block held for a decode pass; true when it is the stored bytes themselves (unsealed: kept until decoded, then released). */
  private hold(block: { i: number; coded: Buffer; codec: string }, release: (() => void) | undefined): boolean {
    this.coded.push(release ? { ...block, release } : block);
    if (this.passDue()) this.decodeCoded();
    return release !== undefined;
  }

  /** A pass is due once CODED_BATCH blocks wait, or every block has arrived (before that, the stream's idle turns start one: nextWhileIdle). */
  private passDue(): boolean {
    return this.coded.length >= CODED_BATCH || this.count === this.total;
  }

  private scatters(i: number, b: BlockEntry, stored: Buffer): boolean {
    return i > 0 && this.scatter !== undefined && b.codec === "none" && !b.enc && stored.length >= SCATTER_MIN_BYTES;
  }

  /** An unsealed raw block placed by the addon: its size checked now, its CRC-32C as it is copied. */
  private scatterRaw(i: number, b: BlockEntry, stored: Buffer, release?: () => void): void {
    if (stored.length !== b.bytes) verifyBlock(b, stored); // names the truncation
    const { out, runs } = this.joiner!.placeRuns(i - 1, stored.length);
    const placed = this.scatter!(stored, out, runs).then((crc) => {
      if (crc !== b.crc32c) throw new KvBlockError(`kv block ${b.index} ${b.key.slice(0, 12)} failed its CRC-32C (got ${crc}, manifest says ${b.crc32c}): corrupt`);
    });
    const done = placed.finally(() => release?.());
    // Handled now, thrown by settled(): a block that fails its check before the load awaits the
    // sink would otherwise be an unhandled rejection (it was, once, in a CI run: the process-wide
    // handler fired between the failed copy and the load's settled()).
    done.catch(() => undefined);
    this.scattering.push(done);
  }

  /** Waits for the blocks the addon is placing and the decode passes running; the first that failed throws (after all have ended: none writes into the state after). */
  async settled(): Promise<void> {
    while (this.decoding) await this.decoding;
    const done = await Promise.allSettled(this.scattering);
    if (this.decodeError) throw this.decodeError;
    const failed = done.find((d) => d.status === "rejected");
    if (failed) throw failed.reason;
  }

  /**
   * The stream's next item; while it is still on its way, the coded blocks waiting for their batch
   * are decoded now, so the pass after the stream's end holds only the blocks that came last.
   */
  async nextWhileIdle<T>(items: AsyncIterator<T>): Promise<IteratorResult<T>> {
    const next = items.next();
    next.catch(() => undefined); // a decode that throws below leaves it unawaited: never an unhandled rejection
    if (this.coded.length > 0 && (await Promise.race([next.then(() => false), idle()]))) this.decodeCoded();
    return next;
  }

  /** Starts a decode pass over the coded blocks held (those of the first one's codec), unless one is running: its end starts the next. */
  private decodeCoded(): void {
    if (this.decoding || this.coded.length === 0 || this.decodeError) return;
    const codec = this.coded[0]!.codec;
    const other = this.coded.findIndex((c) => c.codec !== codec);
    const batch = this.coded.splice(0, other < 0 ? this.coded.length : other);
    this.decoding = this.joiner!.placeCodedManyAsync(batch, kvBlockCodec(codec)!).then(
      () => this.decoded(batch),
      (err: unknown) => {
        this.decodeError ??= err;
        this.decoded(batch);
      },
    );
  }

  private decoded(batch: readonly { release?: () => void }[]): void {
    for (const b of batch) b.release?.();
    this.decoding = undefined;
    if (this.passDue()) this.decodeCoded();
  }

  /** After a load that failed: the blocks not decoded are released, and the decode pass and the copies running are waited for (never throws). */
  async close(): Promise<void> {
    for (const c of this.coded.splice(0)) c.release?.();
    await this.settled().catch(() => undefined);
  }

  /** The state, once every block held is decoded and placed; throws what failed. */
  async finish(): Promise<Buffer> {
    if (!this.joiner) throw new KvBlockError("the meta block never arrived");
    while (this.decoding || (this.coded.length > 0 && !this.decodeError)) {
      this.decodeCoded();
      await this.decoding;
    }
    await this.settled();
    return this.joiner.finish();
  }
}
