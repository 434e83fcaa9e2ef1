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

/**
 * A document's own state into `scratch`, its lead dropped, moved to `at` (llama.cpp re-rotates the
 * keys on the next decode), its cells shared with `seq` up to `keep` (the unified KV: no copy);
 * false when the sequence could not go on from `keep` (nothing joined). Call within one exclusive
 * engine call (NativeRuntime.moveIn).
 */
export function moveIn(
  e: Pick<NativeEngine, "seqRm" | "stateSetFile" | "seqCp" | "seqAdd" | "seqPosMax">,
  scratch: number,
  seq: number,
  to: { state: Buffer; lead: number; at: number; keep: number },
): boolean {
  e.seqRm(scratch, -1, -1);
  e.stateSetFile(scratch, to.state);
  if (to.lead > 0) e.seqRm(scratch, 0, to.lead);
  if (!e.seqAdd(scratch, to.lead, -1, to.at - to.lead)) {
    e.seqRm(scratch, -1, -1);
    throw new Error("this model's KV cannot be moved to other positions (no RoPE shift)");
  }
  e.seqCp(scratch, seq, to.at, to.keep);
  e.seqRm(scratch, -1, -1);
  // A sliding-window layer's cache keeps only its last window of a state: a document cut before
  // its own last window has no such cells at the cut, and the sequence could not go on from
  // there. Then nothing of it is joined (the caller computes it in place).
  if (e.seqPosMax(seq) === to.keep - 1) return true;
  e.seqRm(seq, to.at, -1);
  return false;
}
