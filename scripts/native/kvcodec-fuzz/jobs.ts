/**
 * Writes the corpus of scripts/native/kvcodec-fuzz.sh: the coded tensors of compact, qsink4 and
 * qpre entries of a synthetic Gemma-shaped state (testing/kv-state.ts), each with what the native
 * decoder is handed (shape, positions, RoPE inputs as native-codec.ts computes them).
 * Record: kind, rows, cols, token axis, body length (u32 each) | body | positions i32[tokens] |
 * pairs u32 | step cos f64[pairs] | step sin f64[pairs] | seed rows u32 | seeds f64[rows * 2 * pairs].
 */
import { writeFileSync } from "node:fs";
import { kvCodec } from "../../../engine/kvcodec/codec.ts";
import { rebuildState } from "../../../engine/kvcodec/qpre.ts";
import { followsPrevious, ropeSteps } from "../../../engine/kvcodec/rope.ts";
import { syntheticSeqState } from "../../../testing/kv-state.ts";

const u32 = (...vs: number[]): Buffer => Buffer.from(Uint32Array.from(vs).buffer);
const out: Buffer[] = [];
for (const [name, vTransposed] of [
  ["compact", true],
  ["qsink4", true],
  ["qpre", false],
] as const) {
  const { coded } = rebuildState(kvCodec(name).encode(syntheticSeqState({ tokens: 150, gap: 3, vTransposed })));
  for (const { kind, body, slot } of coded) {
    const tokens = slot.tokenAxis === 0 ? slot.rows : slot.cols;
    const dim = slot.tokenAxis === 0 ? slot.cols : slot.rows;
    const head = kind === 3 ? 4 : 0;
    const rope = body[head + 9] ? ropeSteps(dim, body.readFloatLE(head + 10)) : undefined;
    const pairs = rope?.theta.length ?? 0;
    const starts = rope ? [...Array(tokens).keys()].filter((t) => !followsPrevious(slot.positions, t)) : [];
    const seeds = new Float64Array(starts.length * 2 * pairs);
    starts.forEach((t, r) => {
      for (let i = 0; i < pairs; i++) {
        seeds[r * 2 * pairs + i] = Math.cos(slot.positions[t]! * rope!.theta[i]!);
        seeds[r * 2 * pairs + pairs + i] = Math.sin(slot.positions[t]! * rope!.theta[i]!);
      }
    });
    out.push(u32(kind, slot.rows, slot.cols, slot.tokenAxis, body.length), body, Buffer.from(Int32Array.from(slot.positions).buffer), u32(pairs));
    out.push(
      Buffer.from((rope?.stepCos ?? new Float64Array(0)).buffer),
      Buffer.from((rope?.stepSin ?? new Float64Array(0)).buffer),
      u32(starts.length),
      Buffer.from(seeds.buffer),
    );
  }
}
writeFileSync(process.argv[2]!, Buffer.concat(out));
