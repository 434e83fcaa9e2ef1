/**
 * A hand-off in parts (--kv-part-tokens): the prefill pod computes the prompt a part at a time and
 * sends each part's KV over TCP while it computes the next, so that once the prompt is done only
 * the last part's transfer is left (the "tail"), not the whole state's. Each part is its own TCP
 * hand-off, `<id>~<k>`, with its index and the part count in its JSON; the decode pod takes them
 * all at the generate call and joins them into one sequence (RuntimeSequence.importParts: the
 * unified KV shares cells, no copy). Only where both pods can: the prefill pod's sequences export
 * ranges, the decode pod says `parts` at /internal/kv-transport, no RAG documents; else the whole
 * state goes after the prompt, as before.
 */
import { identityHeaders } from "../access/identity.ts";
import type { PreparedRequest } from "../serving/completion-service.ts";
import type { HandoffDeps, PrefillResponse } from "./handoff-routes.ts";
import { handoffHeader, hostOf, sendTcp, tcpTarget, type Sent, type TcpTarget } from "./tcp-handoff.ts";

/** The decode pod's TCP target when this hand-off can go in parts there, else undefined (the whole state after the prompt). */
export async function partsTarget(deps: HandoffDeps, decodeUrl: string, prepared: PreparedRequest, bounds: readonly number[]): Promise<TcpTarget | undefined> {
  if (bounds.length < 2 || deps.transport === "http" || !deps.service.canPrefillInParts(prepared)) return undefined;
  const target = await tcpTarget(decodeUrl, identityHeaders(deps.fleetToken?.()));
  return typeof target !== "string" && target.info.parts ? target : undefined;
}

/** Part 0's pod, addressed directly: behind a Service the later parts must reach the pod that staged part 0. */
function stagingPod(t: TcpTarget, stagedUrl: string): TcpTarget {
  if (stagedUrl === t.base) return t;
  return { ...t, base: stagedUrl, host: hostOf(stagedUrl) };
}

/**
 * The prompt computed a part at a time (CompletionService.prefillParts), each part sent over TCP
 * as soon as it is computed and while the next one computes, one after another (part 0 first: it
 * names the pod the others go to). A part that fails stops the computation and fails the hand-off.
 */
export async function prefillInParts(
  deps: HandoffDeps,
  t: TcpTarget,
  job: { prepared: PreparedRequest; handoffId: string; bounds: readonly number[]; signal: AbortSignal },
): Promise<PrefillResponse> {
  const { service, metrics } = deps;
  const { prepared, handoffId, bounds, signal } = job;
  const stop = new AbortController();
  const both = AbortSignal.any([signal, stop.signal]);
  const header = handoffHeader(service, prepared, handoffId, 0);
  let chain: Promise<{ first?: Sent; pod: TcpTarget; seconds: number }> = Promise.resolve({ pod: t, seconds: 0 });
  let bytes = 0;
  const onPart = (index: number, state: Buffer, reused: number): void => {
    bytes += state.length;
    header.cachedTokens = reused;
    chain = chain.then(async (sofar) => {
      const sent = await sendTcp(deps, sofar.pod, { ...header, part: { index, parts: bounds.length } }, state);
      return { first: sofar.first ?? sent, pod: index === 0 ? stagingPod(t, sent.stagedUrl) : sofar.pod, seconds: sofar.seconds + sent.seconds };
    });
    chain.catch(() => stop.abort()); // handled now; the error itself is awaited below
  };
  const t0 = performance.now();
  let done: { prefixHitTokens: number; exportMs: number };
  try {
    done = await service.prefillParts(prepared, both, bounds, onPart);
  } catch (err) {
    await chain; // a failed part is the cause: its error, not the abort's
    throw err;
  }
  const t1 = performance.now();
  try {
    const sent = await chain;
    metrics.handoffs.inc({ path: "tcp", outcome: "ok" });
    metrics.handoffBytes.observe(bytes);
    metrics.handoffSeconds.observe({ stage: "export" }, done.exportMs / 1000);
    metrics.handoffSeconds.observe({ stage: "send" }, sent.seconds);
    // What is left of the hand-off once the prompt is computed: the last part's transfer.
    metrics.handoffSeconds.observe({ stage: "tail" }, (performance.now() - t1) / 1000);
    const out: PrefillResponse = {
      handoffId,
      decodeUrl: sent.first!.stagedUrl,
      promptTokens: prepared.prompt.length,
      prefixHitTokens: done.prefixHitTokens,
      stateBytes: bytes,
      prefillMs: t1 - t0,
      exportMs: done.exportMs,
      sendMs: performance.now() - t1,
      streams: sent.first!.streams,
      parts: bounds.length,
      path: "tcp",
    };
    return out;
  } catch (err) {
    metrics.handoffs.inc({ path: "tcp", outcome: "error" });
    throw err;
  }
}

