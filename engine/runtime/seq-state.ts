/**
 * Reads and normalises llama.cpp sequence state (`llama_state_seq_save_file`, magic "ggsq").
 *
 * Why: the state is not portable between contexts as llama.cpp writes it. Each KV cache section
 * starts with the context's number of KV streams (one per sequence, kv_unified is off in
 * node-llama-cpp), and the loader refuses a different count ("n_stream mismatch"); the V
 * tensors are stored transposed unless flash attention is on, and the loader refuses the other
 * layout. A sequence occupies one stream, so we rewrite the stream count (keeping the one
 * non-empty stream block) and transpose V where the layouts differ.
 *
 * Layout after the header (magic u32, version u32, n_token u32, tokens u32[n]): one section per
 * KV cache (two on sliding-window models: base and SWA), each:
 *   n_stream u32; per stream: cell_count u32, and when > 0:
 *     meta: per cell pos i32, n_seq_id u32, seq_id i32[n_seq_id]
 *     data: v_trans u32, n_layer u32; per layer K: type i32, row_size u64, rows
 *           per layer V: type i32, row_size u64, rows            (v_trans = 0)
 *                     or type i32, el_size u32, n_embd u32, cols (v_trans = 1)
 * Models with per-cell extensions (M-RoPE) or recurrent state are refused (the parse does not
 * end exactly at the end of the buffer).
 */
const MAGIC = 0x67677371;

export interface KvLayout {
  streams: number;
  vTransposed: boolean;
}

export interface SeqStateSummary {
  tokens: number[];
  sections: { streams: number; cells: number; vTransposed: boolean | undefined }[];
}

class Reader {
  offset = 0;
  constructor(readonly buf: Buffer) {}
  u32(): number {
    const v = this.buf.readUInt32LE(this.offset);
    this.offset += 4;
    return v;
  }
  u64(): number {
    const v = Number(this.buf.readBigUInt64LE(this.offset));
    this.offset += 8;
    return v;
  }
  bytes(n: number): Buffer {
    if (this.offset + n > this.buf.length) throw new Error("KV state truncated");
    const b = this.buf.subarray(this.offset, this.offset + n);
    this.offset += n;
    return b;
  }
  get done(): boolean {
    return this.offset >= this.buf.length;
  }
}

const u32 = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
};

/** Transposes a rows x cols matrix of `el`-byte elements. */
function transpose(src: Buffer, rows: number, cols: number, el: number): Buffer {
  const out = Buffer.alloc(src.length);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) src.copy(out, (c * rows + r) * el, (r * cols + c) * el, (r * cols + c + 1) * el);
  }
  return out;
}

function readV(r: Reader, cells: number, vTransposed: boolean, wantTransposed: boolean): Buffer[] {
  const type = r.bytes(4);
  if (!vTransposed) {
    const rowSize = r.u64();
    const rows = r.bytes(cells * rowSize);
    if (!wantTransposed) return [type, r.buf.subarray(r.offset - 8 - rows.length, r.offset - rows.length), rows];
    const el = elementSize(type.readInt32LE());
    return [type, u32(el), u32(rowSize / el), transpose(rows, cells, rowSize / el, el)];
  }
  const el = r.u32();
  const nEmbd = r.u32();
  const cols = r.bytes(nEmbd * cells * el);
  if (wantTransposed) return [type, u32(el), u32(nEmbd), cols];
  const rowSize = Buffer.alloc(8);
  rowSize.writeBigUInt64LE(BigInt(nEmbd * el));
  return [type, rowSize, transpose(cols, nEmbd, cells, el)];
}

/** ggml type ids of unquantized types: F32=0, F16=1, BF16=30. Quantized V cannot be transposed here. */
function elementSize(ggmlType: number): number {
  const sizes: Record<number, number> = { 0: 4, 1: 2, 30: 2 };
  const size = sizes[ggmlType];
  if (size === undefined) throw new Error(`cannot change the V layout of a quantized KV cache (ggml type ${ggmlType})`);
  return size;
}

function readStreamBlock(r: Reader, cells: number, wantTransposed: boolean): { parts: Buffer[]; vTransposed: boolean } {
  const metaStart = r.offset;
  for (let i = 0; i < cells; i++) {
    r.u32();
    r.bytes(4 * r.u32());
  }
  const parts: Buffer[] = [u32(cells), r.buf.subarray(metaStart, r.offset)];
  const vTransposed = r.u32() === 1;
  const nLayer = r.u32();
  parts.push(u32(wantTransposed ? 1 : 0), u32(nLayer));
  const kStart = r.offset;
  for (let l = 0; l < nLayer; l++) {
    r.bytes(4);
    r.bytes(cells * r.u64());
  }
  parts.push(r.buf.subarray(kStart, r.offset));
  for (let l = 0; l < nLayer; l++) parts.push(...readV(r, cells, vTransposed, wantTransposed));
  return { parts, vTransposed };
}

function readHeader(r: Reader): number[] {
  if (r.u32() !== MAGIC) throw new Error("not a llama.cpp sequence state (bad magic)");
  r.u32();
  const n = r.u32();
  return Array.from({ length: n }, () => r.u32());
}

/** The tokens a sequence state holds (its file header); throws on a bad magic or a truncated header. */
export function seqStateTokens(state: Buffer): number[] {
  return readHeader(new Reader(state));
}

/** One section's streams: the non-empty ones' blocks in target layout, and whether that differs from the input. */
function readSection(r: Reader, target: KvLayout): { blocks: Buffer[][]; changed: boolean } {
  const streams = r.u32();
  const blocks: Buffer[][] = [];
  let changed = streams !== target.streams;
  for (let s = 0; s < streams; s++) {
    const cells = r.u32();
    if (cells === 0) continue;
    changed ||= blocks.length !== s; // an empty stream before this one: the blocks move up
    const block = readStreamBlock(r, cells, target.vTransposed);
    changed ||= block.vTransposed !== target.vTransposed;
    blocks.push(block.parts);
  }
  if (blocks.length > target.streams) throw new Error(`state holds ${blocks.length} non-empty KV streams; target has ${target.streams}`);
  return { blocks, changed };
}

/**
 * Rewrites a sequence state for a context with `target.streams` KV streams and V layout. A state
 * already in that layout is returned as it is: no copy of a (possibly GB-sized) state.
 */
export function normaliseSeqState(state: Buffer, target: KvLayout): Buffer {
  const r = new Reader(state);
  readHeader(r);
  const out: Buffer[] = [state.subarray(0, r.offset)];
  let changed = false;
  while (!r.done) {
    const section = readSection(r, target);
    changed ||= section.changed;
    out.push(u32(target.streams), ...section.blocks.flat());
    for (let s = section.blocks.length; s < target.streams; s++) out.push(u32(0));
  }
  if (r.offset !== state.length) throw new Error("KV state layout not understood (trailing bytes)");
  return changed ? Buffer.concat(out) : state;
}

export function summariseSeqState(state: Buffer): SeqStateSummary {
  const r = new Reader(state);
  const tokens = readHeader(r);
  const sections: SeqStateSummary["sections"] = [];
  while (!r.done) {
    const streams = r.u32();
    let cellsTotal = 0;
    let vTransposed: boolean | undefined;
    for (let s = 0; s < streams; s++) {
      const cells = r.u32();
      if (cells === 0) continue;
      cellsTotal += cells;
      vTransposed = readStreamBlock(r, cells, false).vTransposed;
    }
    sections.push({ streams, cells: cellsTotal, vTransposed });
  }
  return { tokens, sections };
}

/** Runs [start, end) of the cell indices whose position is below `keep`. */
function keptRuns(positions: number[], keep: number): [number, number][] {
  const runs: [number, number][] = [];
  positions.forEach((pos, i) => {
    if (pos >= keep) return;
    const last = runs.at(-1);
    if (last && last[1] === i) last[1] = i + 1;
    else runs.push([i, i + 1]);
  });
  return runs;
}

const pick = (src: Buffer, runs: [number, number][], unit: number): Buffer[] => runs.map(([a, b]) => src.subarray(a * unit, b * unit));
const keptCount = (runs: [number, number][]): number => runs.reduce((n, [a, b]) => n + b - a, 0);

function readMeta(r: Reader, cells: number): { positions: number[]; meta: Buffer[] } {
  const positions: number[] = [];
  const meta: Buffer[] = [];
  for (let i = 0; i < cells; i++) {
    const start = r.offset;
    positions.push(r.buf.readInt32LE(start));
    r.u32();
    r.bytes(4 * r.u32());
    meta.push(r.buf.subarray(start, r.offset));
  }
  return { positions, meta };
}

function truncateV(r: Reader, cells: number, vTransposed: boolean, runs: [number, number][]): Buffer[] {
  const type = r.bytes(4);
  if (!vTransposed) {
    const rowSizeBuf = r.bytes(8);
    const rowSize = Number(rowSizeBuf.readBigUInt64LE());
    return [type, rowSizeBuf, ...pick(r.bytes(cells * rowSize), runs, rowSize)];
  }
  const head = r.bytes(8);
  const el = head.readUInt32LE(0);
  const nEmbd = head.readUInt32LE(4);
  const cols = r.bytes(nEmbd * cells * el);
  const out: Buffer[] = [type, head];
  for (let e = 0; e < nEmbd; e++) out.push(...pick(cols.subarray(e * cells * el, (e + 1) * cells * el), runs, el));
  return out;
}

function truncateStreamBlock(r: Reader, cells: number, keep: number): Buffer[] {
  const { positions, meta } = readMeta(r, cells);
  const runs = keptRuns(positions, keep);
  const parts: Buffer[] = [u32(keptCount(runs)), ...runs.flatMap(([a, b]) => meta.slice(a, b))];
  const head = r.bytes(8);
  const vTransposed = head.readUInt32LE(0) === 1;
  const nLayer = head.readUInt32LE(4);
  parts.push(head);
  for (let l = 0; l < nLayer; l++) {
    parts.push(r.bytes(4));
    const rowSizeBuf = r.bytes(8);
    const rowSize = Number(rowSizeBuf.readBigUInt64LE());
    parts.push(rowSizeBuf, ...pick(r.bytes(cells * rowSize), runs, rowSize));
  }
  for (let l = 0; l < nLayer; l++) parts.push(...truncateV(r, cells, vTransposed, runs));
  return parts;
}

/**
 * The state of the first `keep` tokens: drops the cells at positions >= keep (their K/V rows,
 * or columns of a transposed V) and the tokens after `keep` from the header. Used to store the
 * state of a block-aligned prompt prefix from a sequence that holds more.
 */
export function truncateSeqState(state: Buffer, keep: number): Buffer {
  const r = new Reader(state);
  r.u32();
  const version = r.u32();
  const tokens = readHeaderTokens(r);
  if (keep > tokens.length) throw new Error(`cannot keep ${keep} tokens of a state holding ${tokens.length}`);
  const out: Buffer[] = [u32(MAGIC), u32(version), u32(keep), state.subarray(12, 12 + 4 * keep)];
  while (!r.done) {
    const streams = r.u32();
    out.push(u32(streams));
    for (let s = 0; s < streams; s++) {
      const cells = r.u32();
      out.push(...(cells > 0 ? truncateStreamBlock(r, cells, keep) : [u32(0)]));
    }
  }
  return Buffer.concat(out);
}

function readHeaderTokens(r: Reader): number[] {
  const n = r.u32();
  return Array.from({ length: n }, () => r.u32());
}
