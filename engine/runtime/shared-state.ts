/**
 * A native sequence's state through a shared region (engine/native/binding.ts SharedRegions): the
 * rows written into or read from the region by the addon, the headers through here. Called by
 * NativeSequence inside its scheduler's exclusive section. And a file-format state's import
 * (importFile), whose copies may move outside it.
 */
import type { NativeEngine } from "../native/binding.ts";
import type { LocalState, Token } from "./runtime.ts";
import type { StepScheduler } from "./step-scheduler.ts";

/**
 * LLMFLEET_IMPORT_OVERLAP=1: a state import's copies to the device leave the engine free for other
 * sequences' steps while they move (engine.cpp state_set_detached), instead of holding it until
 * they end (at 8 P/D streams on an H100, ~5.8 ms of stalled steps per hand-off; BENCHMARKS.md,
 * session 27). Off by default until measured on a GPU (bench:http pd's tcp-overlap).
 */
const IMPORT_OVERLAP = process.env.LLMFLEET_IMPORT_OVERLAP === "1";

/**
 * A file-format state into sequence `seq` (cleared first, `cleared` told), in the scheduler's
 * exclusive section; with IMPORT_OVERLAP its copies to the device are waited for after it, while
 * other sequences step. Resolves once the state is in the KV cache; `state` must stay as it is until then.
 */
export async function importFile(rt: { engine: NativeEngine; scheduler: StepScheduler }, seq: number, state: Buffer, cleared: () => void): Promise<void> {
  const { engine } = rt;
  const detached = IMPORT_OVERLAP && engine.stateSetFileDetached && engine.copiesDone;
  let ticket = 0;
  await rt.scheduler.exclusive(() => {
    engine.seqRm(seq, 0, -1);
    cleared();
    if (detached) ticket = engine.stateSetFileDetached!(seq, state);
    else engine.stateSetFile(seq, state);
  });
  if (ticket !== 0) await engine.copiesDone!(ticket);
}

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
