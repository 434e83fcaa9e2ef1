/**
 * Decode role: a prefill pod's state into the sequence a generate call leased — whole, in parts,
 * or from a shared region (pd/local-handoff.ts) — and, when its first token went ahead of it, once
 * it is staged (or the prompt computed here when it never comes).
 */
import type { EngineMetrics } from "../metrics/engine-metrics.ts";
import type { ModelRuntime, RuntimeSequence, Token } from "../runtime/runtime.ts";
import type { GenerateOptions, HandOffState, ImportedLocal } from "./completion-service.ts";

interface ImportDeps {
  runtime: ModelRuntime;
  metrics: EngineMetrics;
}

/** The prefill pod's state into the sequence; false when there is none. */
export async function importHandOff(deps: ImportDeps, seq: RuntimeSequence, opts: HandOffState): Promise<boolean> {
  if (opts.importedState === undefined && opts.importedParts === undefined && opts.importedLocal === undefined) return false;
  const t0 = performance.now();
  if (opts.importedLocal) await importLocal(seq, opts.importedLocal);
  else await importHostState(deps, seq, opts);
  deps.metrics.handoffSeconds.observe({ stage: "import" }, (performance.now() - t0) / 1000);
  return true;
}

/** A state received into host memory (whole or in parts) into the sequence, its blocks back to the pool after. */
async function importHostState(deps: ImportDeps, seq: RuntimeSequence, opts: HandOffState): Promise<void> {
  if (opts.importedParts) {
    if (!seq.importParts) throw new Error("this runtime cannot import a hand-off in parts");
    await seq.importParts(opts.importedParts);
  } else {
    await seq.clear();
    await seq.importState(opts.importedState!);
  }
  // On the device now: the received blocks can take the next hand-off.
  for (const state of opts.importedParts ?? [opts.importedState!]) deps.runtime.releaseState?.(state);
}

/**
 * The first token ahead of its state: the state once staged, imported; or, when it never comes
 * (the prefill pod's send failed, the wait timed out, it is of other tokens), the prompt computed
 * here. Resolves to the prompt tokens the answer reused.
 */
export async function importWhenStaged(deps: ImportDeps, seq: RuntimeSequence, w: { prompt: readonly Token[]; opts: GenerateOptions }): Promise<number> {
  let staged: HandOffState;
  try {
    staged = await w.opts.stagedLater!;
  } catch (err) {
    if (w.opts.signal.aborted) throw err;
    deps.metrics.handoffFailures.inc({ reason: `await_${(err as { reason?: string }).reason ?? "error"}` });
    return seq.evaluatePrefix(w.prompt);
  }
  await importHandOff(deps, seq, staged);
  return staged.importedCachedTokens ?? 0;
}

/** A staged state from a shared region into the sequence; the region goes back to its pool either way. */
async function importLocal(seq: RuntimeSequence, l: ImportedLocal): Promise<void> {
  try {
    if (!seq.importStateFrom) throw new Error("this runtime cannot import a state from a shared region");
    await seq.importStateFrom(l.region, l.state);
  } finally {
    l.done();
  }
}
