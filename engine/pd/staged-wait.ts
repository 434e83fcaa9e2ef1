/**
 * Decode side of a hand-off whose first token went ahead of its state (handoff-routes.ts,
 * firstTokenAhead): the generate call arrives while the state is still on the wire, sends the
 * prefill pod's first token at once and waits here for the state to be staged. It ends one of three ways: the state is
 * staged (imported behind the first token, as before); the prefill pod says its send failed
 * (POST /internal/handoff-failed/:id); or AWAIT_STATE_MS pass. In the last two the decode pod
 * computes the prompt itself (CompletionService), so the client loses nothing but time.
 */

import { identityHeaders } from "../access/identity.ts";

/** How long a generate call waits for a state still on its way before computing the prompt here. */
export const AWAIT_STATE_MS = 10_000;

/** Failure notices are kept this long: one may come before the generate call it is for. */
const NOTICE_TTL_MS = 60_000;

export type StagedWaitReason = "timeout" | "failed" | "mismatch" | "cancelled";

export class StagedWaitError extends Error {
  constructor(
    readonly reason: StagedWaitReason,
    message: string,
  ) {
    super(message);
  }
}

/** The prefill pods' notices of sends that failed after they answered, by hand-off id. */
export class SendFailures {
  private readonly notices = new Map<string, { why: string; at: number }>();

  add(id: string, why: string): void {
    const now = performance.now();
    for (const [k, n] of this.notices) if (now - n.at > NOTICE_TTL_MS) this.notices.delete(k);
    this.notices.set(id, { why, at: now });
  }

  /** The notice for `id`, taken (each is read once), or undefined. */
  take(id: string): string | undefined {
    const n = this.notices.get(id);
    this.notices.delete(id);
    return n?.why;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `take` (the HTTP store and the native listener's staged states: a map lookup each) until
 * it returns the state, the prefill pod's failure notice for `id` arrives, `timeoutMs` pass or
 * `signal` aborts. Every millisecond at first (a state usually lands within tens of them), then
 * every 5 ms.
 */
export async function awaitStaged<T>(
  id: string,
  take: () => T | undefined,
  failures: SendFailures,
  opts: { timeoutMs: number; signal: AbortSignal },
): Promise<T> {
  const t0 = performance.now();
  for (;;) {
    const staged = take();
    if (staged !== undefined) return staged;
    const why = failures.take(id);
    if (why !== undefined) throw new StagedWaitError("failed", `the prefill pod's send of ${id} failed: ${why}`);
    if (opts.signal.aborted) throw new StagedWaitError("cancelled", "the client went away");
    const waited = performance.now() - t0;
    if (waited >= opts.timeoutMs) throw new StagedWaitError("timeout", `no state ${id} staged within ${opts.timeoutMs} ms`);
    await sleep(waited < 200 ? 1 : 5);
  }
}

/**
 * Prefill side: a hand-off that failed after its first token went ahead (handoff-routes.ts
 * sendBehind, the local path's stage call) is logged and told to the decode pod, whose generate
 * call then computes the prompt rather than wait out AWAIT_STATE_MS.
 */
export function failedBehind(fleetToken: string | undefined, f: { decodeUrl: string; handoffId: string; what: string; message: string }): void {
  console.error(`llmfleet: ${f.what} ${f.handoffId} to ${f.decodeUrl} failed after its first token went ahead (the decode pod computes the prompt): ${f.message}`);
  fetch(`${f.decodeUrl}/internal/handoff-failed/${encodeURIComponent(f.handoffId)}`, {
    method: "POST",
    headers: { ...identityHeaders(fleetToken), "content-type": "application/json" },
    body: JSON.stringify({ message: f.message }),
    signal: AbortSignal.timeout(5_000),
  }).catch(() => undefined); // unreachable: its wait times out instead
}
