/**
 * The batching loop of the native runtime. Sequences ask for tokens to be evaluated (and the
 * next one sampled); the loop gathers every request that is waiting into one native step — one
 * llama_decode over all sequences, sampling in C++ — so a step costs one JavaScript round trip
 * however many sequences decode. Between steps it yields one macrotask turn, which is when the
 * consumers of the last step's tokens (all microtasks) queue their next ones: steps stay full.
 * Prompts are prefilled in chunks of at most `stepTokens` so a long prompt never stalls the
 * sequences that are decoding.
 *
 * Multi-step decoding (as vLLM's --num-scheduler-steps): when every waiting request is a decoding
 * sequence and nothing else waits, one native call decodes up to `lookahead` tokens per sequence,
 * so the per-token JavaScript round trip (≈0.4 ms on an H100) is paid once per k tokens. Tokens
 * then reach clients k at a time; lookahead 1 turns it off.
 */
import type { NativeEngine } from "../native/binding.ts";
import type { StepStats, Token } from "./runtime.ts";

export interface EvaluateRequest {
  seq: number;
  /** Position of tokens[0]. */
  pos: number;
  tokens: readonly Token[];
  /** Sample the token after the last one. */
  sample: boolean;
  /** Most tokens this request may take beyond the first (its sequence's room); default 0. */
  room?: number;
  /** The sampled token is the request's last: the engine does not start its decode ahead (pipelining). */
  last?: boolean;
}

interface Want extends EvaluateRequest {
  room: number;
  resolve(tokens: Token[]): void;
  reject(err: Error): void;
}

const nextTurn = (): Promise<void> => new Promise((r) => setImmediate(r));

export class StepScheduler {
  private wants: Want[] = [];
  private looping = false;
  private lock: Promise<unknown> = Promise.resolve();
  readonly stats: StepStats = { steps: 0, tokens: 0, sampled: 0, calls: 0, rows: 0, busySeconds: 0, prefillTokens: 0, prefillSeconds: 0 };

  constructor(
    private readonly engine: NativeEngine,
    /** Tokens per step; at least the number of sequences so every decoding sequence fits. */
    private readonly stepTokens: number,
    /** Tokens decoded per sequence per native call when only decoding sequences wait (1 = off). */
    public lookahead = 1,
  ) {}

  /**
   * Evaluates `tokens` of `seq` from position `pos`; resolves with the sampled next tokens (one,
   * or up to 1 + room with multi-step decoding; none when `sample` is false). The KV then holds
   * every returned token but the last.
   */
  evaluate(req: EvaluateRequest): Promise<Token[]> {
    if (req.tokens.length === 0) return Promise.reject(new Error("nothing to evaluate"));
    return new Promise<Token[]>((resolve, reject) => {
      this.wants.push({ ...req, room: req.room ?? 0, resolve, reject });
      if (!this.looping) void this.loop();
    });
  }

  /** Runs `fn` with no step in flight (state copies, sequence edits, sampler changes). */
  exclusive<T>(fn: () => T | Promise<T>): Promise<T> {
    const run = this.lock.then(fn);
    this.lock = run.catch(() => undefined);
    return run;
  }

  private async loop(): Promise<void> {
    this.looping = true;
    try {
      while (this.wants.length > 0) {
        await nextTurn();
        await this.exclusive(() => this.runStep());
      }
    } finally {
      this.looping = false;
    }
  }

  /** Decoding sequences first (one token each), then prompt chunks, within the token budget. */
  private take(): Want[] {
    const decoding = this.wants.filter((w) => w.tokens.length === 1);
    const prompts = this.wants.filter((w) => w.tokens.length > 1);
    const taken: Want[] = [...decoding];
    let budget = this.stepTokens - decoding.length;
    const rest: Want[] = [];
    for (const w of prompts) {
      if (budget <= 0) rest.push(w);
      else if (w.tokens.length <= budget) {
        taken.push(w);
        budget -= w.tokens.length;
      } else {
        taken.push({ ...w, tokens: w.tokens.slice(0, budget), sample: false, room: 0, resolve: () => undefined });
        rest.push({ ...w, tokens: w.tokens.slice(budget), pos: w.pos + budget });
        budget = 0;
      }
    }
    this.wants = rest;
    return taken;
  }

  /**
   * A step that mixes prompt chunks with decodes is charged to prefill in proportion to its prompt
   * tokens: a step's cost grows with the tokens it evaluates, and a decode token costs about what a
   * prompt token does inside one batch. Multi-step decodes (k > 1) hold no prompt tokens.
   */
  private countPrefill(promptTokens: number, totalTokens: number, seconds: number): void {
    if (promptTokens === 0 || totalTokens === 0) return;
    this.stats.prefillTokens += promptTokens;
    this.stats.prefillSeconds += (seconds * promptTokens) / totalTokens;
  }

  /** k > 1 only when the step is all decoding sequences and nothing else waits. */
  private stepsFor(batch: Want[]): number {
    if (this.lookahead <= 1 || this.wants.length > 0) return 1;
    if (!batch.every((w) => w.sample && w.tokens.length === 1)) return 1;
    return Math.max(1, Math.min(this.lookahead, 1 + Math.min(...batch.map((w) => w.room))));
  }

  private async runStep(): Promise<void> {
    const batch = this.take();
    if (batch.length === 0) return;
    const k = this.stepsFor(batch);
    const n = batch.length;
    const seqs = new Int32Array(n);
    const pos0 = new Int32Array(n);
    const counts = new Int32Array(n);
    const sample = new Uint8Array(n);
    let total = 0;
    let prompt = 0;
    batch.forEach((w, i) => {
      seqs[i] = w.seq;
      pos0[i] = w.pos;
      counts[i] = w.tokens.length;
      sample[i] = w.sample ? (w.last ? 2 : 1) : 0;
      total += w.tokens.length;
      if (w.tokens.length > 1) prompt += w.tokens.length;
    });
    const tokens = new Int32Array(total);
    let at = 0;
    for (const w of batch) {
      tokens.set(w.tokens, at);
      at += w.tokens.length;
    }
    const started = performance.now();
    try {
      const out = await this.engine.step(seqs, pos0, counts, tokens, sample, k);
      const seconds = (performance.now() - started) / 1000;
      this.stats.busySeconds += seconds;
      this.countPrefill(prompt, total, seconds);
      this.stats.calls++;
      this.stats.rows += n;
      this.stats.steps += k;
      this.stats.tokens += total;
      batch.forEach((w, i) => {
        const got = w.sample ? Array.from(out.subarray(i * k, (i + 1) * k)).filter((t) => t >= 0) : [];
        this.stats.sampled += got.length;
        this.stats.tokens += Math.max(0, got.length - 1);
        w.resolve(got);
      });
    } catch (err) {
      for (const w of batch) w.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }
}
