/**
 * Parts of a state joined into a sequence through the scratch sequence (unified KV: the cells are
 * shared, not copied): a P/D hand-off sent in parts, a KV store load's blocks as they arrive.
 */
import type { NativeEngine } from "../native/binding.ts";
import type { PlacedPart } from "./runtime.ts";

/** Each part into `scratch`, then its cells shared with `seq` (which keeps its own); `scratch` is left empty. Call within one exclusive engine call. */
export function partsInto(e: Pick<NativeEngine, "seqRm" | "stateSetFile" | "seqCp">, scratch: number, seq: number, parts: readonly PlacedPart[]): void {
  try {
    for (const part of parts) {
      e.seqRm(scratch, -1, -1);
      e.stateSetFile(scratch, part.state);
      e.seqCp(scratch, seq, part.from, part.to);
    }
  } finally {
    e.seqRm(scratch, -1, -1);
  }
}
