/**
 * A v2 entry's kv block as a sequence state of its own cells (a "part"): the load imports each block
 * as it arrives, into a scratch sequence whose cells the loading sequence then shares (the unified
 * KV cache: no copy; NativeRuntime.importPartsAt), instead of assembling the whole state in host
 * memory and importing it after the last block. On an H100 host the import of an assembled 1 GB
 * state took ~26 ms after the stream ended, and the assembly a page-locked block of the state's size.
 *
 * A part of block b is llama.cpp's file-format state (seq-state.ts has the grammar) of the cells the
 * block holds: the meta block's fixed bytes with each stream's cell count and cell metadata cut to
 * those cells (in the block's order: by position), and each row segment's rows taken from the block
 * as they lie there (a block keeps its segments whole and in state order: kv-block-layout.ts).
 */
import { isSeg, KvBlockError, parse, plan, type Plan } from "./kv-block-layout.ts";

const STATE_MAGIC = 0x67677371;

/** Where part b's bytes come from: `fixed` pieces written at their offsets, `runs` (blockOffset, partOffset, length) copied from the block. */
export interface PartLayout {
  bytes: number;
  fixed: { at: number; data: Buffer }[];
  runs: Float64Array;
  /** The positions the part covers, [from, to): its cells are the sequence's there. */
  from: number;
  to: number;
}

class Writer {
  readonly fixed: { at: number; data: Buffer }[] = [];
  readonly runs: number[] = [];
  at = 0;
  private pending: number[] = [];

  u32(v: number): void {
    this.pending.push(v >>> 0);
  }
  i32(v: number): void {
    this.pending.push(v | 0);
  }
  raw(data: Buffer): void {
    this.flush();
    this.fixed.push({ at: this.at, data });
    this.at += data.length;
  }
  rows(blockOffset: number, length: number): void {
    this.flush();
    if (length > 0) this.runs.push(blockOffset, this.at, length);
    this.at += length;
  }
  flush(): void {
    if (this.pending.length === 0) return;
    const b = Buffer.alloc(4 * this.pending.length);
    this.pending.forEach((v, i) => (v < 0 ? b.writeInt32LE(v, 4 * i) : b.writeUInt32LE(v, 4 * i)));
    this.pending = [];
    this.fixed.push({ at: this.at, data: b });
    this.at += b.length;
  }
}

/**
 * The parts of an entry whose meta block is `meta`: part(b) lays out kv block b as a state, in the
 * writer's KV layout (the loading pod normalises it to its own: seq-state.ts). KvBlockError when the
 * meta block does not parse.
 */
export class PartJoiner {
  /** Bytes of one cell's rows in each segment (K/V: a row; transposed V: a column of n_embd elements). */
  private readonly units: number[];

  private constructor(
    private readonly meta: Buffer,
    private readonly p: Plan,
  ) {
    this.units = p.parsed.items.filter(isSeg).map((s) => s.unit * s.nEmbd);
  }

  static for(meta: Buffer, blockTokens: number): PartJoiner {
    // A copy: the meta block may be a pool block, given back (and detached) once taken.
    const own = Buffer.from(meta);
    return new PartJoiner(own, plan(parse(own, false), blockTokens));
  }

  get blocks(): number {
    return this.p.blocks;
  }

  /** Bytes kv block b must have. */
  size(b: number): number {
    return this.p.sizes[b]!;
  }

  part(b: number): PartLayout {
    const { p, meta } = this;
    if (!(b >= 0 && b < p.blocks)) throw new KvBlockError(`kv block ${b}: the entry has ${p.blocks}`);
    const from = b * p.blockTokens;
    const to = Math.min(from + p.blockTokens, p.parsed.tokens);
    const w = new Writer();
    const tokens = meta.readUInt32LE(8);
    w.u32(STATE_MAGIC);
    w.u32(meta.readUInt32LE(4));
    w.u32(to - from);
    w.raw(meta.subarray(12 + 4 * from, 12 + 4 * to));
    let r = 12 + 4 * tokens;
    let part = 0;
    let seg = 0;
    while (r < meta.length) {
      const streams = meta.readUInt32LE(r);
      r += 4;
      w.u32(streams);
      for (let s = 0; s < streams; s++) {
        const cells = meta.readUInt32LE(r);
        r += 4;
        if (cells === 0) {
          w.u32(0);
          continue;
        }
        const held = p.counts[part]![b]!;
        w.u32(held);
        r = skipCells(meta, r, cells);
        if (held > 0) this.cellMeta(w, part, b, held);
        ({ r, seg } = this.streamData(w, { r, b, held, seg }));
        part++;
      }
    }
    w.flush();
    return { bytes: w.at, fixed: w.fixed, runs: Float64Array.from(w.runs), from, to };
  }

  /** Each held cell of block b in position order: pos, one sequence id (the importing one's, as llama.cpp reads it). */
  private cellMeta(w: Writer, part: number, b: number, held: number): void {
    const seen = this.p.seen[part]!;
    let n = 0;
    for (let pos = b * this.p.blockTokens; n < held; pos++) {
      if (!seen[pos]) continue;
      w.i32(pos);
      w.u32(1);
      w.i32(0);
      n++;
    }
  }

  /**
   * A stream's v_trans, layer count and per-layer headers from the meta block, and each segment's
   * rows from block b (none when the block holds none of the stream's cells); the meta offset and
   * segment index after it.
   */
  private streamData(w: Writer, at: { r: number; b: number; held: number; seg: number }): { r: number; seg: number } {
    const { meta, p } = this;
    let { r, seg } = at;
    const layers = meta.readUInt32LE(r + 4);
    if (at.held > 0) w.raw(meta.subarray(r, r + 8));
    r += 8;
    // Every layer's K header (type i32, row size u64), then its V header (the same, or transposed:
    // type i32, element size u32, n_embd u32): 12 bytes each, its rows after it.
    for (let l = 0; l < 2 * layers; l++, seg++, r += LAYER_HEAD) {
      if (at.held === 0) continue;
      w.raw(meta.subarray(r, r + LAYER_HEAD));
      w.rows(p.offsets[at.b]![seg]!, at.held * this.units[seg]!);
    }
    return { r, seg };
  }
}

/** A layer's K or V header in a state: 12 bytes either way. */
const LAYER_HEAD = 12;

/** Past a stream's cell metadata: per cell pos i32, n_seq_id u32, seq ids. */
function skipCells(meta: Buffer, r: number, cells: number): number {
  for (let c = 0; c < cells; c++) {
    const seqs = meta.readUInt32LE(r + 4);
    r += 8 + 4 * seqs;
  }
  return r;
}
