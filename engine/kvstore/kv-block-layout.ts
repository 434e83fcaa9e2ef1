/**
 * The layout of a llama.cpp sequence state as v2 entry blocks see it (kv-blocks.ts): the state parsed
 * into fixed bytes and row segments (a layer's K rows, V rows or transposed V columns), and the plan
 * of which cells of each (section, stream) fall in which block, at which rank, and where each
 * segment sits inside a block. kv-blocks.ts splits, joins and names blocks with it.
 */
import { createHash } from "node:crypto";
import type { KvTensor } from "../kvcodec/state-tensors.ts";
import type { StridedTarget } from "../kvcodec/native-codec.ts";

const STATE_MAGIC = 0x67677371;

export class KvBlockError extends Error {}

/** One run of row data in a state: a layer's K rows, V rows, or transposed V columns. */
export interface RowSeg {
  part: number;
  kind: "k" | "v" | "vt";
  type: number;
  /** k/v: bytes per row (cell); vt: bytes per element. */
  unit: number;
  /** vt: elements per cell (columns); else 1. */
  nEmbd: number;
  /** Offset of the rows in the parsed buffer (0 in a meta block, which has none). */
  offset: number;
  /** The layer within its (section, stream), and how many that has. */
  layer: number;
  layers: number;
}

/** One non-empty (section, stream) of the state: its cells' positions in cell order. */
export interface Part {
  positions: Int32Array;
}

export interface Parsed {
  tokens: number;
  /** Fixed bytes (kept in the meta block) and row segments, in state order. */
  items: (Buffer | RowSeg)[];
  parts: Part[];
}

class Reader {
  offset = 0;
  constructor(readonly buf: Buffer) {}
  need(n: number): void {
    if (this.offset + n > this.buf.length) throw new KvBlockError("KV state truncated");
  }
  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32LE(this.offset);
    this.offset += 4;
    return v;
  }
  i32(): number {
    this.need(4);
    const v = this.buf.readInt32LE(this.offset);
    this.offset += 4;
    return v;
  }
  u64(): number {
    this.need(8);
    const v = Number(this.buf.readBigUInt64LE(this.offset));
    this.offset += 8;
    return v;
  }
}

type RowsFn = (seg: Omit<RowSeg, "offset">, bytes: number) => void;

/** One non-empty stream: cell metadata (positions kept), then every layer's K, then V. */
function readStream(r: Reader, cells: number, parts: Part[], rows: RowsFn): void {
  const part = parts.length;
  const positions = new Int32Array(cells);
  for (let c = 0; c < cells; c++) {
    positions[c] = r.i32();
    const seqs = r.u32();
    r.need(4 * seqs);
    r.offset += 4 * seqs;
  }
  parts.push({ positions });
  const vTrans = r.u32() === 1;
  const layers = r.u32();
  for (let l = 0; l < layers; l++) {
    const type = r.i32();
    const rowSize = r.u64();
    rows({ part, kind: "k", type, unit: rowSize, nEmbd: 1, layer: l, layers }, cells * rowSize);
  }
  for (let l = 0; l < layers; l++) {
    const type = r.i32();
    if (!vTrans) {
      const rowSize = r.u64();
      rows({ part, kind: "v", type, unit: rowSize, nEmbd: 1, layer: l, layers }, cells * rowSize);
      continue;
    }
    const el = r.u32();
    const nEmbd = r.u32();
    rows({ part, kind: "vt", type, unit: el, nEmbd, layer: l, layers }, nEmbd * cells * el);
  }
}

/** Parses a state (withRows) or a meta block (rows absent) with llama.cpp's grammar (seq-state.ts). */
export function parse(buf: Buffer, withRows: boolean): Parsed {
  const r = new Reader(buf);
  if (r.u32() !== STATE_MAGIC) throw new KvBlockError("not a llama.cpp sequence state (bad magic)");
  r.u32();
  const tokens = r.u32();
  r.need(4 * tokens);
  r.offset += 4 * tokens;
  const items: Parsed["items"] = [];
  const parts: Part[] = [];
  let fixedFrom = 0;
  const rows: RowsFn = (seg, bytes) => {
    items.push(buf.subarray(fixedFrom, r.offset));
    items.push({ ...seg, offset: r.offset });
    if (withRows) {
      r.need(bytes);
      r.offset += bytes;
    }
    fixedFrom = r.offset;
  };
  while (r.offset < buf.length) {
    const streams = r.u32();
    for (let s = 0; s < streams; s++) {
      const cells = r.u32();
      if (cells > 0) readStream(r, cells, parts, rows);
    }
  }
  if (r.offset !== buf.length) throw new KvBlockError("KV state layout not understood (trailing bytes)");
  items.push(buf.subarray(fixedFrom, r.offset));
  return { tokens, items, parts };
}

export const isSeg = (x: Buffer | RowSeg): x is RowSeg => !Buffer.isBuffer(x);

/** Where each cell's rows go: runs of consecutive cells in one block at consecutive ranks. */
interface Run {
  cell: number;
  cells: number;
  block: number;
  rank: number;
}

export interface Plan {
  parsed: Parsed;
  blocks: number;
  /** Per part, per block: how many of its cells fall in the block. */
  counts: Int32Array[];
  runs: Run[][];
  /** Per block: byte offset of each row segment inside the block, and the block's size. */
  offsets: number[][];
  sizes: number[];
  /** Per block: digest of its shape (part of its key). */
  shapes: string[];
  blockTokens: number;
  /** Per part: which positions of the entry it holds (1 at a held position). */
  seen: Uint8Array[];
  /** Per part, per block: the tokens up to the block's end when the part holds every one of them (a full-attention stream), else 0. */
  prefix: Int32Array[];
}

/** One part's cells by block: counts per block, copy runs, and which positions it holds. */
/** One part's cells by block: counts per block, copy runs, which positions it holds, and per block the prefix it holds whole (0: not). */
function partPlan(part: Part, blocks: number, blockTokens: number, tokens: number): { count: Int32Array; runs: Run[]; seen: Uint8Array; prefix: Int32Array } {
  const span = blocks * blockTokens;
  const seen = new Uint8Array(span);
  for (const pos of part.positions) {
    if (pos < 0 || pos >= span) throw new KvBlockError(`cell at position ${pos} outside the entry's ${span} tokens`);
    if (seen[pos]) throw new KvBlockError(`two cells at position ${pos} in one stream`);
    seen[pos] = 1;
  }
  // rank of a position = cells of its block at lower positions
  const before = new Int32Array(span + 1);
  for (let p = 0; p < span; p++) before[p + 1] = before[p]! + seen[p]!;
  const count = new Int32Array(blocks);
  for (let b = 0; b < blocks; b++) count[b] = before[(b + 1) * blockTokens]! - before[b * blockTokens]!;
  const runs: Run[] = [];
  part.positions.forEach((pos, cell) => {
    const block = Math.floor(pos / blockTokens);
    const rank = before[pos]! - before[block * blockTokens]!;
    const last = runs.at(-1);
    if (last && last.block === block && last.cell + last.cells === cell && last.rank + last.cells === rank) last.cells++;
    else runs.push({ cell, cells: 1, block, rank });
  });
  const prefix = new Int32Array(blocks);
  for (let b = 0; b < blocks; b++) {
    const end = Math.min((b + 1) * blockTokens, tokens);
    prefix[b] = before[end] === end ? end : 0;
  }
  return { count, runs, seen, prefix };
}

export function plan(parsed: Parsed, blockTokens: number, partialTail = false): Plan {
  const blocks = partialTail ? Math.ceil(parsed.tokens / blockTokens) : parsed.tokens / blockTokens;
  if (!Number.isInteger(blocks) || blocks <= 0) throw new KvBlockError(`a state of ${parsed.tokens} tokens is not a whole number of ${blockTokens}-token blocks`);
  const perPart = parsed.parts.map((part) => partPlan(part, blocks, blockTokens, parsed.tokens));
  const counts = perPart.map((x) => x.count);
  const segs = parsed.items.filter(isSeg);
  const offsets: number[][] = [];
  const sizes: number[] = [];
  const shapes: string[] = [];
  for (let b = 0; b < blocks; b++) {
    let at = 0;
    const off: number[] = [];
    const shape = createHash("sha256");
    for (const seg of segs) {
      off.push(at);
      at += counts[seg.part]![b]! * seg.unit * seg.nEmbd;
      shape.update(`${seg.part}:${seg.kind}:${seg.type}:${seg.unit}:${seg.nEmbd};`);
    }
    for (const { seen } of perPart) shape.update(seen.subarray(b * blockTokens, (b + 1) * blockTokens));
    offsets.push(off);
    sizes.push(at);
    shapes.push(shape.digest("hex"));
  }
  const prefix = perPart.map((x) => x.prefix);
  return { parsed, blocks, counts, runs: perPart.map((x) => x.runs), offsets, sizes, shapes, blockTokens, seen: perPart.map((x) => x.seen), prefix };
}

/**
 * One row segment of a kv block, laid out as the block holds it: an F16 segment as a tensor (its
 * cells' absolute positions, in block order) that a block codec may code; any other type as bytes.
 * `into` (decoding, transposed V only): where the tensor's columns go in the rebuilt state, each
 * channel's `stride` elements after the previous one's; a codec given it decodes there and leaves
 * tensor.data alone. `prefixCells`: the block's stream holds every position from 0 to the block's
 * end, this many (a full-attention layer's cache; a sliding window that has moved does not): a
 * lower bound on the cells the tensor has in any entry, known from the prefix alone
 * (codedShape puts it in the block's key).
 */
export type BlockSlot = { tensor: KvTensor; into?: StridedTarget; prefixCells?: number } | { bytes: Buffer };

/** A coded block's shape: the raw shape and, per part, the prefix it holds whole (a block codec's steps may depend on it). */
export function codedShape(p: Plan, b: number): string {
  return createHash("sha256")
    .update(`${p.shapes[b]!}|${p.prefix.map((x) => x[b]!).join(",")}`)
    .digest("hex");
}

/** The positions of block b that a part holds, in the block's (position) order. */
function heldPositions(p: Plan, part: number, b: number): Int32Array {
  const out = new Int32Array(p.counts[part]![b]!);
  const seen = p.seen[part]!;
  for (let pos = b * p.blockTokens, n = 0; n < out.length; pos++) if (seen[pos]) out[n++] = pos;
  return out;
}

const F16_TYPE = 1;

/** Whether a segment's rows are F16 values a block codec sees as a tensor (else bytes it keeps as they are). */
export const isF16Seg = (seg: RowSeg): boolean => seg.type === F16_TYPE && (seg.kind === "vt" ? seg.unit === 2 : seg.unit % 2 === 0);

/**
 * Where a tensor slot's rows go instead of the block's raw layout (StateJoiner: straight into the
 * state): `data`, its dense view; `into`, a strided one (then `data` is only scratch for a decoder
 * that cannot write strided, and may be shared by other slots: kv-blocks.ts's StateJoiner).
 */
export interface SlotPlace {
  data: Buffer;
  into?: StridedTarget;
}

/** The tensor slot of segment `seg`'s rows of block b: `at.n` rows, their F16 values in `at.data` (or `at.into`). */
function tensorSlot(p: Plan, b: number, seg: RowSeg, at: SlotPlace & { n: number; positions: Int32Array }): BlockSlot {
  // Literals, not spreads: a load makes one per segment and block, and V8's object spread costs
  // microseconds each here (a sixth of a 4K-token load's JavaScript time when it was spread).
  const kind = seg.kind === "k" ? ("k" as const) : ("v" as const);
  const { layer, layers } = seg;
  const tensor =
    seg.kind === "vt"
      ? { rows: seg.nEmbd, cols: at.n, tokenAxis: 1 as const, kind, layer, layers, positions: at.positions, data: at.data }
      : { rows: at.n, cols: seg.unit / 2, tokenAxis: 0 as const, kind, layer, layers, positions: at.positions, data: at.data };
  const prefixCells = p.prefix[seg.part]![b]!;
  const slot: { tensor: KvTensor; into?: StridedTarget; prefixCells?: number } = { tensor };
  if (at.into) slot.into = at.into;
  if (prefixCells > 0) slot.prefixCells = prefixCells;
  return slot;
}

/**
 * Block b's non-empty row segments in block order, as views of `data` (the block's raw layout), or
 * where `placed` puts segment si's rows; `data` may be undefined when it places every segment.
 */
export function blockSlots(p: Plan, b: number, data: Buffer | undefined, placed?: (si: number) => SlotPlace | undefined): BlockSlot[] {
  const positions = new Map<number, Int32Array>();
  const held = (part: number): Int32Array => positions.get(part) ?? positions.set(part, heldPositions(p, part, b)).get(part)!;
  const raw = (seg: RowSeg, si: number, n: number): Buffer => {
    if (!data) throw new Error(`kv block ${b}: segment ${si} has neither a place nor block bytes`);
    const at = p.offsets[b]![si]!;
    return data.subarray(at, at + n * seg.unit * seg.nEmbd);
  };
  const slots: BlockSlot[] = [];
  p.parsed.items.filter(isSeg).forEach((seg, si) => {
    const n = p.counts[seg.part]![b]!;
    if (n === 0) return;
    if (!isF16Seg(seg)) return void slots.push({ bytes: raw(seg, si, n) });
    const place = placed?.(si) ?? { data: raw(seg, si, n) };
    slots.push(tensorSlot(p, b, seg, { data: place.data, into: place.into, n, positions: held(seg.part) }));
  });
  return slots;
}

/**
 * A codec of kv blocks (engine/kvcodec/block-codec.ts): each block coded on its own, from its own
 * rows and their absolute positions only, so a block's coded bytes still depend only on its prefix.
 */
export interface KvBlockCodec {
  /** The concrete name written into the manifest and the block key. */
  readonly name: string;
  /** Every block's coded bytes, in order; per block, its slots (views of its raw rows). */
  encode(blocks: readonly BlockSlot[][]): Buffer[];
  /**
   * Decodes coded blocks into their slots, all at once (one pass of the native decoder over every
   * block's tensors, so its threads share more work than one block's few); a BlockDecodeError names
   * the block (its place in `blocks`) that does not decode.
   */
  decode(blocks: readonly { coded: Buffer; slots: readonly BlockSlot[] }[]): void;
  /** decode with the native pass on a worker thread, the event loop free meanwhile (a load's blocks); absent: decode. */
  decodeAsync?(blocks: readonly { coded: Buffer; slots: readonly BlockSlot[] }[]): Promise<void>;
}

/** A block of a KvBlockCodec.decode call that does not decode: `index`, its place in the call. */
export class BlockDecodeError extends Error {
  constructor(
    readonly index: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Each contiguous run of rows of block `block`: `fn(stateOffset, blockOffset, length)`, in block
 * order; `skip`: segments left out.
 */
export function forEachRowRun(
  at: { p: Plan; stateOffsets: number[]; skip?: ReadonlySet<number> },
  block: number,
  fn: (stateOffset: number, blockOffset: number, length: number) => void,
): void {
  const { p, stateOffsets } = at;
  const segs = p.parsed.items.filter(isSeg);
  segs.forEach((seg, si) => {
    const cells = p.parsed.parts[seg.part]!.positions.length;
    const n = p.counts[seg.part]![block]!;
    if (n === 0 || at.skip?.has(si)) return;
    const base = p.offsets[block]![si]!;
    const stateBase = stateOffsets[si]!;
    for (const run of p.runs[seg.part]!) {
      if (run.block !== block) continue;
      const len = run.cells * seg.unit;
      if (seg.kind !== "vt") fn(stateBase + run.cell * seg.unit, base + run.rank * seg.unit, len);
      else for (let e = 0; e < seg.nEmbd; e++) fn(stateBase + (e * cells + run.cell) * seg.unit, base + (e * n + run.rank) * seg.unit, len);
    }
  });
}

/** Copies rows between the state layout and one block's layout (toBlock: state -> block); `skip`: segments left alone. */
export function moveRows(at: { p: Plan; state: Buffer; stateOffsets: number[]; skip?: ReadonlySet<number> }, block: number, data: Buffer, toBlock: boolean): void {
  const { state } = at;
  forEachRowRun(at, block, (s, d, len) => {
    if (toBlock) state.copy(data, d, s, s + len);
    else data.copy(state, s, d, d + len);
  });
}
