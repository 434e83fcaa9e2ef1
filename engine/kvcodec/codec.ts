/**
 * KV codecs: turn a llama.cpp sequence state into the payload of a stored entry and back.
 * Entries name their codec, so a store may change codec without invalidating what it holds.
 */
import type { KvCodec, KvCodecName } from "./codec-names.ts";
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

const codecs = new Map<string, KvCodec>([none, LOSSLESS, INT8, QDELTA, QRANS, QRANS8, QPRE, QPRE8, QSINK8, QSINK4].map((c) => [c.name, c]));

/**
 * What "default" means: none (raw f16). No lossy mode reaches the goal (≥8x smaller with greedy
 * agreement ≥0.99 — bench/results/kv-codec.json: qsink8 8.3x at 0.974, qsink4 4.1x at 0.993; the
 * bench's perturbation floor, one F16 ulp flipped in 0.01 % of the cache, is 0.992), and decoding
 * in JavaScript makes a memory-tier load slower than reading f16, so a lossy default would change
 * outputs and slow loads. The lossy modes are opt-in where stored bytes or the network count.
 */
export const DEFAULT_CODEC = "none";

export function kvCodec(name: KvCodecName | string): KvCodec {
  const codec = codecs.get(name === "default" ? DEFAULT_CODEC : name);
  if (!codec) throw new Error(`unknown KV codec ${name}`);
  return codec;
}
