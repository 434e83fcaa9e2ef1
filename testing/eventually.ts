// Retry an async assertion until it passes: the way integration tests wait for controllers,
// kwok and the scheduler to converge without fixed sleeps.
import { setTimeout as sleep } from "node:timers/promises";

export interface EventuallyOptions {
  /** Give up after this long. Default 30 s: a loaded 2-core CI box is slow to converge. */
  timeoutMs?: number;
  /** Pause between attempts. Default 250 ms. */
  intervalMs?: number;
  /** Prefix of the timeout error, saying what was awaited. */
  message?: string;
}

/**
 * Calls `fn` until it returns without throwing and resolves to its value. On timeout, throws an
 * error naming `message`, the attempt count and the last failure (also attached as `cause`).
 * Every attempt runs to completion: an attempt in flight at the deadline is not abandoned.
 */
export async function eventually<T>(fn: () => T | Promise<T>, opts: EventuallyOptions = {}): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const intervalMs = opts.intervalMs ?? 250;
  const deadline = Date.now() + timeoutMs;
  let attempts = 0;
  for (;;) {
    attempts++;
    try {
      return await fn();
    } catch (err) {
      if (Date.now() + intervalMs > deadline) {
        const last = err instanceof Error ? err.message : String(err);
        const what = opts.message ?? "condition";
        throw new Error(`${what}: still failing after ${timeoutMs} ms (${attempts} attempts): ${last}`, { cause: err });
      }
    }
    await sleep(intervalMs);
  }
}
