/** Logprobs of sampled tokens, handed out with the text deltas they made (CompletionService). */
import type { Token, TokenLogprob } from "../runtime/runtime.ts";
import type { Delta, LogprobEntry } from "./completion-service.ts";

/** Gathers the logprobs of sampled tokens and hands them out with the text deltas they made. */
export class LogprobCollector {
  private pending: LogprobEntry[] = [];
  private readonly all: LogprobEntry[] = [];

  constructor(
    private readonly on: boolean,
    private readonly tokenText: (t: Token) => string,
  ) {}

  readonly add = (lp: TokenLogprob): void => {
    const entry = (token: Token, logprob: number): { token: string; logprob: number; bytes: number[] } => {
      const text = this.tokenText(token);
      return { token: text, logprob, bytes: [...Buffer.from(text)] };
    };
    const e: LogprobEntry = { ...entry(lp.token, lp.logprob), top: lp.top.map((t) => entry(t.token, t.logprob)) };
    this.pending.push(e);
    this.all.push(e);
  };

  /** The end-of-generation token is not part of the answer. */
  dropLast(): void {
    if (this.pending.pop()) this.all.pop();
  }

  delta(text: string): Delta {
    if (!this.on) return { text };
    const logprobs = this.pending;
    this.pending = [];
    return { text, logprobs };
  }

  result(): { logprobs?: LogprobEntry[] } {
    return this.on ? { logprobs: this.all } : {};
  }
}
