/**
 * Admission to the shared context: a request leases one sequence; requests beyond the free
 * sequences wait in a bounded FIFO queue (back-pressure: a full queue is refused at once).
 * A free sequence still holds the KV of its last request; a new request gets the free sequence
 * with the longest common prefix with its prompt, so prefix reuse needs no separate cache.
 */
import { commonPrefixLength, type RuntimeSequence, type Token } from "../runtime/runtime.ts";

import { QueueAbortedError, QueueFullError } from "./errors.ts";

export { QueueAbortedError, QueueFullError };

export interface SequenceLease {
  readonly sequence: RuntimeSequence;
  release(): void;
}

interface Waiter {
  prompt: readonly Token[];
  resolve(lease: SequenceLease): void;
  reject(err: Error): void;
}

export class SequencePool {
  private readonly free: RuntimeSequence[];
  private readonly waiters: Waiter[] = [];
  private onChange: () => void = () => {};

  constructor(
    sequences: readonly RuntimeSequence[],
    readonly maxQueue: number,
  ) {
    this.free = [...sequences];
    this.size = sequences.length;
  }

  readonly size: number;

  get running(): number {
    return this.size - this.free.length;
  }

  get queued(): number {
    return this.waiters.length;
  }

  /** Called after every change of `running` or `queued` (metrics gauges). */
  observe(fn: () => void): void {
    this.onChange = fn;
  }

  acquire(prompt: readonly Token[], signal?: AbortSignal): Promise<SequenceLease> {
    if (signal?.aborted) return Promise.reject(new QueueAbortedError());
    if (this.free.length > 0 && this.waiters.length === 0) return Promise.resolve(this.lease(this.takeBest(prompt)));
    if (this.waiters.length >= this.maxQueue) return Promise.reject(new QueueFullError(this.maxQueue));
    return new Promise<SequenceLease>((resolve, reject) => {
      const waiter: Waiter = { prompt, resolve, reject };
      this.waiters.push(waiter);
      this.onChange();
      signal?.addEventListener("abort", () => this.dropWaiter(waiter), { once: true });
    });
  }

  private dropWaiter(waiter: Waiter): void {
    const i = this.waiters.indexOf(waiter);
    if (i < 0) return;
    this.waiters.splice(i, 1);
    this.onChange();
    waiter.reject(new QueueAbortedError());
  }

  private takeBest(prompt: readonly Token[]): RuntimeSequence {
    let best = 0;
    let bestLen = -1;
    this.free.forEach((seq, i) => {
      const len = commonPrefixLength(seq.contextTokens(), prompt);
      if (len > bestLen) [best, bestLen] = [i, len];
    });
    return this.free.splice(best, 1)[0]!;
  }

  private lease(sequence: RuntimeSequence): SequenceLease {
    let released = false;
    this.onChange();
    return {
      sequence,
      release: (): void => {
        if (released) return;
        released = true;
        this.free.push(sequence);
        this.dispatch();
      },
    };
  }

  private dispatch(): void {
    while (this.free.length > 0 && this.waiters.length > 0) {
      const waiter = this.waiters.shift()!;
      waiter.resolve(this.lease(this.takeBest(waiter.prompt)));
    }
    this.onChange();
  }
}
