/**
 * A pod's KV store loads before its write-backs. A load is on a request's path (its time to first
 * token); a write-back is not, yet both move GBs between the pod and the store over the same host,
 * and on an H100 host a 1 GB load that ran while the pod's own write-back of the previous request
 * was uploading took 870 ms instead of ~250 ms, 2.3x recomputing the context (bench:http's reuse
 * mix, BENCHMARKS.md). So a write-back can wait at each of its steps (the split, each block's
 * upload) while a load of the same pod is under way, up to `maxWaitMs` a step, so that a pod loading
 * without pause still writes back (its write-back budget then skips further ones). Off by default
 * (LLMFLEET_KV_WRITE_YIELD=1 turns it on): the store now holds uploads back while it pushes a load
 * (kv-push.ts), which covers the pod's own uploads too, and with that this gained nothing
 * measurable on CPU; the GPU has not measured it.
 */
export class LoadGate {
  private loads = 0;
  private waiters: (() => void)[] = [];

  constructor(private readonly maxWaitMs = 2000) {}

  /** A load begins; call the function returned when it ends. */
  enter(): () => void {
    this.loads++;
    let left = false;
    return () => {
      if (left) return;
      left = true;
      if (--this.loads > 0) return;
      const waiting = this.waiters;
      this.waiters = [];
      for (const w of waiting) w();
    };
  }

  /** Whether a load is under way. */
  get busy(): boolean {
    return this.loads > 0;
  }

  /** Resolves once no load is under way, or after maxWaitMs; at once when none is. */
  idle(): Promise<void> {
    if (this.loads === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== done);
        resolve();
      }, this.maxWaitMs);
      const done = (): void => {
        clearTimeout(timer);
        resolve();
      };
      this.waiters.push(done);
    });
  }
}
