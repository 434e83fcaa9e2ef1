/**
 * P/D's first token from the prefill pod. The prefill pod computes the whole prompt anyway; when it
 * also samples the answer's first token (as an aggregated pod would) and passes it along with the
 * hand-off, the decode pod sends that token to the client at once and imports the KV state behind
 * it: the state's import and the decode step that would have made that token are out of the time to
 * first token (they show in the gap to the second token instead).
 *
 * Only where the token is the same as the decode pod would have sampled and nothing it leaves in
 * the sampler matters afterwards: no grammar (its parse state), no presence or frequency penalty (the
 * generated-token history), no logprobs (they would be the prefill pod's), and no seed with a
 * temperature above 0 (a seeded answer stays the one an aggregated pod gives for that seed). Other
 * requests hand off the prompt but its last token, as before.
 */
import type { RuntimeSequence, Sampling, Token } from "../runtime/runtime.ts";
import type { PreparedRequest } from "./completion-service.ts";
import type { SequenceLease } from "./sequence-pool.ts";

/** Whether a request's first token may be sampled on the prefill pod (see above). */
export function firstTokenEligible(s: Sampling): boolean {
  if (s.grammar || s.logprobs !== undefined) return false;
  if ((s.presencePenalty ?? 0) !== 0 || (s.frequencyPenalty ?? 0) !== 0) return false;
  return !(s.seed !== undefined && s.temperature > 0);
}

/** The tokens of an answer whose first token is known: it, then what `rest` generates once called (never, if the consumer stops at the first). */
export async function* withFirst(first: Token, rest: () => Promise<AsyncGenerator<Token, void, void>>): AsyncGenerator<Token, void, void> {
  yield first;
  yield* await rest();
}

/** The answer's first token sampled after the prompt's last; the sequence keeps the prompt, the token is not evaluated. Undefined when the context has no room. */
export async function sampleFirst(seq: RuntimeSequence, req: PreparedRequest): Promise<Token | undefined> {
  for await (const token of seq.generate(req.prompt.slice(-1), req.parsed.sampling, () => undefined, 1)) return token;
  return undefined;
}

/** The leased sequence's state exported, the lease given back once it is (the caller handles a failure). */
export function exportThenRelease(lease: SequenceLease): Promise<{ state: Buffer; exportMs: number }> {
  const exported = (async (): Promise<{ state: Buffer; exportMs: number }> => {
    try {
      const t0 = performance.now();
      const state = await lease.sequence.exportState();
      return { state, exportMs: performance.now() - t0 };
    } finally {
      lease.release();
    }
  })();
  exported.catch(() => undefined); // never an unhandled rejection: the caller awaits it
  return exported;
}
