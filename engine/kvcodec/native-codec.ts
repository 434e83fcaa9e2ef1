/**
 * The qpre-family codecs' tensors (compact1, qsink*, qpre*) decoded and encoded by the engine's
 * native addon (engine/native/src/kvcodec-decode.h, kvcodec-encode.h), byte-identical to qpre.ts's
 * JavaScript and about an order of magnitude faster. The container, the Brotli parts, the rebuilt
 * state's layout and the policy's decisions stay in qpre.ts; this module hands the addon each
 * coded tensor and what the C++ cannot compute exactly as V8 does: the RoPE seed angles (V8's
 * Math.cos, Math.sin and ** are not the C library's) and the gain factors.
 *
 * Which addon: the one the engine loaded (engine/native/binding.ts calls useNativeKvCodec); none
 * (a kvstore process, a pod on the llama backend without the P/D stream, a test without the addon,
 * an addon built before kvDecode and kvEncode existed): qpre.ts codes in JavaScript. The codec's
 * worker thread (codec-offload.ts) gets the path with each job.
 */
import { createRequire } from "node:module";
import { availableParallelism } from "node:os";
import { followsPrevious, ropeSteps, type Rope } from "./rope.ts";
import type { KvTensor } from "./state-tensors.ts";

/** One coded tensor of an entry (a qpre container part of kind 1 or 3, or a block codec's segment of kind 3 or 4) and its place in the rebuilt state. */
export interface CodedTensor {
  kind: number;
  body: Buffer;
  slot: KvTensor;
  /**
   * Transposed tensors (token axis 1) only: decode here instead of slot.data, each channel's tokens
   * `stride` elements after the previous channel's (a v2 block's V columns, straight into the state).
   */
  into?: StridedTarget;
}

/** A strided F16 view: `data` from the first channel's first token to the last channel's last. */
export interface StridedTarget {
  data: Buffer;
  stride: number;
}

interface NativeDecodeJob {
  kind: number;
  body: Uint8Array;
  out: Uint16Array;
  rows: number;
  cols: number;
  tokenAxis: number;
  outStride?: number;
  positions: Int32Array;
  stepCos?: Float64Array;
  stepSin?: Float64Array;
  seeds?: Float64Array;
}

/** The addon's KV codec entry point (engine/native/src/addon-kvcodec.cpp). */
export interface NativeKvCodecAddon {
  /** Decodes every job into its `out`, on `threads` threads; throws on a corrupt body. gains: 2^(-code/32) at code + 128. */
  kvDecode(jobs: NativeDecodeJob[], threads: number, gains: Float32Array | null): void;
  /** kvDecode on a worker thread (an addon built before it lacks it); rejects on a corrupt body. */
  kvDecodeAsync?(jobs: NativeDecodeJob[], threads: number, gains: Float32Array | null): Promise<void>;
  /** Each job's tensor body (what qpre.ts writes after the part header); gains: 2^(code/32) at code + 128. */
  kvEncode(jobs: NativeEncodeJob[], threads: number, gains: Float32Array | null): Buffer[];
}

/** A RoPE candidate for keys: style 1 neox, 2 norm. */
interface NativeRope {
  style: number;
  base: number;
  stepCos: Float64Array;
  stepSin: Float64Array;
  seeds: Float64Array;
}

interface NativeEncodeJob {
  kind: number;
  data: Uint16Array;
  rows: number;
  cols: number;
  tokenAxis: number;
  key: boolean;
  positions: Int32Array;
  ropes: NativeRope[];
  exactRows?: Uint32Array;
  gains?: Int8Array;
  step: number;
  segmentTokens: Uint32Array;
  segmentScales: Float64Array;
}

/** A tensor to encode and the policy's decisions for it (qpre.ts makes them). */
export interface TensorToEncode {
  kind: number;
  t: KvTensor;
  step: number;
  /** Oldest first, with their step scales; kind 1: bulk (scale 1) and recent. */
  segments: readonly { tokens: number; scale: number }[];
  /** Kinds 3 and 4 (sink tensors; 4: the wide rANS stream): sink rows (kept exact) and channel gain codes (empty: none). */
  exactRows?: readonly number[];
  gains?: Int8Array;
  ropes: readonly Rope[];
}

// Set when this process loaded the engine's addon (or a test or bench chose one), never from the
// environment alone: a process that never needed the addon does not load it for its codecs.
let path: string | undefined;
let addon: NativeKvCodecAddon | null | undefined;

/** Code with the addon at `addonPath` from now on (undefined: in JavaScript). */
export function useNativeKvCodec(addonPath: string | undefined): void {
  if (addonPath === path) return;
  path = addonPath;
  addon = undefined;
}

/** The addon path the codecs use, if any (passed on to the codec's worker thread). */
export const nativeKvCodecPath = (): string | undefined => path;

/** The addon when one is set and has kvDecode and kvEncode; loaded on first use. A set path that does not load throws. */
export function nativeKvCodec(): NativeKvCodecAddon | undefined {
  if (addon === undefined) {
    const loaded = path ? (createRequire(import.meta.url)(path) as Partial<NativeKvCodecAddon>) : undefined;
    addon = typeof loaded?.kvDecode === "function" && typeof loaded.kvEncode === "function" ? (loaded as NativeKvCodecAddon) : null;
  }
  return addon ?? undefined;
}

/** What qpre.ts's scaleChannels multiplies a channel by, per gain code (index code + 128): decoding, encoding. */
const GAINS = Float32Array.from({ length: 256 }, (_, i) => 2 ** ((-1 * (i - 128)) / 32));
const ENCODE_GAINS = Float32Array.from({ length: 256 }, (_, i) => 2 ** ((1 * (i - 128)) / 32));

const STYLE_AT = 9;
const BASE_AT = 10;

type RopeInputs = Required<Pick<NativeDecodeJob, "stepCos" | "stepSin" | "seeds">>;

/** RoPE inputs for a key tensor's rope (rope.ts's ropeTables computes the same seeds, then the recurrence). */
function ropeInputs(positions: Int32Array, dim: number, base: number): RopeInputs {
  const { theta, stepCos, stepSin } = ropeSteps(dim, base);
  const pairs = theta.length;
  const starts: number[] = [];
  for (let t = 0; t < positions.length; t++) if (!followsPrevious(positions, t)) starts.push(t);
  const seeds = new Float64Array(starts.length * 2 * pairs);
  starts.forEach((t, r) => {
    for (let i = 0; i < pairs; i++) {
      seeds[r * 2 * pairs + i] = Math.cos(positions[t]! * theta[i]!);
      seeds[r * 2 * pairs + pairs + i] = Math.sin(positions[t]! * theta[i]!);
    }
  });
  return { stepCos, stepSin, seeds };
}

/** RoPE inputs by tensor and base, computed once per cell positions (every key of a section shares them), dimension and base. */
function ropeCache(): (t: KvTensor, base: number) => RopeInputs {
  const inputs = new Map<string, RopeInputs>();
  const positionIds = new Map<Int32Array, number>();
  return (t, base) => {
    const dim = t.tokenAxis === 0 ? t.cols : t.rows;
    if (!positionIds.has(t.positions)) positionIds.set(t.positions, positionIds.size);
    const key = `${positionIds.get(t.positions)}/${dim}/${base}`;
    if (!inputs.has(key)) inputs.set(key, ropeInputs(t.positions, dim, base));
    return inputs.get(key)!;
  };
}

/** The F16 view a tensor decodes into: its bytes in the state, or a copy when they are not 2-aligned. */
function f16View(data: Buffer): Uint16Array {
  if (data.byteOffset % 2 === 0) return new Uint16Array(data.buffer, data.byteOffset, data.length / 2);
  return new Uint16Array(data.length / 2);
}

/** Decoder threads by default: the cores, at most 8. */
const DECODE_THREADS = Math.min(availableParallelism(), 8);

/** Decodes the tensors into their slots with the addon on `threads` threads (default: the cores, at most 8); throws on a corrupt body. */
export function decodeTensorsNatively(addon: NativeKvCodecAddon, tensors: readonly CodedTensor[], threads = DECODE_THREADS): void {
  const jobs = decodeJobs(tensors);
  addon.kvDecode(jobs, threads, GAINS);
  copyUnaligned(tensors, jobs);
}

/** decodeTensorsNatively on a worker thread (kvDecodeAsync; inline with an addon that lacks it): the event loop stays free while it runs. */
export async function decodeTensorsNativelyAsync(addon: NativeKvCodecAddon, tensors: readonly CodedTensor[], threads = DECODE_THREADS): Promise<void> {
  if (!addon.kvDecodeAsync) return decodeTensorsNatively(addon, tensors, threads);
  const jobs = decodeJobs(tensors);
  await addon.kvDecodeAsync(jobs, threads, GAINS);
  copyUnaligned(tensors, jobs);
}

/** The addon's jobs for the tensors: each decodes into its slot (or its strided target), or into a copy when that is not 2-aligned. */
function decodeJobs(tensors: readonly CodedTensor[]): NativeDecodeJob[] {
  const ropeOf = ropeCache();
  return tensors.map(({ kind, body, slot, into }): NativeDecodeJob => {
    const head = kind === 3 || kind === 4 ? 4 : 0;
    const style = body.length >= head + BASE_AT + 4 ? body[head + STYLE_AT]! : 0;
    // Assigned, not spread: one job per tensor of every block a load decodes (spreads cost V8 microseconds each).
    const job: NativeDecodeJob = { kind, body, out: f16View((into ?? slot).data), rows: slot.rows, cols: slot.cols, tokenAxis: slot.tokenAxis, positions: slot.positions };
    if (into) job.outStride = into.stride;
    if (style === 0) return job;
    const rope = ropeOf(slot, body.readFloatLE(head + BASE_AT));
    job.stepCos = rope.stepCos;
    job.stepSin = rope.stepSin;
    job.seeds = rope.seeds;
    return job;
  });
}

/** The outputs decoded into a copy (their slot was not 2-aligned) copied to their slot. */
function copyUnaligned(tensors: readonly CodedTensor[], jobs: readonly NativeDecodeJob[]): void {
  jobs.forEach((j, i) => {
    const data = (tensors[i]!.into ?? tensors[i]!.slot).data;
    if (j.out.buffer !== data.buffer) Buffer.from(j.out.buffer).copy(data);
  });
}

/** The tensor's F16 values: a view of its bytes, or a copy when they are not 2-aligned. */
function f16Values(data: Buffer): Uint16Array {
  if (data.byteOffset % 2 === 0) return new Uint16Array(data.buffer, data.byteOffset, data.length / 2);
  return new Uint16Array(Uint8Array.from(data).buffer);
}

/** Encodes the tensors with the addon on `threads` threads; each one's body, in order. */
export function encodeTensorsNatively(addon: NativeKvCodecAddon, tensors: readonly TensorToEncode[], threads = Math.min(availableParallelism(), 8)): Buffer[] {
  const ropeOf = ropeCache();
  const jobs = tensors.map(({ kind, t, step, segments, exactRows, gains, ropes: candidates }): NativeEncodeJob => {
    const key = t.kind === "k";
    return {
      kind,
      data: f16Values(t.data),
      rows: t.rows,
      cols: t.cols,
      tokenAxis: t.tokenAxis,
      key,
      positions: t.positions,
      ropes: key ? candidates.map((r) => ({ style: r.style === "neox" ? 1 : 2, base: r.base, ...ropeOf(t, r.base) })) : [],
      ...(exactRows && exactRows.length > 0 ? { exactRows: Uint32Array.from(exactRows) } : {}),
      ...(gains && gains.length > 0 ? { gains } : {}),
      step,
      segmentTokens: Uint32Array.from(segments, (s) => s.tokens),
      segmentScales: Float64Array.from(segments, (s) => s.scale),
    };
  });
  return addon.kvEncode(jobs, threads, ENCODE_GAINS);
}
