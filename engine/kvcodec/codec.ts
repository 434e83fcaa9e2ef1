/**
 * KV codecs: turn a llama.cpp sequence state into the payload of a stored entry and back.
 * Entries name their codec, so a store may change codec without invalidating what it holds.
 */
import { COMPACT_VARIANT, type KvCodec, type KvCodecName } from "./codec-names.ts";
import { INT8, LOSSLESS, QDELTA } from "./codecs.ts";
import { qpreCodec } from "./qpre.ts";
import { gemma3QueryGains } from "./query-gains.ts";
import { GEMMA3_270M_SINK, sensitivityPolicy } from "./qpre-policy.ts";
import { qransCodec, type QransPolicy } from "./qrans.ts";
import type { Rope } from "./rope.ts";

export type { KvCodec };

const none: KvCodec = { name: "none", encode: (s) => s, decode: (p) => p };

/**
 * Step policies measured on Gemma 3 270M (bench/kv-codec.ts, BENCHMARKS.md): the keys of the
 * first two full-attention layers are by far the most sensitive tensors (coarse steps there alone
 * cost more than everything else together), then the most recent tokens.
 */
function policy(sensitiveKeys: number, others: number, recentTokens: number, recentStep: number): QransPolicy {
  return {
    step: (t) => (t.kind === "k" && t.layers <= 3 ? (t.layer < 2 ? sensitiveKeys : Math.min(others, 0.5)) : others),
    recentTokens,
    recentStep,
  };
}

/** About 4x smaller than F16, next-token agreement near int8's. */
export const QRANS = qransCodec("qrans", policy(0.0625, 0.5, 128, 0.125));
/** At least 8x smaller than F16; measurably lossier (see BENCHMARKS.md). */
export const QRANS8 = qransCodec("qrans8", policy(0.125, 2, 32, 0.25));

/**
 * RoPE candidates for keys (the encoder keeps the one that leaves the channels least spread and
 * records it): Gemma 3's sliding-window layers use base 10,000, its global layers 1,000,000.
 */
export const ROPES: readonly Rope[] = [
  { style: "neox", base: 10_000 },
  { style: "neox", base: 1_000_000 },
  { style: "norm", base: 10_000 },
  { style: "norm", base: 500_000 },
];

/** Keys un-rotated, steps by measured sensitivity (qpre-policy.ts); the last 64 tokens 4x finer. */
export const QPRE = qpreCodec("qpre", { ropes: ROPES, policy: sensitivityPolicy(0.6, 64, 0.25) });
/** The same at least 8x smaller than F16; lossier (see BENCHMARKS.md). */
export const QPRE8 = qpreCodec("qpre8", { ropes: ROPES, policy: sensitivityPolicy(1.3, 64, 0.25) });

/** The qsink family: one transform, sizes by the step scale of sensitivityPolicy. */
function qsinkCodec(name: string, scale: number): KvCodec {
  return qpreCodec(name, { ropes: ROPES, policy: sensitivityPolicy(scale, 128, 0.5, GEMMA3_270M_SINK), sinkPositions: 1, gains: gemma3QueryGains });
}

/**
 * qpre8's size with about half its logit KL: the attention sink (position 0) exact, keys' channel
 * steps by the queries' energy (query-gains.ts), steps by sensitivities re-measured that way, the
 * last 128 tokens 2x finer (calibration texts; see BENCHMARKS.md for the held-out bench).
 */
export const QSINK8 = qsinkCodec("qsink8", 1.1);

/**
 * qsink8's transform at about 4x: the size at which it reaches the quality bar (greedy agreement
 * 0.993 mean on the bench's held-out texts, KL 0.0032, against the perturbation floor's 0.992 and
 * 0.0020; BENCHMARKS.md). The lossy mode for where stored bytes count and outputs must not move.
 */
export const QSINK4 = qsinkCodec("qsink4", 0.25);

/** How much finer than the rule the first two layers of each section are coded (keys, values). */
export interface EarlyLayers {
  keys: number;
  values: number;
}

/**
 * `compact`'s transform with no per-model table: the qsink transform (keys un-rotated by the RoPE
 * candidate that fits, the attention sink exact, per-channel steps, rANS) with one step rule for
 * every tensor of every model (no sensitivity table, no query gains: nothing measured on one
 * model), the last 128 tokens 2x finer, and the first two layers of each section of the state
 * finer still (`early`; null: not): an error there reaches every later layer. On Gemma 3 270M that is where
 * the measured table put most of the sensitivity; the rule needs only the layer index.
 * `scale` sets the size.
 */
export function compactCodec(name: string, scale: number, early: EarlyLayers | null = COMPACT_EARLY): KvCodec {
  const rule = sensitivityPolicy(scale, 128, 0.5, {});
  const policy: typeof rule = early ? (t) => ((p) => (t.layer < 2 ? { ...p, step: p.step * (t.kind === "k" ? early.keys : early.values) } : p))(rule(t)) : rule;
  return qpreCodec(name, { ropes: ROPES, policy, sinkPositions: 1 });
}

/** compact's first two layers: keys 4x and values 2x finer (bench:kv-codec: without it, no scale met the quality rule). */
export const COMPACT_EARLY: EarlyLayers = { keys: 0.25, values: 0.5 };
/** The step scale of `compact`: 4.05x smaller than f16 on the bench (BENCHMARKS.md). */
export const COMPACT_SCALE = 0.25;
/** What `compact` writes today; entries name it, so a later compact can change without breaking them. */
export const COMPACT = compactCodec("compact1", COMPACT_SCALE);

const codecs = new Map<string, KvCodec>([none, LOSSLESS, INT8, QDELTA, QRANS, QRANS8, QPRE, QPRE8, QSINK8, QSINK4, COMPACT].map((c) => [c.name, c]));

/**
 * What "default" means: none (raw f16). `compact` becomes the default only when it meets the
 * codec issue's goals (quality against the perturbation floor, native decoding, faster loads from
 * every tier: docs/kv-store.md); until then a lossy default would change outputs, and where it
 * decodes in JavaScript (no native addon: native-codec.ts) make a memory-tier load slower than
 * reading f16.
 */
export const DEFAULT_CODEC = "none";

/**
 * The codec a name stands for: a user's choice (none, lossless, compact, default), a research
 * codec's name, or the concrete name an entry carries (every codec ever written still decodes).
 */
export function kvCodec(name: KvCodecName | string): KvCodec {
  const concrete = name === "default" ? DEFAULT_CODEC : name === "compact" ? COMPACT.name : name;
  const codec = codecs.get(concrete);
  if (codec) return codec;
  const variant = COMPACT_VARIANT.exec(concrete);
  if (variant) return compactCodec(concrete, Number(variant[2]), variant[1] === "u" ? null : COMPACT_EARLY);
  throw new Error(`unknown KV codec ${name}`);
}
