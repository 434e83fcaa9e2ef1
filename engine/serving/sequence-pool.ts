/**
 * Admission to the shared context: a request leases one sequence; requests beyond the free
 * sequences wait in a bounded FIFO queue (back-pressure: a full queue is refused at once).
 * A free sequence still holds the KV of its last request; a new request gets the free sequence
 * with the longest common prefix with its prompt, so prefix reuse needs no separate cache.
 * Tenants: each sequence remembers the KV namespace of its last request. Only a sequence of the
 * same namespace can lend its prefix; a sequence of another namespace is handed out `foreign`,
 * and the caller clears it before use (CompletionService.acquire), so a tenant never computes on,
 * or is timed against, another tenant's cached tokens.
 */
import { commonPrefixLength, type RuntimeSequence, type Token } from "../runtime/runtime.ts";

import { QueueAbortedError, QueueFullError } from "./errors.ts";

export { QueueAbortedError, QueueFullError };

export interface SequenceLease {
  readonly sequence: RuntimeSequence;
  /** The sequence holds another KV namespace's tokens: clear it before use. */
  readonly foreign: boolean;
  release(): void;
}

interface Waiter {
  prompt: readonly Token[];
  kvNamespace: string;
  resolve(lease: SequenceLease): void;
  reject(err: Error): void;
}

/** The namespace of a sequence leased across namespaces and not yet cleared: no request has it. */
export const FOREIGN = "\0foreign";

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

  acquire(prompt: readonly Token[], signal?: AbortSignal, kvNamespace = ""): Promise<SequenceLease> {
    if (signal?.aborted) return Promise.reject(new QueueAbortedError());
    if (this.free.length > 0 && this.waiters.length === 0) return Promise.resolve(this.lease(this.takeBest(prompt, kvNamespace), kvNamespace));
    if (this.waiters.length >= this.maxQueue) return Promise.reject(new QueueFullError(this.maxQueue));
    return new Promise<SequenceLease>((resolve, reject) => {
      const waiter: Waiter = { prompt, kvNamespace, resolve, reject };
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

  /** The free sequence of the namespace with the longest common prefix; a foreign one only when no other is free. */
  private takeBest(prompt: readonly Token[], kvNamespace: string): RuntimeSequence {
    let best = 0;
    let bestLen = -2;
    this.free.forEach((seq, i) => {
      const mine = (seq.kvNamespace ?? "") === kvNamespace || seq.contextTokens().length === 0;
      const len = mine ? commonPrefixLength(seq.contextTokens(), prompt) : -1;
      if (len > bestLen) [best, bestLen] = [i, len];
    });
    return this.free.splice(best, 1)[0]!;
  }

  private lease(sequence: RuntimeSequence, kvNamespace: string): SequenceLease {
    let released = false;
    const foreign = (sequence.kvNamespace ?? "") !== kvNamespace && sequence.contextTokens().length > 0;
    // A foreign sequence still holds the other namespace's tokens until it is cleared: until then
    // it belongs to no namespace, so no sequence borrows those tokens (NativeRuntime.bestDonor).
    sequence.kvNamespace = foreign ? FOREIGN : kvNamespace;
    this.onChange();
    return {
      sequence,
      foreign,
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
      waiter.resolve(this.lease(this.takeBest(waiter.prompt, waiter.kvNamespace), waiter.kvNamespace));
    }
    this.onChange();
  }
}
