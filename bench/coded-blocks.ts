/**
 * A v2 entry's coded kv blocks decoded into its state as a load's BlockSink decodes them once they
 * have arrived: CODED_BATCH blocks per pass of the codec (StateJoiner.placeCodedMany), into
 * `alloc`'s buffer (default a fresh one). Shared by bench:kv-decode and bench:kv-link.
 */
import { CODED_BATCH } from "../engine/kvstore/block-sink.ts";
import type { KvBlockCodec } from "../engine/kvstore/kv-block-layout.ts";
import { StateJoiner } from "../engine/kvstore/kv-blocks.ts";

export function joinCodedBlocks(
  entry: { meta: Buffer; blocks: readonly Buffer[]; blockTokens: number },
  codec: KvBlockCodec,
  alloc?: (bytes: number) => Buffer,
): Buffer {
  const { meta, blocks, blockTokens } = entry;
  const j = new StateJoiner(meta, blockTokens, false, alloc);
  for (let k = 0; k < blocks.length; k += CODED_BATCH) {
    j.placeCodedMany(
      blocks.slice(k, k + CODED_BATCH).map((coded, x) => ({ i: k + x, coded })),
      codec,
    );
  }
  return j.finish();
}
