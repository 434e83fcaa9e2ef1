/**
 * KV entry format v2 ("LFKB"): an entry is a manifest plus blocks, each stored, checksummed,
 * coded and (optionally) sealed on its own (spec: docs/kv-store.md, "Entry format v2").
 *
 *   meta block   the llama.cpp sequence state with every K/V row taken out (header, tokens, cell
 *                metadata, per-layer type and row-size prologues): small.
 *   kv block i   for every (section, stream) of the state and every layer, the K rows and the V rows
 *                (V columns' elements when V is transposed) of the positions [i*B, (i+1)*B), in
 *                position order. Its bytes depend only on tokens 0 .. (i+1)*B and on the KV layout,
 *                so every entry with that prefix names the same block and a store keeps it once.
 *
 * joinBlocks() rebuilds the exact bytes llama_state_seq_get_data wrote (tests check byte identity),
 * block by block as they arrive (streaming: block i is placed while block i+1 is on the wire).
 *
 * Manifest frame:  "LFKB" | u32 2 | u32 json length | json | u32 CRC-32C of everything before
 * Stored block:    the block after its codec and encryption; its CRC-32C and size are in the manifest.
 *
 * Block keys (hex SHA-256) extend the chain keys of block-keys.ts, which already bind the model and
 * the tenant salt:  sha256("llmfleet-kv-block/v2" | k(i) | kind | codec | shape), where shape is a
 * digest of what the block holds (layer types and row sizes, V layout, which positions of the block
 * each stream holds: a sliding-window cache holds only its window). The spec's key without the
 * shape would let two entries with different layouts name one block.
 */
import { createHash } from "node:crypto";
import { crc32c } from "./crc32c.ts";

export const KV_BLOCKS_MAGIC = Buffer.from("LFKB");
export const KV_BLOCKS_VERSION = 2;
const STATE_MAGIC = 0x67677371;

export class KvBlockError extends Error {}

/** One run of row data in a state: a layer's K rows, V rows, or transposed V columns. */
interface RowSeg {
  part: number;
  kind: "k" | "v" | "vt";
  type: number;
  /** k/v: bytes per row (cell); vt: bytes per element. */
  unit: number;
  /** vt: elements per cell (columns); else 1. */
  nEmbd: number;
  /** Offset of the rows in the parsed buffer (0 in a meta block, which has none). */
  offset: number;
}

/** One non-empty (section, stream) of the state: its cells' positions in cell order. */
interface Part {
  positions: Int32Array;
}

interface Parsed {
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
    rows({ part, kind: "k", type, unit: rowSize, nEmbd: 1 }, cells * rowSize);
  }
  for (let l = 0; l < layers; l++) {
    const type = r.i32();
    if (!vTrans) {
      const rowSize = r.u64();
      rows({ part, kind: "v", type, unit: rowSize, nEmbd: 1 }, cells * rowSize);
      continue;
    }
    const el = r.u32();
    const nEmbd = r.u32();
    rows({ part, kind: "vt", type, unit: el, nEmbd }, nEmbd * cells * el);
  }
}

/** Parses a state (withRows) or a meta block (rows absent) with llama.cpp's grammar (seq-state.ts). */
function parse(buf: Buffer, withRows: boolean): Parsed {
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

const isSeg = (x: Buffer | RowSeg): x is RowSeg => !Buffer.isBuffer(x);

/** Where each cell's rows go: runs of consecutive cells in one block at consecutive ranks. */
interface Run {
  cell: number;
  cells: number;
  block: number;
  rank: number;
}

interface Plan {
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
}

/** One part's cells by block: counts per block, copy runs, and which positions it holds. */
function partPlan(part: Part, blocks: number, blockTokens: number): { count: Int32Array; runs: Run[]; seen: Uint8Array } {
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
  return { count, runs, seen };
}

function plan(parsed: Parsed, blockTokens: number): Plan {
  const blocks = parsed.tokens / blockTokens;
  if (!Number.isInteger(blocks) || blocks <= 0) throw new KvBlockError(`a state of ${parsed.tokens} tokens is not a whole number of ${blockTokens}-token blocks`);
  const perPart = parsed.parts.map((part) => partPlan(part, blocks, blockTokens));
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
  return { parsed, blocks, counts, runs: perPart.map((x) => x.runs), offsets, sizes, shapes };
}

/** Copies rows between the state layout and one block's layout (toBlock: state -> block). */
function moveRows(at: { p: Plan; state: Buffer; stateOffsets: number[] }, block: number, data: Buffer, toBlock: boolean): void {
  const { p, state, stateOffsets } = at;
  const segs = p.parsed.items.filter(isSeg);
  segs.forEach((seg, si) => {
    const cells = p.parsed.parts[seg.part]!.positions.length;
    const n = p.counts[seg.part]![block]!;
    if (n === 0) return;
    const base = p.offsets[block]![si]!;
    const stateBase = stateOffsets[si]!;
    for (const run of p.runs[seg.part]!) {
      if (run.block !== block) continue;
      if (seg.kind !== "vt") {
        const s = stateBase + run.cell * seg.unit;
        const d = base + run.rank * seg.unit;
        const len = run.cells * seg.unit;
        if (toBlock) state.copy(data, d, s, s + len);
        else data.copy(state, s, d, d + len);
        continue;
      }
      for (let e = 0; e < seg.nEmbd; e++) {
        const s = stateBase + (e * cells + run.cell) * seg.unit;
        const d = base + (e * n + run.rank) * seg.unit;
        const len = run.cells * seg.unit;
        if (toBlock) state.copy(data, d, s, s + len);
        else data.copy(state, s, d, d + len);
      }
    }
  });
}

export interface SplitState {
  meta: Buffer;
  /** kv blocks in order (subarrays of `buffer`, after the meta block). */
  blocks: Buffer[];
  /** Per kv block: digest of its shape (blockKey's `shape`). */
  shapes: string[];
  tokens: number;
  /** The meta block then every kv block, in one buffer (what a worker thread hands back). */
  buffer: Buffer;
}

/** The layout of a SplitState's buffer: enough to rebuild the views on another thread. */
export interface SplitLayout {
  metaBytes: number;
  sizes: number[];
  shapes: string[];
  tokens: number;
}

export function splitLayout(s: SplitState): SplitLayout {
  return { metaBytes: s.meta.length, sizes: s.blocks.map((b) => b.length), shapes: s.shapes, tokens: s.tokens };
}

export function splitFromLayout(buffer: Buffer, l: SplitLayout): SplitState {
  let at = l.metaBytes;
  const blocks = l.sizes.map((n) => {
    const b = buffer.subarray(at, at + n);
    at += n;
    return b;
  });
  return { meta: buffer.subarray(0, l.metaBytes), blocks, shapes: l.shapes, tokens: l.tokens, buffer };
}

/** Splits a state of a whole number of blocks into its meta block and kv blocks; KvBlockError when it cannot. */
export function splitState(state: Buffer, blockTokens: number): SplitState {
  const parsed = parse(state, true);
  const p = plan(parsed, blockTokens);
  const fixed = parsed.items.filter((x): x is Buffer => !isSeg(x));
  const metaBytes = fixed.reduce((n, b) => n + b.length, 0);
  const buffer = Buffer.allocUnsafe(metaBytes + p.sizes.reduce((a, b) => a + b, 0));
  let at = 0;
  for (const f of fixed) at += f.copy(buffer, at);
  const stateOffsets = parsed.items.filter(isSeg).map((s) => s.offset);
  const blocks: Buffer[] = [];
  for (let b = 0; b < p.blocks; b++) {
    const data = buffer.subarray(at, at + p.sizes[b]!);
    moveRows({ p, state, stateOffsets }, b, data, true);
    blocks.push(data);
    at += p.sizes[b]!;
  }
  return { meta: buffer.subarray(0, metaBytes), blocks, shapes: p.shapes, tokens: parsed.tokens, buffer };
}

/**
 * Rebuilds a state from its meta block, block by block: `place(i, data)` as each kv block
 * arrives (any order), `finish()` once all have (KvBlockError if one is missing or the wrong size).
 */
export class StateJoiner {
  private readonly p: Plan;
  private readonly out: Buffer;
  private readonly stateOffsets: number[] = [];
  private readonly placed: boolean[];

  constructor(meta: Buffer, blockTokens: number) {
    const parsed = parse(meta, false);
    this.p = plan(parsed, blockTokens);
    let size = 0;
    for (const item of parsed.items) {
      if (!isSeg(item)) size += item.length;
      else size += parsed.parts[item.part]!.positions.length * item.unit * item.nEmbd;
    }
    this.out = Buffer.allocUnsafe(size);
    let at = 0;
    for (const item of parsed.items) {
      if (!isSeg(item)) {
        item.copy(this.out, at);
        at += item.length;
      } else {
        this.stateOffsets.push(at);
        at += parsed.parts[item.part]!.positions.length * item.unit * item.nEmbd;
      }
    }
    this.placed = new Array<boolean>(this.p.blocks).fill(false);
  }

  get blocks(): number {
    return this.p.blocks;
  }

  /** Bytes kv block i must have. */
  size(i: number): number {
    return this.p.sizes[i]!;
  }

  shape(i: number): string {
    return this.p.shapes[i]!;
  }

  place(i: number, data: Buffer): void {
    if (i < 0 || i >= this.p.blocks) throw new KvBlockError(`kv block ${i} out of range (entry has ${this.p.blocks})`);
    if (data.length !== this.p.sizes[i]) throw new KvBlockError(`kv block ${i} has ${data.length} bytes, the meta block says ${this.p.sizes[i]}`);
    moveRows({ p: this.p, state: this.out, stateOffsets: this.stateOffsets }, i, data, false);
    this.placed[i] = true;
  }

  finish(): Buffer {
    const missing = this.placed.indexOf(false);
    if (missing >= 0) throw new KvBlockError(`kv block ${missing} never arrived`);
    return this.out;
  }
}

/** The state from a meta block and all its kv blocks in order. */
export function joinState(meta: Buffer, blocks: readonly Buffer[], blockTokens: number): Buffer {
  const j = new StateJoiner(meta, blockTokens);
  blocks.forEach((b, i) => j.place(i, b));
  return j.finish();
}

// ---- keys ----

export function blockKey(chainKey: string, kind: "kv" | "meta", codec: string, shape: string): string {
  return createHash("sha256").update(`llmfleet-kv-block/v2\0${chainKey}\0${kind}\0${codec}\0${shape}`).digest("hex");
}

/** The meta block's shape: a digest of its bytes (two writers of one prefix may order cells differently). */
export function metaShape(meta: Buffer): string {
  return createHash("sha256").update(meta).digest("hex");
}

// ---- manifest ----

export interface BlockEntry {
  key: string;
  kind: "meta" | "kv";
  /** kv blocks: index, first position, tokens. */
  index?: number;
  pos0?: number;
  tokens?: number;
  codec: string;
  rawBytes: number;
  /** Size and CRC-32C of the stored bytes (after codec and encryption). */
  bytes: number;
  crc32c: number;
  /** Absent: plaintext. keyId names the namespace whose key sealed it (kv-seal.ts). */
  enc?: { alg: string; keyId: string };
  rope?: "absolute" | "none";
}

export interface KvManifest {
  model: string;
  tokens: number;
  blockTokens: number;
  stateBytes: number;
  prefixKeys: string[];
  blocks: BlockEntry[];
}

export function encodeManifest(m: KvManifest): Buffer {
  const json = Buffer.from(JSON.stringify(m));
  const head = Buffer.alloc(12);
  KV_BLOCKS_MAGIC.copy(head, 0);
  head.writeUInt32LE(KV_BLOCKS_VERSION, 4);
  head.writeUInt32LE(json.length, 8);
  const body = Buffer.concat([head, json, Buffer.alloc(4)]);
  body.writeUInt32LE(crc32c(body.subarray(0, body.length - 4)), body.length - 4);
  return body;
}

export function isManifest(buf: Buffer): boolean {
  return buf.length >= 4 && buf.subarray(0, 4).equals(KV_BLOCKS_MAGIC);
}

/** The manifest, or KvBlockError when the frame is truncated, fails its CRC, or is not a manifest. */
export function decodeManifest(buf: Buffer): KvManifest {
  if (buf.length < 16 || !isManifest(buf)) throw new KvBlockError("not a v2 KV manifest (bad magic or too short)");
  if (buf.readUInt32LE(4) !== KV_BLOCKS_VERSION) throw new KvBlockError(`KV manifest version ${buf.readUInt32LE(4)} not supported`);
  const len = buf.readUInt32LE(8);
  if (buf.length !== 16 + len) throw new KvBlockError(`KV manifest truncated (${buf.length} bytes, frame says ${16 + len})`);
  if (crc32c(buf.subarray(0, 12 + len)) !== buf.readUInt32LE(12 + len)) throw new KvBlockError("KV manifest failed its CRC-32C");
  let m: KvManifest;
  try {
    m = JSON.parse(buf.subarray(12, 12 + len).toString()) as KvManifest;
  } catch (err) {
    throw new KvBlockError(`KV manifest is not JSON: ${(err as Error).message}`);
  }
  checkManifest(m);
  return m;
}

function checkManifest(m: KvManifest): void {
  if (!Array.isArray(m.blocks) || m.blocks[0]?.kind !== "meta" || !m.blocks.slice(1).every((b, i) => b.kind === "kv" && b.index === i))
    throw new KvBlockError("KV manifest must name the meta block, then kv blocks 0..n-1 in order");
  if (m.blocks.length - 1 !== m.tokens / m.blockTokens) throw new KvBlockError(`KV manifest names ${m.blocks.length - 1} kv blocks for ${m.tokens} tokens`);
}

/** Throws KvBlockError unless `stored` is the block the manifest entry describes (size and CRC-32C). */
export function verifyBlock(entry: Pick<BlockEntry, "key" | "bytes" | "crc32c" | "kind" | "index">, stored: Buffer): void {
  const name = entry.kind === "meta" ? "meta block" : `kv block ${entry.index}`;
  if (stored.length !== entry.bytes) throw new KvBlockError(`${name} ${entry.key.slice(0, 12)} is ${stored.length} bytes, the manifest says ${entry.bytes} (truncated)`);
  const crc = crc32c(stored);
  if (crc !== entry.crc32c) throw new KvBlockError(`${name} ${entry.key.slice(0, 12)} failed its CRC-32C (got ${crc}, manifest says ${entry.crc32c}): corrupt`);
}

/** Block streams (GET /v1/kv/:key/stream): manifest frame, then per block u32 length | u32 CRC-32C | bytes. */
export function blockFrameHead(stored: Buffer, crc: number): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt32LE(stored.length, 0);
  h.writeUInt32LE(crc, 4);
  return h;
}
