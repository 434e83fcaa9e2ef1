/**
 * A write's state cut into its v2 entry's meta block and kv blocks (kv-blocks.ts), off the event
 * loop either way: raw blocks of a state of exactly the entry's tokens (a pod's write-back exports
 * just those) are gathered by the addon on a worker thread with their checksums (kvGather: one
 * copy, into a pool block); coded blocks, and states that must be cut first, go to the codec
 * worker (a copy of the state made for it on the event loop a slice at a time, then the split
 * there). On an H100 host the second way kept the event loop of a pod writing back a 1 GB state
 * busy enough that a request arriving meanwhile took 165 ms longer, though the export itself held
 * the engine for 19 ms. Either way the blocks are a copy: `state` is not read once this returns.
 */
import { OFFLOAD_MIN_BYTES, splitKvBlocks } from "../kvcodec/codec-offload.ts";
import { seqStateTokens } from "../runtime/seq-state.ts";
import type { KvStreamAddon } from "../pd/kv-transport.ts";
import { splitRuns, type SplitState } from "./kv-blocks.ts";

export interface SplitForWrite {
  split: SplitState;
  /** Per entry block (the meta block first): its stored bytes' CRC-32C where already taken, else undefined. */
  crcs: (number | undefined)[];
  /** Gives the blocks' memory back (a pool block) once no send reads them any more. */
  release: () => void;
}

export async function splitForWrite(
  state: Buffer,
  to: { keys: readonly string[]; config: { blockTokens: number }; codec: string },
  how: { addon: KvStreamAddon | undefined; sealed: boolean },
): Promise<SplitForWrite> {
  const { blockTokens } = to.config;
  const tokens = to.keys.length * blockTokens;
  const gather = how.addon?.kvGather;
  if (gather && to.codec === "none" && state.length >= OFFLOAD_MIN_BYTES && seqStateTokens(state).length === tokens) {
    const { runs, blockEnds, ...layout } = splitRuns(state, blockTokens);
    const { data, crcs } = await gather(state, runs, blockEnds.at(-1)!, blockEnds);
    const blocks = Array.from(blockEnds, (end, i) => data.subarray(i === 0 ? 0 : blockEnds[i - 1]!, end));
    return {
      split: { ...layout, blocks, buffer: data },
      // Of the raw blocks: sealed ones are checksummed as sealed, later.
      crcs: how.sealed ? [] : [undefined, ...crcs],
      release: () => how.addon?.kvRelease?.(data),
    };
  }
  const split = await splitKvBlocks(state, { tokens, blockTokens, codec: to.codec });
  return { split, crcs: [], release: () => undefined };
}
