/** Which of an entry's blocks a load has taken (the sinks' shared bookkeeping: BlockSink, PartSink). */
import { KvBlockError, type BlockEntry, type KvManifest } from "./kv-blocks.ts";

/** The meta block first, then the kv blocks in any order, each once. */
export class BlockArrivals {
  /** Blocks taken so far. */
  count = 0;
  private readonly taken: boolean[];

  constructor(protected readonly m: KvManifest) {
    this.taken = new Array<boolean>(m.blocks.length).fill(false);
  }

  get total(): number {
    return this.m.blocks.length;
  }

  /** The blocks not taken yet, in order. */
  missing(): number[] {
    return this.taken.flatMap((t, i) => (t ? [] : [i]));
  }

  /** After the stream's end: KvBlockError naming `what` when a block never came. */
  complete(what: string): void {
    if (this.count !== this.total) throw new KvBlockError(`${what} ended after ${this.count} of ${this.total} blocks`);
  }

  /** Block i's manifest entry, counted taken; KvBlockError when it cannot come now. */
  protected take(i: number): BlockEntry {
    const b = this.m.blocks[i];
    if (!b || !Number.isInteger(i)) throw new KvBlockError(`block ${i}: the manifest has ${this.total} blocks`);
    if (this.taken[i]) throw new KvBlockError(`block ${i} arrived twice`);
    if ((i === 0) !== (this.count === 0))
      throw new KvBlockError(i === 0 ? "the meta block arrived after kv blocks" : `kv block ${i - 1} arrived before the meta block`);
    this.taken[i] = true;
    this.count++;
    return b;
  }
}
