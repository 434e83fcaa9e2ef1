/**
 * The engine's generation path, shared by the aggregated, prefill and decode roles:
 * validate + tokenize (prepare), lease a sequence (admission), reuse the longest cached prefix,
 * evaluate the prompt, then sample until EOG / stop / max_tokens / client gone.
 *
 * Invariant for P/D equality: every path evaluates prompt[0..n-1) without sampling, then feeds
 * the last prompt token to the sampler. The prefill pod hands off the KV of prompt[0..n-1), so
 * the decode pod computes exactly what the aggregated pod computes.
 */
import { setImmediate as tick } from "node:timers/promises";
import { ChunkCache } from "./chunk-cache.ts";
import { documentKv, type DocumentKvDeps } from "./document-kv.ts";
import { joinPlan, ownTokens, withDocuments, type DocumentLayout } from "./documents.ts";
import { phaseTimer, type EngineMetrics } from "../metrics/engine-metrics.ts";
import type { LocalState, ModelRuntime, RuntimeSequence, Token, TokenLogprob } from "../runtime/runtime.ts";
import { commonPrefixLength } from "../runtime/runtime.ts";
import type { KvPrefixCache, PrefixLoad } from "../kvstore/prefix-cache.ts";
import { ContextLengthError, EmptyPromptError } from "./errors.ts";
import type { GenerationRequest } from "./request.ts";
import type { SequenceLease, SequencePool } from "./sequence-pool.ts";
import { IncrementalText } from "./incremental-text.ts";
import { exportThenRelease, sampleFirst, withFirst } from "./first-token.ts";
import { importHandOff, importWhenStaged } from "./handoff-import.ts";
import { TextAssembler } from "./text-assembler.ts";
import { LogprobCollector } from "./logprob-collector.ts";
import { renderToolMessages } from "./tool-calls.ts";

export interface PreparedRequest {
  parsed: GenerationRequest;
  prompt: Token[];
  maxTokens: number;
  stop: string[];
  /** performance.now() at arrival, for TTFT. */
  arrivedAt: number;
  /** performance.now() once the prompt was tokenised (the request phase "tokenize" ends there). */
  tokenizedAt: number;
  /** Tenant and the KV namespace every cache this request may hit is scoped by; default none (open mode). */
  identity?: { tenant: string; kvNamespace: string };
  /** Where the request's RAG documents sit in `prompt` (documents.ts); absent without documents. */
  documents?: Omit<DocumentLayout, "tokens">;
}

/** RAG document joins (--rag-recompute, --rag-cache-bytes): how much is recomputed, and the documents' own KV. */
export interface RagOptions {
  recompute: number;
  chunks: ChunkCache;
}

export type FinishReason = "stop" | "length" | "cancelled";

/** A token's log-probability as the API reports it: its text (and UTF-8 bytes), and the alternatives. */
export interface LogprobEntry {
  token: string;
  logprob: number;
  bytes: number[];
  top: { token: string; logprob: number; bytes: number[] }[];
}

/** A piece of the generated text, with the logprobs of the tokens that made it when they were asked for. */
export interface Delta {
  text: string;
  logprobs?: LogprobEntry[];
}

export interface GenerationResult {
  text: string;
  /** The logprobs of every generated token (when asked for). */
  logprobs?: LogprobEntry[];
  finishReason: FinishReason;
  promptTokens: number;
  completionTokens: number;
  prefixHitTokens: number;
}

export interface GenerateOptions {
  signal: AbortSignal;
  /** KV state of prompt[0..n-1) from a prefill pod (decode role). */
  importedState?: Buffer;
  /** Or that state in parts, in order (RuntimeSequence.importParts; a hand-off sent while computed). */
  importedParts?: readonly Buffer[];
  /** Or that state with its rows in a shared region (RuntimeSequence.importStateFrom; pd/local-handoff.ts). */
  importedLocal?: ImportedLocal;
  /**
   * With importedState: the prompt tokens the prefill pod reused rather than computed (the
   * hand-off's cachedTokens), reported as the answer's cached tokens. They were counted in the
   * prefill pod's metrics, not again here.
   */
  importedCachedTokens?: number;
  /**
   * With importedState (of the whole prompt): the answer's first token, sampled by the prefill pod
   * (first-token.ts). It goes out at once; the state is imported behind it.
   */
  firstToken?: Token;
  /**
   * With firstToken, instead of importedState/importedParts: the state still on its way
   * (pd/staged-wait.ts), imported once it is staged. When it never comes (it rejects) the prompt
   * is computed here, and the answer goes on as it would have.
   */
  stagedLater?: Promise<HandOffState>;
}

/** A prefill pod's state as the generate call hands it over (GenerateOptions' fields of the same names). */
export type HandOffState = Pick<GenerateOptions, "importedState" | "importedParts" | "importedLocal" | "importedCachedTokens">;

/** A staged state in a shared region: this process's handle of the region, the state's headers, and `done` once the region may be reused. */
export interface ImportedLocal {
  region: number;
  state: LocalState;
  done: () => void;
}

export class CompletionService {
  constructor(
    readonly runtime: ModelRuntime,
    readonly pool: SequencePool,
    readonly metrics: EngineMetrics,
    /**
     * kvCache: the KV store of cached prompt prefixes (--kv-store); rag: RAG document joins
     * (documents are computed in place without). Default none.
     */
    readonly caches: { kvCache?: KvPrefixCache; rag?: RagOptions } = {},
  ) {}

  get kvCache(): KvPrefixCache | undefined {
    return this.caches.kvCache;
  }

  get rag(): RagOptions | undefined {
    return this.caches.rag;
  }

  /** Whether this pod joins RAG documents from their own KV (--rag-cache-bytes > 0 and sequences that can join). */
  get joinsDocuments(): boolean {
    return Boolean(this.rag && this.runtime.computeAlone && this.runtime.sequences[0]?.evaluateJoined);
  }

  /** Each document's own tokens (documents.ts ownTokens), [lead] first. */
  documentTokens(documents: readonly string[]): Token[][] {
    return documents.map((d) => ownTokens(this.runtime, d));
  }

  /**
   * POST /v1/contexts {documents}: each document's own KV computed now and kept for joins, unless
   * kept already; per document, whether it was. Only where joinsDocuments. It is admitted as a
   * request is (a sequence leased: QueueFullError when the queue is full) and stops between
   * documents when `signal` aborts.
   */
  async prewarmDocuments(owns: readonly Token[][], ctx: { signal: AbortSignal; kvNamespace: string }): Promise<boolean[]> {
    const { rag, runtime } = this;
    if (!rag || !runtime.computeAlone) throw new Error("this pod does not join documents");
    const lease = await this.acquire(owns[0] ?? [], ctx.signal, ctx.kvNamespace);
    try {
      const kept: boolean[] = [];
      for (const own of owns) {
        ctx.signal.throwIfAborted();
        kept.push(rag.chunks.has(ChunkCache.key(ctx.kvNamespace, own)));
        if (!kept.at(-1)) await documentKv(this.documentDeps(rag.chunks), { tokens: own, kvNamespace: ctx.kvNamespace }, (start) => runtime.computeAlone!(own, start));
      }
      this.metrics.ragCacheBytes.set(rag.chunks.bytes);
      return kept;
    } finally {
      lease.release();
    }
  }

  /** Where documentKv finds and keeps documents' own KV: the pod's document cache, then the KV store. */
  private documentDeps(chunks: ChunkCache): DocumentKvDeps {
    return { chunks, kvCache: this.kvCache, release: this.runtime.releaseState?.bind(this.runtime) };
  }

  /** Tokenizes a validated request and checks it fits the context (ContextLengthError, EmptyPromptError). */
  prepare(parsed: GenerationRequest, arrivedAt = performance.now()): PreparedRequest {
    const { info } = this.runtime;
    const { prompt, stop, documents } = this.tokenizeRequest(parsed);
    const maxTokens = parsed.maxTokens ?? info.contextSize - prompt.length;
    if (maxTokens < 1 || prompt.length + maxTokens > info.contextSize) {
      throw new ContextLengthError(info.contextSize, prompt.length, Math.max(1, maxTokens));
    }
    return { parsed, prompt, maxTokens, stop, arrivedAt, tokenizedAt: performance.now(), ...(documents ? { documents } : {}) };
  }

  private tokenizeRequest(parsed: GenerationRequest): { prompt: Token[]; stop: string[]; documents?: Omit<DocumentLayout, "tokens"> } {
    const base = this.tokenizeBody(parsed);
    const documents = parsed.extensions?.documents as string[] | undefined;
    if (!documents || documents.length === 0) return base;
    const { tokens, ...layout } = withDocuments(this.runtime, documents, base.prompt);
    return { prompt: tokens, stop: base.stop, documents: layout };
  }

  private tokenizeBody(parsed: GenerationRequest): { prompt: Token[]; stop: string[] } {
    if (parsed.messages) {
      const chat = this.runtime.tokenizeChat(renderToolMessages(parsed.messages, parsed.tools, parsed.toolChoice));
      return { prompt: chat.tokens, stop: [...parsed.stop, ...chat.stop] };
    }
    const prompt = this.runtime.tokenize(parsed.prompt ?? "");
    if (prompt.length === 0) throw new EmptyPromptError();
    return { prompt, stop: parsed.stop };
  }

  /**
   * A sequence for the prompt; QueueFullError or QueueAbortedError when none can be had. A
   * sequence that last served another KV namespace is cleared first: its tokens are not ours.
   */
  async acquire(prompt: readonly Token[], signal: AbortSignal, kvNamespace = ""): Promise<SequenceLease> {
    const lease = await this.pool.acquire(prompt, signal, kvNamespace);
    if (!lease.foreign) return lease;
    try {
      await lease.sequence.clear();
    } catch (err) {
      lease.release();
      throw err;
    }
    lease.sequence.kvNamespace = kvNamespace;
    return lease;
  }

  /** Prefill role: evaluate prompt[0..n-1) and export that KV. The sequence keeps it for reuse. */
  /** held: the KV store's write-back keeps reading the state (the caller must not release it). */
  async prefillState(req: PreparedRequest, signal: AbortSignal): Promise<{ state: Buffer; prefixHitTokens: number; exportMs: number; held: boolean }> {
    return this.computeContext(req, signal, async (lease, { context, load, hits, ns }) => {
      const t0 = performance.now();
      const state = await lease.sequence.exportState();
      const exportMs = performance.now() - t0;
      const length = load ? this.kvCache!.storableLength(context, load.storedBlocks, ns) : 0;
      // The state is exported for the hand-off anyway: only the budget of bytes in flight applies.
      const held = length > 0 && this.kvCache!.admitWriteBack(length, false);
      if (held) this.kvCache!.writeBack(context, length, state, { kvNamespace: ns });
      return { state, prefixHitTokens: hits, exportMs, held };
    });
  }

  /**
   * Prefill role: the prompt's context (all but its last token) computed in a leased sequence — from
   * the KV store where it holds a prefix — and `then` run with the sequence still leased.
   */
  private async computeContext<T>(
    req: PreparedRequest,
    signal: AbortSignal,
    then: (lease: SequenceLease, c: { context: Token[]; load: PrefixLoad | undefined; hits: number; ns: string; keep: () => void }) => Promise<T>,
  ): Promise<T> {
    const ns = req.identity?.kvNamespace ?? "";
    const lease = await this.acquire(req.prompt, signal, ns);
    const context = req.prompt.slice(0, -1);
    // keep(): `then` has taken the lease over and releases it itself.
    let kept = false;
    try {
      const load = await this.loadCached(lease, context, ns);
      const hits = await this.evaluateTimed(lease, context, req);
      this.metrics.promptTokens.inc(req.prompt.length);
      this.countHits(req, hits);
      return await then(lease, { context, load, hits, ns, keep: () => (kept = true) });
    } finally {
      if (!kept) lease.release();
    }
  }

  /**
   * Prefill role, the first token ahead of its state (pd/prefill-whole.ts): the prompt computed and
   * its first token sampled; the state of the whole prompt is exported after this returns
   * (`exported`), the sequence held until then. No first token (no room left to sample): `exported`
   * is the state of the prompt but its last token. No KV store write-back (firstTokenHere: a pod
   * with a store does not sample the first token).
   */
  async prefillAhead(
    req: PreparedRequest,
    signal: AbortSignal,
  ): Promise<{ firstToken?: Token; prefixHitTokens: number; exported: Promise<{ state: Buffer; exportMs: number }> }> {
    return this.computeContext(req, signal, async (lease, { hits, keep }) => {
      const firstToken = await sampleFirst(lease.sequence, req);
      keep();
      const exported = exportThenRelease(lease);
      return { prefixHitTokens: hits, exported, ...(firstToken === undefined ? {} : { firstToken }) };
    });
  }

  /**
   * Prefill role, the local path (pd/local-handoff.ts): prefillState with the state's rows
   * exported by `exportTo` into a region the decode pod maps, instead of into host memory. The
   * KV store's write-back exports the entry's rows to host memory after that, as an aggregated
   * pod's does after its answer (the region's copy is the decode pod's, not this pod's to read).
   */
  async prefillLocal(
    req: PreparedRequest,
    signal: AbortSignal,
    w: { sampleFirst: boolean; exportTo: (seq: RuntimeSequence) => Promise<LocalState> },
  ): Promise<{ local: LocalState; prefixHitTokens: number; exportMs: number; firstToken?: Token }> {
    return this.computeContext(req, signal, async (lease, { context, load, hits, ns, keep }) => {
      const firstToken = w.sampleFirst ? await sampleFirst(lease.sequence, req) : undefined;
      const t0 = performance.now();
      const local = await w.exportTo(lease.sequence);
      const exportMs = performance.now() - t0;
      // With the first token sampled here no store is written (firstTokenHere: a pod with a KV store does not).
      if (firstToken === undefined) {
        keep();
        this.releaseWithWriteBack(lease, context, load, ns);
      }
      return { local, prefixHitTokens: hits, exportMs, ...(firstToken === undefined ? {} : { firstToken }) };
    });
  }

  /**
   * Decode role, a hand-off with the prefill pod's first token: that token goes out at once and the
   * state is imported behind it; the answer goes on from there.
   */
  private async *afterFirstToken(lease: SequenceLease, req: PreparedRequest, opts: GenerateOptions): AsyncGenerator<Delta, GenerationResult, void> {
    const ready = opts.stagedLater ? importWhenStaged(this, lease.sequence, { prompt: req.prompt, opts }) : importHandOff(this, lease.sequence, opts).then(() => opts.importedCachedTokens ?? 0);
    ready.catch(() => undefined); // awaited before the next token and before the lease goes back
    try {
      const result = yield* this.sample(lease, req, opts.signal, { first: { token: opts.firstToken!, ready } });
      return { ...result, prefixHitTokens: await ready };
    } finally {
      await ready.catch(() => undefined);
    }
  }

  /** Whether prefillParts can serve this request (the runtime shares cells between sequences; no RAG documents). */
  canPrefillInParts(req: PreparedRequest): boolean {
    return !req.documents && this.runtime.sequences.every((s) => s.exportRange !== undefined);
  }

  /**
   * Prefill role, overlapped: evaluates prompt[0..n-1) a part of `bounds` at a time and hands each
   * part's KV (RuntimeSequence.exportRange) to `onPart` as soon as it is computed, so that the
   * caller sends it while the next part computes. `bounds` are the parts' ends, ascending, the last
   * n-1. The sequence keeps the KV for reuse; a KV store write-back runs after, off the response.
   */
  async prefillParts(
    req: PreparedRequest,
    signal: AbortSignal,
    bounds: readonly number[],
    onPart: (index: number, state: Buffer, reused: number) => void,
  ): Promise<{ prefixHitTokens: number; exportMs: number }> {
    const ns = req.identity?.kvNamespace ?? "";
    const lease = await this.acquire(req.prompt, signal, ns);
    const context = req.prompt.slice(0, -1);
    let load: PrefixLoad | undefined;
    let done: { hits: number; exportMs: number };
    try {
      load = await this.loadCached(lease, context, ns);
      done = await this.computeParts(lease, context, req, { bounds, signal, onPart });
    } catch (err) {
      lease.release();
      throw err;
    }
    this.metrics.promptTokens.inc(req.prompt.length);
    this.countHits(req, done.hits);
    this.releaseWithWriteBack(lease, context, load, ns);
    return { prefixHitTokens: done.hits, exportMs: done.exportMs };
  }

  private async computeParts(
    lease: SequenceLease,
    context: readonly Token[],
    req: PreparedRequest,
    job: { bounds: readonly number[]; signal: AbortSignal; onPart: (index: number, state: Buffer, reused: number) => void },
  ): Promise<{ hits: number; exportMs: number }> {
    const { bounds, signal, onPart } = job;
    // Parts the sequence holds already are exported as they are: evaluating a shorter prefix than
    // it holds would drop the rest of its KV.
    const have = commonPrefixLength(lease.sequence.contextTokens(), context);
    let hits: number | undefined;
    let exportMs = 0;
    let from = 0;
    for (const [index, to] of bounds.entries()) {
      signal.throwIfAborted();
      const reused = to > have || index === bounds.length - 1 ? await this.evaluateTimed(lease, context.slice(0, to), req) : undefined;
      hits ??= reused; // the first evaluation's: every later one reuses the part before it
      const t0 = performance.now();
      onPart(index, await lease.sequence.exportRange!(from, to), hits ?? have);
      exportMs += performance.now() - t0;
      from = to;
    }
    return { hits: hits ?? 0, exportMs };
  }

  /**
   * The context's KV before the answer: reused, and the rest evaluated, except a remainder of at
   * most TAIL_WITH_ANSWER tokens (and no longer than the part reused), returned as `tail` for the
   * answer's first step to evaluate with the prompt's last token. A hot prefix plus a short
   * question then costs one forward pass to its first token, not two (on a GPU each is about one
   * read of the weights: 8-10 ms for a 7B f16 model on an H100, as much as the question's own
   * prefill). Longer remainders are evaluated here, timed (evaluateTimed), and RAG prompts join
   * their documents as before.
   */
  private async contextBeforeAnswer(lease: SequenceLease, context: readonly Token[], req: PreparedRequest): Promise<{ hits: number; tail: readonly Token[] }> {
    const seq = lease.sequence;
    if (seq.keepPrefix && !(this.rag && req.documents)) {
      const kept = await seq.keepPrefix(context);
      const rest = context.length - kept;
      // A held prompt and a question after it, not a prompt computed from (nearly) nothing: that
      // keeps the steps a P/D prefill pod takes (the context, then the last token alone), and so
      // its numerics and greedy answers.
      if (rest <= TAIL_WITH_ANSWER && kept >= rest) return { hits: kept, tail: context.slice(kept) };
    }
    return { hits: await this.evaluateTimed(lease, context, req), tail: [] };
  }

  /** evaluatePrefix, timed: the KV store's load-or-recompute choice learns the prefill rate from it. */
  private async evaluateTimed(lease: SequenceLease, context: readonly Token[], req: PreparedRequest): Promise<number> {
    const t0 = performance.now();
    const hits = await this.evaluateContext(lease, context, req);
    this.kvCache?.observePrefill(context.length - hits, performance.now() - t0);
    return hits;
  }

  /**
   * The context's KV: reused from the sequence (or another), and with RAG documents the ones
   * before the recomputed tail joined from their own KV. Returns the tokens not computed.
   */
  private async evaluateContext(lease: SequenceLease, context: readonly Token[], req: PreparedRequest): Promise<number> {
    const seq = lease.sequence;
    if (!this.rag || !req.documents || !seq.evaluateJoined) return seq.evaluatePrefix(context);
    const { chunks, recompute } = this.rag;
    const ns = req.identity?.kvNamespace ?? "";
    const chunk = async (tokens: readonly Token[], compute: (start?: Buffer) => Promise<Buffer>): Promise<Buffer> => {
      const { state, outcome } = await documentKv(this.documentDeps(chunks), { tokens, kvNamespace: ns }, compute);
      this.metrics.ragDocuments.inc({ outcome });
      this.metrics.ragCacheBytes.set(chunks.bytes);
      return state;
    };
    const spans = joinPlan(req.documents, recompute).filter((j) => j.end <= context.length);
    const { reused, joined } = await seq.evaluateJoined(context, { spans, lead: req.documents.lead, chunk });
    this.metrics.ragJoinedTokens.inc(joined);
    return reused + joined;
  }

  /** Loads the longest cached prefix of `context` from the KV store when it beats the sequence's own. */
  private async loadCached(lease: SequenceLease, context: readonly Token[], kvNamespace: string): Promise<PrefixLoad | undefined> {
    if (!this.kvCache) return undefined;
    const have = commonPrefixLength(lease.sequence.contextTokens(), context);
    return this.kvCache.load(lease.sequence, context, have, kvNamespace);
  }

  private countHits(req: PreparedRequest, hits: number): void {
    this.metrics.prefixHitTokens.inc(hits);
    if (hits > 0) this.onTenantHits?.(req.identity?.tenant ?? "", hits);
  }

  /** Called with a request's reused prompt tokens (per-tenant metric); default none. */
  onTenantHits: ((tenant: string, tokens: number) => void) | undefined;

  /**
   * Releases the sequence, first exporting its state for the KV store when the prompt has new
   * full blocks. Runs after the response: a write-back never delays the client.
   */
  private releaseWithWriteBack(lease: SequenceLease, context: readonly Token[], load: PrefixLoad | undefined, kvNamespace: string): void {
    const cache = this.kvCache;
    const length = cache && load ? cache.storableLength(context, load.storedBlocks, kvNamespace) : 0;
    // The export holds the sequence and the engine: never while other requests wait for them.
    if (!cache || length === 0 || !cache.admitWriteBack(length, this.pool.queued > 0)) return lease.release();
    // Begun after the response is out: the export's start (on a GPU, taking a host-pool block) and
    // the engine call it queues come after the request's last bytes reach the socket.
    // Just the entry's tokens where the runtime can (their blocks are then cut out natively, with no
    // copy of the state to trim it first: block-split.ts).
    const seq = lease.sequence;
    const state = tick()
      .then(() => (seq.exportRange ? seq.exportRange(0, length) : seq.exportState()))
      .finally(() => lease.release());
    // Exported for the store alone: once stored, its page-locked block goes back to the pool.
    cache.writeBack(context, length, state, { kvNamespace, release: (s) => this.runtime.releaseState?.(s) });
  }

  /** Yields text deltas; returns the result. Releases the sequence however it ends. */
  async *generate(req: PreparedRequest, opts: GenerateOptions): AsyncGenerator<Delta, GenerationResult, void> {
    const ns = req.identity?.kvNamespace ?? "";
    this.metrics.requestPhase.observe({ phase: "tokenize" }, (req.tokenizedAt - req.arrivedAt) / 1000);
    const lease = await this.acquire(req.prompt, opts.signal, ns);
    const phase = phaseTimer(this.metrics.requestPhase, req.tokenizedAt);
    phase("lease");
    this.metrics.promptTokens.inc(req.prompt.length);
    const context = req.prompt.slice(0, -1);
    let load: PrefixLoad | undefined;
    try {
      if (opts.firstToken !== undefined) return yield* this.afterFirstToken(lease, req, opts);
      const seq = lease.sequence;
      const handedOff = await importHandOff(this, seq, opts);
      const imported = handedOff ? seq.contextTokens().length : 0;
      if (!handedOff) load = await this.loadCached(lease, context, ns);
      phase("kv_load");
      const { hits, tail } = await this.contextBeforeAnswer(lease, context, req);
      phase("prefill");
      const localHits = Math.max(0, hits - imported);
      this.countHits(req, localHits);
      const result = yield* this.sample(lease, req, opts.signal, { tail });
      return { ...result, prefixHitTokens: localHits + (handedOff ? (opts.importedCachedTokens ?? 0) : 0) };
    } finally {
      this.releaseWithWriteBack(lease, context, load, ns);
    }
  }

  private async *sample(
    lease: SequenceLease,
    req: PreparedRequest,
    signal: AbortSignal,
    start: AnswerStart,
  ): AsyncGenerator<Delta, Omit<GenerationResult, "prefixHitTokens">, void> {
    let generated = 0;
    const text = new IncrementalText((tokens) => this.runtime.detokenize(tokens));
    const assembler = new TextAssembler(req.stop);
    let finishReason: FinishReason = "length";
    let last = req.arrivedAt;
    const lp = new LogprobCollector(req.parsed.sampling.logprobs !== undefined, (t) => this.runtime.tokenPiece?.(t) ?? this.runtime.detokenize([t]));
    const echo = echoedPrompt(req.parsed);
    if (echo) yield { text: echo };
    for await (const token of answerTokens(lease, req, lp.add, start)) {
      if (signal.aborted) {
        finishReason = "cancelled";
        break;
      }
      this.observeToken(generated === 0, req.arrivedAt, last);
      last = performance.now();
      if (this.runtime.isEndOfGeneration(token)) {
        lp.dropLast();
        finishReason = "stop";
        break;
      }
      generated++;
      const step = assembler.push(text.push(token));
      if (step.delta) yield lp.delta(step.delta);
      if (step.stopped) {
        finishReason = "stop";
        break;
      }
      if (generated >= req.maxTokens) break;
    }
    const full = text.finish();
    const tail = finishReason === "cancelled" ? "" : assembler.finish(full);
    if (tail) yield lp.delta(tail);
    this.metrics.e2eLatency.observe((performance.now() - req.arrivedAt) / 1000);
    return { text: echo + assembler.text(full), ...lp.result(), finishReason, promptTokens: req.prompt.length, completionTokens: generated };
  }

  private observeToken(first: boolean, arrivedAt: number, last: number): void {
    const now = performance.now();
    if (first) this.metrics.ttft.observe((now - arrivedAt) / 1000);
    else this.metrics.interTokenLatency.observe((now - last) / 1000);
    this.metrics.generatedTokens.inc();
  }
}

/**
 * Where the answer starts: after the prompt's last token, preceded by `tail` (context tokens not
 * evaluated yet: contextBeforeAnswer), or from the prefill pod's first token (`first`).
 */
interface AnswerStart {
  first?: { token: Token; ready: Promise<unknown> };
  tail?: readonly Token[];
}

/** Most context tokens left to the answer's first step (contextBeforeAnswer): a question's worth. */
const TAIL_WITH_ANSWER = 256;

/** The answer's tokens: sampled after the prompt's last token, or the prefill pod's first token then those after it (once the state is in). */
function answerTokens(lease: SequenceLease, req: PreparedRequest, onLogprob: (lp: TokenLogprob) => void, { first, tail = [] }: AnswerStart): AsyncGenerator<Token, void, void> {
  const { sampling } = req.parsed;
  if (!first) return lease.sequence.generate([...tail, ...req.prompt.slice(-1)], sampling, onLogprob, req.maxTokens);
  return withFirst(first.token, async () => {
    await first.ready;
    return lease.sequence.generate([first.token], sampling, onLogprob, req.maxTokens - 1);
  });
}

/** Completions with `echo`: the prompt, returned before the completion. */
const echoedPrompt = (parsed: GenerationRequest): string => (parsed.echo && parsed.prompt) || "";
