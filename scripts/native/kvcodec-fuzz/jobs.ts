/**
 * Writes the corpus of scripts/native/kvcodec-fuzz.sh: the coded tensors of compact, qsink4 and
 * qpre entries and compact2b's wide-stream tensors (kind 4) of a synthetic Gemma-shaped state
 * (testing/kv-state.ts), each with what the native decoder is handed (shape, positions, RoPE inputs as native-codec.ts computes them).
 * Record: kind, rows, cols, token axis, body length (u32 each) | body | positions i32[tokens] |
 * pairs u32 | step cos f64[pairs] | step sin f64[pairs] | seed rows u32 | seeds f64[rows * 2 * pairs].
 */
import { writeFileSync } from "node:fs";
import { kvCodec, ROPES } from "../../../engine/kvcodec/codec.ts";
import { encodeSinkTensor, rebuildState, WIDE_SINK_CODED, type QpreOptions } from "../../../engine/kvcodec/qpre.ts";
import { isTensor, splitState as stateParts, type KvTensor } from "../../../engine/kvcodec/state-tensors.ts";
import { followsPrevious, ropeSteps } from "../../../engine/kvcodec/rope.ts";
import { syntheticSeqState } from "../../../testing/kv-state.ts";

const u32 = (...vs: number[]): Buffer => Buffer.from(Uint32Array.from(vs).buffer);
const out: Buffer[] = [];

/** RoPE seeds of the tokens that do not follow their predecessor (native-codec.ts's ropeInputs). */
function seedsOf(slot: KvTensor, rope: ReturnType<typeof ropeSteps> | undefined): { starts: number[]; seeds: Float64Array } {
  const tokens = slot.tokenAxis === 0 ? slot.rows : slot.cols;
  const pairs = rope?.theta.length ?? 0;
  const starts = rope ? [...Array(tokens).keys()].filter((t) => !followsPrevious(slot.positions, t)) : [];
  const seeds = new Float64Array(starts.length * 2 * pairs);
  starts.forEach((t, r) => {
    for (let i = 0; i < pairs; i++) {
      seeds[r * 2 * pairs + i] = Math.cos(slot.positions[t]! * rope!.theta[i]!);
      seeds[r * 2 * pairs + pairs + i] = Math.sin(slot.positions[t]! * rope!.theta[i]!);
    }
  });
  return { starts, seeds };
}

/** One job's record: what the native decoder is handed for a coded tensor. */
function record(kind: number, body: Buffer, slot: KvTensor): void {
  const dim = slot.tokenAxis === 0 ? slot.cols : slot.rows;
  // Sink tensors (kinds 3 and 4) lead with their coded length.
  const head = kind === 1 ? 0 : 4;
  const rope = body[head + 9] ? ropeSteps(dim, body.readFloatLE(head + 10)) : undefined;
  const { starts, seeds } = seedsOf(slot, rope);
  const none = new Float64Array(0);
  out.push(u32(kind, slot.rows, slot.cols, slot.tokenAxis, body.length), body, Buffer.from(Int32Array.from(slot.positions).buffer), u32(rope ? rope.theta.length : 0));
  out.push(Buffer.from((rope ? rope.stepCos : none).buffer), Buffer.from((rope ? rope.stepSin : none).buffer), u32(starts.length), Buffer.from(seeds.buffer));
}

for (const [name, vTransposed] of [
  ["compact", true],
  ["qsink4", true],
  ["qpre", false],
] as const) {
  const { coded } = rebuildState(kvCodec(name).encode(syntheticSeqState({ tokens: 150, gap: 3, vTransposed })));
  for (const { kind, body, slot } of coded) record(kind, body, slot);
}
// compact2b's tensors (kind 4: the wide rANS stream; 150 tokens of 256 channels take its 32 lanes).
const wide: QpreOptions = { ropes: ROPES, sinkPositions: 1, wide: true, policy: () => ({ step: 0.2, recentTokens: 0, recentScale: 0.5 }) };
for (const t of stateParts(syntheticSeqState({ tokens: 150, gap: 3, vTransposed: true })).filter(isTensor)) record(WIDE_SINK_CODED, encodeSinkTensor(t, wide), t);
writeFileSync(process.argv[2]!, Buffer.concat(out));
