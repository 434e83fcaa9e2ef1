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
 * A kv block may be coded by a block codec (engine/kvcodec/block-codec.ts, named in the manifest and
 * the key): it sees the block's row segments as tensors with their absolute positions
 * (kv-block-layout.ts's slots) and decodes into the rebuilt state as the block arrives.
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
import { crc32c, crc32cAsync } from "./crc32c.ts";
import { BlockDecodeError, blockSlots, codedShape, forEachRowRun, isF16Seg, isSeg, KvBlockError, moveRows, parse, plan, type BlockSlot, type KvBlockCodec, type Plan, type SlotPlace } from "./kv-block-layout.ts";

export { KvBlockError, type BlockSlot, type KvBlockCodec } from "./kv-block-layout.ts";

export const KV_BLOCKS_MAGIC = Buffer.from("LFKB");
export const KV_BLOCKS_VERSION = 2;

export interface SplitState {
  meta: Buffer;
  /** kv blocks in order (subarrays of `buffer`, after the meta block), as stored: coded when split with a codec. */
  blocks: Buffer[];
  /** Per kv block: its size before its codec (the raw rows). */
  rawSizes: number[];
  /** Per kv block: digest of its shape (blockKey's `shape`; a coded block's adds what its codec's steps depend on). */
  shapes: string[];
  tokens: number;
  /** The meta block then every kv block, in one buffer (what a worker thread hands back). */
  buffer: Buffer;
}

/** The layout of a SplitState's buffer: enough to rebuild the views on another thread. */
export interface SplitLayout {
  metaBytes: number;
  sizes: number[];
  rawSizes: number[];
  shapes: string[];
  tokens: number;
}

export function splitLayout(s: SplitState): SplitLayout {
  return { metaBytes: s.meta.length, sizes: s.blocks.map((b) => b.length), rawSizes: s.rawSizes, shapes: s.shapes, tokens: s.tokens };
}

export function splitFromLayout(buffer: Buffer, l: SplitLayout): SplitState {
  let at = l.metaBytes;
  const blocks = l.sizes.map((n) => {
    const b = buffer.subarray(at, at + n);
    at += n;
    return b;
  });
  return { meta: buffer.subarray(0, l.metaBytes), blocks, rawSizes: l.rawSizes, shapes: l.shapes, tokens: l.tokens, buffer };
}

export interface SplitOptions {
  /** Codes every kv block with it (absent: the raw rows, codec none). */
  codec?: KvBlockCodec;
  /** A last block of fewer tokens instead of an error (benchmarks of states not cut to blocks; entries never have one). */
  partialTail?: boolean;
}

/** Splits a state of a whole number of blocks into its meta block and kv blocks; KvBlockError when it cannot. */
export function splitState(state: Buffer, blockTokens: number, opts: SplitOptions = {}): SplitState {
  const parsed = parse(state, true);
  const p = plan(parsed, blockTokens, opts.partialTail);
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
  const split = { meta: buffer.subarray(0, metaBytes), blocks, rawSizes: [...p.sizes], shapes: p.shapes, tokens: parsed.tokens, buffer };
  return opts.codec ? codeBlocks(split, p, opts.codec) : split;
}

/**
 * splitState without copying a row: the meta block, and for the kv blocks (codec none) the copies
 * that cut them out of `state` — (stateOffset, offset in the kv blocks laid end to end, length)
 * triples — with each block's end. A native gather (kvGather) then makes the blocks off the event
 * loop; bytes identical to splitState's.
 */
export function splitRuns(state: Buffer, blockTokens: number): Omit<SplitState, "blocks" | "buffer"> & { runs: Float64Array; blockEnds: Float64Array } {
  const parsed = parse(state, true);
  const p = plan(parsed, blockTokens);
  const meta = Buffer.concat(parsed.items.filter((x): x is Buffer => !isSeg(x)));
  const stateOffsets = parsed.items.filter(isSeg).map((x) => x.offset);
  const runs: number[] = [];
  const blockEnds = new Float64Array(p.blocks);
  let at = 0;
  for (let b = 0; b < p.blocks; b++) {
    const base = at;
    forEachRowRun({ p, stateOffsets }, b, (from, to, len) => runs.push(from, base + to, len));
    at += p.sizes[b]!;
    blockEnds[b] = at;
  }
  return { meta, rawSizes: [...p.sizes], shapes: p.shapes, tokens: parsed.tokens, runs: Float64Array.from(runs), blockEnds };
}

/** The split with its kv blocks coded, in one new buffer. */
function codeBlocks(raw: SplitState, p: Plan, codec: KvBlockCodec): SplitState {
  const coded = codec.encode(raw.blocks.map((data, b) => blockSlots(p, b, data)));
  const buffer = Buffer.allocUnsafe(raw.meta.length + coded.reduce((n, c) => n + c.length, 0));
  let at = raw.meta.copy(buffer, 0);
  const blocks = coded.map((c) => {
    const view = buffer.subarray(at, at + c.length);
    at += c.copy(buffer, at);
    return view;
  });
  return { ...raw, meta: buffer.subarray(0, raw.meta.length), blocks, shapes: raw.shapes.map((_, b) => codedShape(p, b)), buffer };
}

/** A coded block's decode into the state: its slots, and the scratch copy of its raw layout when some segment cannot decode in place. */
interface CodedWork {
  i: number;
  coded: Buffer;
  scratch: Buffer | undefined;
  slots: BlockSlot[];
  direct: Set<number>;
}

/** The KvBlockError of a failed decode, naming the block (a BlockDecodeError says which; else the first). */
function decodeFailure(err: unknown, work: readonly CodedWork[], codec: KvBlockCodec): KvBlockError {
  const i = err instanceof BlockDecodeError ? work[err.index]!.i : work[0]!.i;
  return new KvBlockError(`kv block ${i} does not decode with codec ${codec.name}: ${(err as Error).message}`);
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
  private dense = Buffer.alloc(0);

  /**
   * `alloc` makes the state's buffer (default Buffer.allocUnsafe): a load passes the addon's pool
   * (kvAlloc), whose blocks are page-locked on a GPU and already faulted in, so llama.cpp's copy to
   * the device runs at the link's speed and a GB-sized state costs no page faults to fill.
   */
  constructor(meta: Buffer, blockTokens: number, partialTail = false, alloc: (bytes: number) => Buffer = Buffer.allocUnsafe) {
    const parsed = parse(meta, false);
    this.p = plan(parsed, blockTokens, partialTail);
    let size = 0;
    for (const item of parsed.items) {
      if (!isSeg(item)) size += item.length;
      else size += parsed.parts[item.part]!.positions.length * item.unit * item.nEmbd;
    }
    this.out = alloc(size);
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
    this.check(i);
    if (data.length !== this.p.sizes[i]) throw new KvBlockError(`kv block ${i} has ${data.length} bytes, the meta block says ${this.p.sizes[i]}`);
    moveRows({ p: this.p, state: this.out, stateOffsets: this.stateOffsets }, i, data, false);
    this.placed[i] = true;
  }

  /**
   * place() done by the caller: checks kv block i's size, counts it placed, and gives the state and
   * the (offset in the block, offset in the state, length) copies that place it (kvScatter makes
   * them on a worker thread; the caller waits for it before finish()).
   */
  placeRuns(i: number, bytes: number): { out: Buffer; runs: Float64Array } {
    this.check(i);
    if (bytes !== this.p.sizes[i]) throw new KvBlockError(`kv block ${i} has ${bytes} bytes, the meta block says ${this.p.sizes[i]}`);
    const runs: number[] = [];
    forEachRowRun({ p: this.p, stateOffsets: this.stateOffsets }, i, (inState, inBlock, len) => runs.push(inBlock, inState, len));
    this.placed[i] = true;
    return { out: this.out, runs: Float64Array.from(runs) };
  }

  /**
   * Decodes coded kv block i into the state. Row segments whose cells lie in one run of the state
   * (cells in position order, the usual layout) decode straight into the state: K and V rows as a
   * dense view, transposed V as a strided one (`into`); others (cells out of order) into a scratch
   * block, then copied. KvBlockError when the block does not decode.
   */
  placeCoded(i: number, coded: Buffer, codec: KvBlockCodec): void {
    this.placeCodedMany([{ i, coded }], codec);
  }

  /**
   * placeCoded for several blocks of one codec, decoded in one pass (KvBlockCodec.decode): the
   * native decoder's threads share all their tensors, not one block's few. A block gets a scratch
   * copy of its raw layout only when some segment cannot decode in place (a load's blocks usually
   * all can: no scratch, which as 20 MB of short-lived buffers per 4K-token load cost more in GC
   * than the copies they would take).
   */
  placeCodedMany(blocks: readonly { i: number; coded: Buffer }[], codec: KvBlockCodec): void {
    const work = this.codedWork(blocks);
    try {
      codec.decode(work);
    } catch (err) {
      throw decodeFailure(err, work, codec);
    }
    this.placedCoded(work);
  }

  /**
   * placeCodedMany with the native pass on a worker thread (KvBlockCodec.decodeAsync), the event
   * loop free meanwhile: a load's blocks keep arriving while earlier ones decode. The blocks' bytes
   * and the state must stay as they are until it settles.
   */
  async placeCodedManyAsync(blocks: readonly { i: number; coded: Buffer }[], codec: KvBlockCodec): Promise<void> {
    const work = this.codedWork(blocks);
    try {
      await (codec.decodeAsync ? codec.decodeAsync(work) : codec.decode(work));
    } catch (err) {
      throw decodeFailure(err, work, codec);
    }
    this.placedCoded(work);
  }

  private codedWork(blocks: readonly { i: number; coded: Buffer }[]): CodedWork[] {
    return blocks.map(({ i, coded }) => {
      this.check(i);
      const places = this.statePlaces(i);
      const inPlace = this.p.parsed.items.filter(isSeg).every((seg, si) => this.p.counts[seg.part]![i] === 0 || places.has(si));
      const scratch = inPlace ? undefined : Buffer.allocUnsafe(this.p.sizes[i]!);
      return { i, coded, scratch, slots: blockSlots(this.p, i, scratch, (si) => places.get(si)), direct: new Set(places.keys()) };
    });
  }

  private placedCoded(work: readonly CodedWork[]): void {
    for (const w of work) {
      if (w.scratch) moveRows({ p: this.p, state: this.out, stateOffsets: this.stateOffsets, skip: w.direct }, w.i, w.scratch, false);
      this.placed[w.i] = true;
    }
  }

  /**
   * Where the F16 segments of block i whose rows are one run in the state go there, by segment
   * index. Transposed V's strided place comes with dense scratch for a decoder that cannot write
   * strided (the JavaScript one: it decodes and copies one tensor at a time), one buffer for all.
   */
  private statePlaces(i: number): Map<number, SlotPlace> {
    const places = new Map<number, SlotPlace>();
    this.p.parsed.items.filter(isSeg).forEach((seg, si) => {
      const n = this.p.counts[seg.part]![i]!;
      if (n === 0 || !isF16Seg(seg)) return;
      const runs = this.p.runs[seg.part]!.filter((r) => r.block === i);
      if (runs.length !== 1 || runs[0]!.rank !== 0) return;
      const at = this.stateOffsets[si]! + runs[0]!.cell * seg.unit;
      if (at % 2 !== 0) return;
      if (seg.kind !== "vt") return void places.set(si, { data: this.out.subarray(at, at + n * seg.unit) });
      const cells = this.p.parsed.parts[seg.part]!.positions.length;
      const into = { data: this.out.subarray(at, at + ((seg.nEmbd - 1) * cells + n) * seg.unit), stride: cells };
      places.set(si, { data: this.denseScratch(n * seg.unit * seg.nEmbd), into });
    });
    return places;
  }

  /** `bytes` of the joiner's one dense scratch (grown as needed). */
  private denseScratch(bytes: number): Buffer {
    if (this.dense.length < bytes) this.dense = Buffer.allocUnsafe(bytes);
    return this.dense.subarray(0, bytes);
  }

  private check(i: number): void {
    if (i < 0 || i >= this.p.blocks) throw new KvBlockError(`kv block ${i} out of range (entry has ${this.p.blocks})`);
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
  checkBlockSum(entry, stored.length, crc32c(stored));
}

/** verifyBlock with a large block checksummed off the event loop (crc32cAsync). */
export async function verifyBlockAsync(entry: Pick<BlockEntry, "key" | "bytes" | "crc32c" | "kind" | "index">, stored: Buffer): Promise<void> {
  checkBlockSum(entry, stored.length, stored.length === entry.bytes ? await crc32cAsync(stored) : -1);
}

function checkBlockSum(entry: Pick<BlockEntry, "key" | "bytes" | "crc32c" | "kind" | "index">, bytes: number, crc: number): void {
  const name = entry.kind === "meta" ? "meta block" : `kv block ${entry.index}`;
  if (bytes !== entry.bytes) throw new KvBlockError(`${name} ${entry.key.slice(0, 12)} is ${bytes} bytes, the manifest says ${entry.bytes} (truncated)`);
  if (crc !== entry.crc32c) throw new KvBlockError(`${name} ${entry.key.slice(0, 12)} failed its CRC-32C (got ${crc}, manifest says ${entry.crc32c}): corrupt`);
}

/** Block streams (GET /v1/kv/:key/stream): manifest frame, then per block u32 length | u32 CRC-32C | bytes. */
export function blockFrameHead(stored: Buffer, crc: number): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt32LE(stored.length, 0);
  h.writeUInt32LE(crc, 4);
  return h;
}
