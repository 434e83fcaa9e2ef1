/**
 * Codecs of v2 kv blocks (engine/kvstore/kv-blocks.ts): each block coded on its own, so its bytes
 * depend only on the tokens of its prefix and a store still keeps one copy of a shared prefix.
 *
 * `compact1b` is compact's transform (qpre.ts's sink tensors: keys un-rotated by the RoPE
 * candidate that fits, the attention sink exact, per-channel steps, rANS; native-codec.ts codes
 * it in the addon, byte-identical) applied to each block's rows: a tensor per (section, stream,
 * layer, K or V) holding the block's cells, with their absolute positions (RoPE un-rotation; the
 * sink, position 0, is exact and only block 0 holds it). Steps are `scale` times the tensor's RMS
 * channel spread in the block, the first two layers of each section finer (COMPACT_EARLY), and in
 * a stream that holds every position up to the block's end (a full-attention layer) coarser by that
 * prefix's length as compact1 coarsens a tensor by its cells (the span rule: the cells such a tensor
 * holds at least, in any entry with this prefix; the block's key says which streams qualify). The
 * whole-entry compact1 also codes the last 128 tokens of the entry 2x finer; a block cannot know
 * where its entry ends, so blocks have no recent tier and a finer scale (COMPACT_BLOCK_SCALE).
 *
 * Coded block: per non-empty row segment of the block, in block order: u8 kind | u32 length |
 * body; kind 3: a qpre sink tensor body (qpre.ts), kind 0: the segment's bytes as they are (a
 * type other than F16). The decoder takes the segments' shapes from the meta block and checks them.
 */
import { BlockDecodeError, type BlockSlot, type KvBlockCodec } from "../kvstore/kv-block-layout.ts";
import { COMPACT_EARLY, COMPACT_SCALE, ROPES, type EarlyLayers } from "./codec.ts";
import { decodeTensorsNatively, decodeTensorsNativelyAsync, encodeTensorsNatively, nativeKvCodec, type CodedTensor, type NativeKvCodecAddon, type StridedTarget } from "./native-codec.ts";
import { decodeSinkTensor, encodeSinkTensor, SINK_CODED, toEncode, WIDE_SINK_CODED, type QpreOptions } from "./qpre.ts";
import { EXPONENT, REFERENCE_CELLS } from "./qpre-policy.ts";
import type { KvTensor } from "./state-tensors.ts";

const RAW = 0;
const HEAD = 5;

/**
 * Block codec names: compact2b is what a `compact` store's blocks carry (compact1b, which stores
 * wrote before it, still decodes); the benchmarks' variants are compact2b@SCALE (one step per
 * block), compact2b@SCALEtTOKENS (each block's newest TOKENS tokens 2x finer) and a trailing `s`
 * for the span rule (compact2b is compact2b@0.2s), and the same of compact1b.
 */
const COMPACT_BLOCK = /^compact([12])b(?:@([0-9]*\.?[0-9]+)(?:t([0-9]+))?(s)?)?$/;

/** How much finer a block's tail is coded. */
const TAIL_SCALE = 0.5;

/** The step rule of compact1b and compact2b: `scale`, the first two layers of each section finer, the last `tail` tokens of each block 2x finer. */
function blockOptions(scale: number, early: EarlyLayers, tail: number, wide: boolean): QpreOptions {
  return {
    ropes: ROPES,
    sinkPositions: 1,
    wide,
    policy: (t) => ({ step: scale * (t.layer < 2 ? (t.kind === "k" ? early.keys : early.values) : 1), recentTokens: tail, recentScale: TAIL_SCALE }),
  };
}

function frame(kind: number, body: Buffer): Buffer[] {
  const h = Buffer.alloc(HEAD);
  h[0] = kind;
  h.writeUInt32LE(body.length, 1);
  return [h, body];
}

type TensorSlot = Extract<BlockSlot, { tensor: KvTensor }>;

/** The tensor slots of every block, in block order. */
function tensorsOf(blocks: readonly BlockSlot[][]): TensorSlot[] {
  return blocks.flatMap((slots) => slots.filter((s): s is TensorSlot => "tensor" in s));
}

/** The segment kind of a codec's tensors: compact2b's blocks carry the wide rANS stream. */
const tensorKind = (wide: boolean): number => (wide ? WIDE_SINK_CODED : SINK_CODED);

function encodeAll(blocks: readonly BlockSlot[][], optionsOf: (s: TensorSlot) => QpreOptions, wide: boolean): Buffer[] {
  const slots = tensorsOf(blocks);
  const native = nativeKvCodec();
  const kind = tensorKind(wide);
  const bodies = native
    ? encodeTensorsNatively(
        native,
        slots.map((s) => toEncode(s.tensor, kind, optionsOf(s))),
      )
    : slots.map((s) => encodeSinkTensor(s.tensor, optionsOf(s)));
  let next = 0;
  return blocks.map((slots) => Buffer.concat(slots.flatMap((s) => ("tensor" in s ? frame(kind, bodies[next++]!) : frame(RAW, s.bytes)))));
}

/** A sink tensor body's shape (its tiered body leads with rows u32 | cols u32 | token axis u8). */
function checkShape(body: Buffer, t: KvTensor, index: number): void {
  if (body.length < 4 + 9) throw new Error(`segment ${index}: tensor body too short`);
  const same = body.readUInt32LE(4) === t.rows && body.readUInt32LE(8) === t.cols && body[12] === t.tokenAxis;
  if (!same) throw new Error(`segment ${index}: tensor shape ${body.readUInt32LE(4)}x${body.readUInt32LE(8)} differs from the block's ${t.rows}x${t.cols}`);
}

/** The coded block's segments against the block's slots: tensors to decode; raw segments copied into their slots. */
function parseBlock(coded: Buffer, slots: readonly BlockSlot[], tensor: number): CodedTensor[] {
  const tensors: CodedTensor[] = [];
  let o = 0;
  slots.forEach((slot, i) => {
    if (o + HEAD > coded.length) throw new Error(`truncated at segment ${i} of ${slots.length}`);
    const kind = coded[o]!;
    const body = coded.subarray(o + HEAD, o + HEAD + coded.readUInt32LE(o + 1));
    o += HEAD + body.length;
    if (o > coded.length) throw new Error(`segment ${i} runs past the block's end`);
    if (kind !== ("tensor" in slot ? tensor : RAW)) throw new Error(`segment ${i} has kind ${kind}, the block's layout and codec say ${"tensor" in slot ? tensor : RAW}`);
    if (!("tensor" in slot)) {
      if (body.length !== slot.bytes.length) throw new Error(`segment ${i} has ${body.length} bytes, the layout says ${slot.bytes.length}`);
      return void body.copy(slot.bytes);
    }
    checkShape(body, slot.tensor, i);
    tensors.push({ kind, body, slot: slot.tensor, ...(slot.into ? { into: slot.into } : {}) });
  });
  if (o !== coded.length) throw new Error(`${coded.length - o} bytes after the last segment`);
  return tensors;
}

/** Copies a dense transposed tensor's channel rows into a strided target. */
function copyStrided(t: KvTensor, into: StridedTarget): void {
  const row = 2 * t.cols;
  for (let j = 0; j < t.rows; j++) t.data.copy(into.data, 2 * j * into.stride, j * row, (j + 1) * row);
}

/** Runs `fn`; an error it throws becomes a BlockDecodeError naming block `k` (kept when it is one). */
function named<T>(k: number, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw err instanceof BlockDecodeError ? err : new BlockDecodeError(k, (err as Error).message);
  }
}

/** Each block's tensors (its raw segments copied into their slots now); decoded in JavaScript at once when the addon is not there (undefined then). */
function parsedTensors(blocks: readonly { coded: Buffer; slots: readonly BlockSlot[] }[], wide: boolean): { native: NativeKvCodecAddon; perBlock: CodedTensor[][] } | undefined {
  const perBlock = blocks.map(({ coded, slots }, k) => named(k, () => parseBlock(coded, slots, tensorKind(wide))));
  const native = nativeKvCodec();
  if (native) return { native, perBlock };
  perBlock.forEach((tensors, k) =>
    named(k, () => {
      for (const t of tensors) {
        decodeSinkTensor(t.body, t.slot, wide);
        if (t.into) copyStrided(t.slot, t.into);
      }
    }),
  );
  return undefined;
}

/**
 * Decodes coded blocks into their slots: natively, every block's tensors in one pass (strided
 * targets written in place), or in JavaScript (dense, then copied there); a BlockDecodeError names
 * the block by its place in `blocks`.
 */
function decodeAll(blocks: readonly { coded: Buffer; slots: readonly BlockSlot[] }[], wide: boolean): void {
  const parsed = parsedTensors(blocks, wide);
  if (!parsed) return;
  const { native, perBlock } = parsed;
  if (blocks.length === 1) return named(0, () => decodeTensorsNatively(native, perBlock[0]!));
  try {
    decodeTensorsNatively(native, perBlock.flat());
  } catch (err) {
    // The pass does not say which tensor failed: each block on its own, to name it.
    perBlock.forEach((tensors, k) => named(k, () => decodeTensorsNatively(native, tensors)));
    throw err;
  }
}

/** decodeAll with the native pass on a worker thread (the event loop free meanwhile). */
async function decodeAllAsync(blocks: readonly { coded: Buffer; slots: readonly BlockSlot[] }[], wide: boolean): Promise<void> {
  const parsed = parsedTensors(blocks, wide);
  if (!parsed) return;
  const { native, perBlock } = parsed;
  try {
    await decodeTensorsNativelyAsync(native, perBlock.flat());
  } catch (err) {
    if (blocks.length === 1) throw new BlockDecodeError(0, (err as Error).message);
    // The pass does not say which tensor failed: each block on its own, to name it.
    for (const [k, tensors] of perBlock.entries()) {
      await decodeTensorsNativelyAsync(native, tensors).catch((e: Error) => {
        throw new BlockDecodeError(k, e.message);
      });
    }
    throw err;
  }
}

export interface BlockRule {
  /** Each block's newest tokens coded 2x finer (0: none). */
  tail?: number;
  /**
   * Steps of a full-attention stream's block (one that holds every position up to the block's end:
   * prefixCells) coarsened as compact1 coarsens a tensor of that many cells, (cells / 512)^0.35: the
   * cells the tensor holds at least in any entry with this prefix.
   */
  span?: boolean;
  early?: EarlyLayers;
  /** The wide rANS stream (compact2b): tensors of kind WIDE_SINK_CODED, which the addon decodes with AVX-512 or AVX2 where the CPU has it. */
  wide?: boolean;
}

/**
 * The span rule's step factor for a stream holding `cells` positions whole: compact1's cell rule
 * (qpre-policy.ts, (cells / 512)^0.35 with no sensitivity table), never below 1 — a block is never coded finer than the flat block scale (a short
 * prefix would otherwise get steps so fine that its coded block outgrows its raw rows: 16-token blocks
 * coded to 1.08x their F16 bytes).
 */
function spanFactor(cells: number): number {
  return cells > REFERENCE_CELLS ? (cells / REFERENCE_CELLS) ** EXPONENT : 1;
}

export function compactBlockCodec(name: string, scale: number, rule: BlockRule = {}): KvBlockCodec {
  const { tail = 0, span = false, early = COMPACT_EARLY, wide = false } = rule;
  const options = new Map<number, QpreOptions>();
  const optionsOf = (s: TensorSlot): QpreOptions => {
    const cells = span ? (s.prefixCells ?? 0) : 0;
    if (!options.has(cells)) options.set(cells, blockOptions(scale * spanFactor(cells), early, tail, wide));
    return options.get(cells)!;
  };
  return { name, encode: (blocks) => encodeAll(blocks, optionsOf, wide), decode: (blocks) => decodeAll(blocks, wide), decodeAsync: (blocks) => decodeAllAsync(blocks, wide) };
}

/**
 * compact1b's step scale: 0.8x compact1's, the coarsest that meets the quality rule when blocks
 * carry no recent tier (BENCHMARKS.md, "Block codec compact1b"; bench/results/kv-codec-block*.json).
 */
export const COMPACT_BLOCK_SCALE = 0.8 * COMPACT_SCALE;
/**
 * What a `compact` store's blocks carry; the name is in each block's key and manifest entry. With
 * the span rule, so that long contexts' full-attention layers are coded as coarsely as compact1
 * codes them (BENCHMARKS.md, "Block codec compact1b"), and the wide rANS stream, which the addon
 * decodes about twice as fast as compact1b's where the CPU has AVX-512 or AVX2 (BENCHMARKS.md,
 * "Block codec compact2b"): the same values, a stream 0.3 % larger.
 */
export const COMPACT_BLOCKS = compactBlockCodec("compact2b", COMPACT_BLOCK_SCALE, { span: true, wide: true });
/** What `compact` stores wrote before compact2b: the same values, the two-state rANS stream. Still decoded. */
export const COMPACT1_BLOCKS = compactBlockCodec("compact1b", COMPACT_BLOCK_SCALE, { span: true });

/** The block codec named in a manifest (compact2b, compact1b, or a benchmark's compact2b@SCALE); undefined for none or an unknown name. */
export function kvBlockCodec(name: string): KvBlockCodec | undefined {
  if (name === COMPACT_BLOCKS.name) return COMPACT_BLOCKS;
  if (name === COMPACT1_BLOCKS.name) return COMPACT1_BLOCKS;
  const variant = COMPACT_BLOCK.exec(name);
  if (!variant) return undefined;
  return compactBlockCodec(name, Number(variant[2]), { tail: Number(variant[3] ?? 0), span: variant[4] === "s", wide: variant[1] === "2" });
}

/**
 * The block codec that carries a store's entry codec (none: raw rows; compact1: compact2b, or
 * compact1b where the store's `offered` block codecs list only that: a store from before compact2b);
 * undefined: entries stay v1.
 */
export function blockCodecFor(entryCodec: string, offered?: readonly string[]): string | undefined {
  if (entryCodec === "none") return "none";
  if (entryCodec !== "compact1") return undefined;
  return offered && !offered.includes(COMPACT_BLOCKS.name) && offered.includes(COMPACT1_BLOCKS.name) ? COMPACT1_BLOCKS.name : COMPACT_BLOCKS.name;
}

/** Block codecs this engine decodes per block (none: the raw rows). */
export const DECODABLE_BLOCK_CODECS: readonly string[] = ["none", COMPACT_BLOCKS.name, COMPACT1_BLOCKS.name];
