/**
 * A native sequence's state through a shared region (engine/native/binding.ts SharedRegions): the
 * rows written into or read from the region by the addon, the headers through here. Called by
 * NativeSequence inside its scheduler's exclusive section.
 */
import type { NativeEngine } from "../native/binding.ts";
import type { LocalState, Token } from "./runtime.ts";

export function sharedStateSize(e: NativeEngine, seq: number): number {
  if (!e.stateSizeOf) throw new Error("this addon cannot size a state");
  return e.stateSizeOf(seq);
}

export async function exportShared(e: NativeEngine, seq: number, held: readonly Token[], region: number): Promise<LocalState> {
  if (!e.stateGetShared) throw new Error("this addon cannot export a state into a shared region");
  return { tokens: [...held], ...(await e.stateGetShared(seq, region)) };
}

/** The state into the sequence (cleared first); on any failure the sequence is left empty and the error thrown. */
export async function importShared(e: NativeEngine, seq: number, region: number, state: LocalState): Promise<void> {
  if (!e.stateSetShared) throw new Error("this addon cannot import a state from a shared region");
  e.seqRm(seq, 0, -1);
  try {
    await e.stateSetShared(seq, region, state.size, state.meta, state.rows);
  } catch (err) {
    e.seqRm(seq, 0, -1); // what the failed read left
    throw err;
  }
  const held = e.seqPosMax(seq) + 1;
  if (held !== state.tokens.length) {
    e.seqRm(seq, 0, -1);
    throw new Error(`the imported state holds ${held} positions, not the ${state.tokens.length} tokens it names`);
  }
}
