/**
 * A kv block as a state of its own cells (block-parts.ts): every part parses as llama.cpp's state
 * grammar, holds the block's positions, and each cell's rows are the original state's rows of that
 * position — for Gemma-shaped states with a sliding-window section (blocks before the window hold
 * none of its cells), a wrapped ring buffer (cells out of position order), and transposed V.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { syntheticSeqState, type SyntheticStateOptions } from "../../testing/kv-state.ts";
import { isSeg, parse, type Parsed } from "./kv-block-layout.ts";
import { splitState } from "./kv-blocks.ts";
import { PartJoiner } from "./block-parts.ts";

/** Per row segment: each position's rows (K/V: a row; transposed V: its column, element by element). */
function rowsByPosition(buf: Buffer): Map<number, Buffer>[] {
  const parsed: Parsed = parse(buf, true);
  return parsed.items.filter(isSeg).map((seg) => {
    const positions = parsed.parts[seg.part]!.positions;
    const cells = positions.length;
    const out = new Map<number, Buffer>();
    positions.forEach((pos, c) => {
      if (seg.kind !== "vt") return void out.set(pos, buf.subarray(seg.offset + c * seg.unit, seg.offset + (c + 1) * seg.unit));
      const col = Buffer.alloc(seg.nEmbd * seg.unit);
      for (let e = 0; e < seg.nEmbd; e++) buf.copy(col, e * seg.unit, seg.offset + (e * cells + c) * seg.unit, seg.offset + (e * cells + c + 1) * seg.unit);
      out.set(pos, col);
    });
    return out;
  });
}

/** Part b written as the load writes it: the fixed pieces, then the runs copied from the block. */
function partOf(j: PartJoiner, b: number, block: Buffer): { buf: Buffer; from: number; to: number } {
  const lay = j.part(b);
  const buf = Buffer.alloc(lay.bytes, 0xee);
  for (const f of lay.fixed) f.data.copy(buf, f.at);
  for (let k = 0; k < lay.runs.length; k += 3) block.copy(buf, lay.runs[k + 1]!, lay.runs[k]!, lay.runs[k]! + lay.runs[k + 2]!);
  return { buf, from: lay.from, to: lay.to };
}

const SHAPES: [string, SyntheticStateOptions][] = [
  ["one full-attention section", { tokens: 96, sections: [2], channels: 8 }],
  ["Gemma-shaped: a sliding window of 40 cells", { tokens: 96, channels: 8, windows: [0, 40] }],
  ["a wrapped ring buffer, transposed V", { tokens: 96, channels: 8, windows: [0, 40], rings: [0, 17], vTransposed: true }],
];

for (const [name, shape] of SHAPES) {
  test(`each kv block as a state of its own cells: ${name}`, () => {
    const state = syntheticSeqState(shape);
    const split = splitState(state, 32);
    const j = PartJoiner.for(split.meta, 32);
    assert.equal(j.blocks, split.blocks.length);
    const want = rowsByPosition(state);
    const covered = want.map(() => new Set<number>());
    split.blocks.forEach((block, b) => {
      assert.equal(block.length, j.size(b));
      const { buf, from, to } = partOf(j, b, block);
      assert.deepEqual([from, to], [32 * b, 32 * b + 32]);
      const parsed = parse(buf, true); // the whole grammar, to the last byte
      assert.equal(parsed.tokens, 32);
      assert.deepEqual([...buf.subarray(12, 12 + 4 * 32)], [...state.subarray(12 + 4 * from, 12 + 4 * to)], "the block's tokens");
      const got = rowsByPosition(buf);
      // A stream without cells in this block is absent from the part's parsed segments.
      const segsOf = parse(state, true).items.filter(isSeg);
      let gi = 0;
      segsOf.forEach((_, si) => {
        const inBlock = [...want[si]!.keys()].filter((p) => p >= from && p < to);
        if (inBlock.length === 0) return;
        const part = got[gi++]!;
        assert.deepEqual([...part.keys()].sort((x, y) => x - y), inBlock.sort((x, y) => x - y), `segment ${si}: the block's positions, in position order`);
        for (const pos of inBlock) {
          assert.ok(part.get(pos)!.equals(want[si]!.get(pos)!), `segment ${si}, position ${pos}`);
          covered[si]!.add(pos);
        }
      });
      assert.equal(gi, got.length, "no segment beyond the state's");
    });
    want.forEach((rows, si) => assert.equal(covered[si]!.size, rows.size, `every cell of segment ${si} is in some part`));
  });
}
