/**
 * ModelRuntime on the engine's native addon (engine/native): llama.cpp driven by our own batching
 * loop (StepScheduler), one KV buffer shared by all sequences, and sequence state moved through
 * memory buffers instead of files. On the GPU this is the path that batches at llama.cpp's own
 * speed; on CPU the same code runs with gpuLayers 0.
 *
 * A sequence that starts with a prefix another sequence already holds gets it by seq_cp: in the
 * unified KV (the GPU default) the cells are shared; with a KV stream per sequence (the CPU
 * default) llama.cpp copies the donor's stream at the next decode. Either way a hot context is
 * reused without a recompute or a load.
 */
import { basename } from "node:path";
import { loadNativeAddon, splitOptions, type NativeAddon, type NativeEngine, type SplitMode } from "../native/binding.ts";
import {
  commonPrefixLength,
  type ChatMessage,
  type JoinRequest,
  type ModelRuntime,
  type RuntimeFeatures,
  type RuntimeInfo,
  type RuntimeSequence,
  type Sampling,
  type StepStats,
  type Token,
  type TokenLogprob,
  type PlacedPart,
  type LocalState,
} from "./runtime.ts";
import { seqStateTokens } from "./seq-state.ts";
import { moveIn, partsInto } from "./state-parts.ts";
import { exportShared, importFile, importShared, sharedStateSize } from "./shared-state.ts";
import type { LlamaRuntimeOptions } from "./llama-runtime.ts";
import { StepScheduler } from "./step-scheduler.ts";

/** The options both runtimes take (LlamaRuntimeOptions), and the native backend's own. */
export interface NativeRuntimeOptions extends LlamaRuntimeOptions {
  /** 0 (default) = CPU; -1 = every layer on the GPU. */
  gpuLayers?: number;
  /** Share prefixes between sequences (default true): by cell sharing (unified KV) or a device copy. */
  sharePrefixes?: boolean;
  /**
   * true: one KV buffer for all sequences (a shared prefix's cells are shared, no copy; cells go to
   * whichever sequence needs them); every sequence's attention then spans every used cell of the
   * buffer, masked. false: one stream per sequence, attending over its own cells only; prefixes
   * are shared by a device copy of the donor's stream. Which is faster depends on the device
   * (bench:http, 2026-12-05, 64 streams of ~300 tokens): on CPU the masked attention grows with
   * the square of the sequences (unified 613 ms a step, 97 tok/s; per stream 35 ms, 1,592
   * tok/s), while on the H200 llama.cpp's CUDA kernels run the unified buffer 4.4× faster
   * (unified 22 ms a step, 2,469 tok/s; per stream 108 ms, 558 tok/s). Default: unified when
   * layers are on a GPU (gpuLayers not 0), per stream otherwise.
   */
  kvUnified?: boolean;
  /** KV cells in all (unified) — default contextSize × parallel. Per-stream KV always gets contextSize each. */
  kvCells?: number;
  /** Multi-step decoding: tokens per sequence per native call while only decoding sequences wait (default 1 = off). */
  decodeLookahead?: number;
  /** Default true: with layers on a GPU, the token embeddings go there too (see binding.ts). */
  gpuEmbeddings?: boolean;
  /**
   * Pipelined decoding: the next decode of every decoding sequence is launched before a step's tokens come back
   * to JavaScript, so the device never waits for the round trip. Default: on when layers are on a GPU.
   */
  pipelineDecode?: boolean;
  /** Greedy sequences take their argmax on the device: a token comes back per sequence, not its logits. Default false. */
  deviceGreedy?: boolean;
  /** A replica over several GPUs (binding.ts NativeLoadOptions): how the model is split, and each GPU's share. */
  splitMode?: SplitMode;
  tensorSplit?: number[];
}

const hasExtras = (s: Sampling): boolean =>
  Boolean(s.presencePenalty || s.frequencyPenalty || (s.logitBias && s.logitBias.length > 0) || s.grammar || s.logprobs !== undefined);

const deliver = (lp: TokenLogprob | undefined, to: ((lp: TokenLogprob) => void) | undefined): void => {
  if (lp && to) to(lp);
};

class NativeSequence implements RuntimeSequence {
  held: Token[] = [];
  kvNamespace = "";

  constructor(
    readonly id: number,
    private readonly rt: NativeRuntime,
  ) {}

  contextTokens(): readonly Token[] {
    return this.held;
  }

  keepPrefix(tokens: readonly Token[]): Promise<number> {
    return this.rt.scheduler.exclusive(() => this.adoptPrefix(tokens));
  }

  async evaluatePrefix(tokens: readonly Token[]): Promise<number> {
    const reused = await this.keepPrefix(tokens);
    if (reused < tokens.length) {
      await this.rt.scheduler.evaluate({ seq: this.id, pos: reused, tokens: tokens.slice(reused), sample: false });
      this.held = [...tokens];
    }
    return reused;
  }

  async evaluateJoined(tokens: readonly Token[], join: JoinRequest): Promise<{ reused: number; joined: number }> {
    let reused = await this.rt.scheduler.exclusive(() => this.adoptPrefix(tokens));
    let at = reused;
    let joined = 0;
    for (const { start, end, keep } of join.spans) {
      if (keep <= at) continue;
      if (start < at) {
        // Held in part (documents that start alike): the whole document's own KV replaces the part.
        await this.rt.scheduler.exclusive(() => this.rt.engine.seqRm(this.id, start, -1));
        reused = Math.min(reused, start);
      } else if (start > at) {
        // What comes before the document (the lead, a document held in part) is computed in place.
        await this.rt.scheduler.evaluate({ seq: this.id, pos: at, tokens: tokens.slice(at, start), sample: false });
      }
      // The sequence holds exactly the tokens before the document now; a join that fails goes on from here.
      this.held = tokens.slice(0, start);
      at = start;
      const own = [...tokens.slice(0, join.lead), ...tokens.slice(start, end)];
      const state = await join.chunk(own, (start) => this.rt.computeAlone(own, start));
      if (!(await this.rt.moveIn(state, this.id, { lead: join.lead, at: start, keep }))) break;
      this.held = tokens.slice(0, keep);
      joined += keep - start;
      at = keep;
      if (keep < end) break; // the rest is the recomputed tail
    }
    if (at < tokens.length) {
      await this.rt.scheduler.evaluate({ seq: this.id, pos: at, tokens: tokens.slice(at), sample: false });
      this.held = [...tokens];
    } else if (joined > 0) {
      // Moved keys are re-rotated at the next decode, and a state exported before it (a prefill
      // pod's hand-off, with nothing after the documents but the last prompt token) holds them
      // unrotated: the last joined token is computed in place, so that decode happens here.
      await this.rt.scheduler.exclusive(() => this.rt.engine.seqRm(this.id, at - 1, -1));
      await this.rt.scheduler.evaluate({ seq: this.id, pos: at - 1, tokens: tokens.slice(at - 1), sample: false });
      joined -= 1;
    }
    return { reused, joined };
  }

  /** Drops KV beyond `length` (tokens decoded ahead that the consumer never took). */
  private trimTo(length: number): Promise<void> {
    if (length >= this.held.length) return Promise.resolve();
    return this.rt.scheduler.exclusive(() => {
      this.rt.engine.seqRm(this.id, length, -1);
      this.held = this.held.slice(0, length);
    });
  }

  /** Keeps the longest prefix of `tokens` this sequence or (by seq_cp) any other one holds. */
  private adoptPrefix(tokens: readonly Token[]): number {
    const own = commonPrefixLength(this.held, tokens);
    const donor = this.rt.bestDonor(this, tokens, own);
    const engine = this.rt.engine;
    if (donor) {
      engine.seqRm(this.id, 0, -1);
      if (this.rt.info.kvStreams === 1) engine.seqCp(donor.seq.id, this.id, 0, donor.length);
      else {
        // Across streams llama.cpp copies the donor's whole stream on the device at the next decode.
        engine.seqCp(donor.seq.id, this.id, -1, -1);
        engine.seqRm(this.id, donor.length, -1);
      }
      this.held = tokens.slice(0, donor.length);
      return donor.length;
    }
    if (own < this.held.length) {
      engine.seqRm(this.id, own, -1);
      this.held = this.held.slice(0, own);
    }
    return own;
  }

  /** The sampler of this sequence for one generation: the plain config, then the extras it asks for. */
  private setSampling(sampling: Sampling): Promise<void> {
    const { temperature, topK, topP, seed } = sampling;
    return this.rt.scheduler.exclusive(() => {
      const engine = this.rt.engine;
      engine.setSampler(this.id, temperature, topK, topP, seed);
      if (!hasExtras(sampling)) return;
      const bias = sampling.logitBias ?? [];
      engine.setExtras(
        this.id,
        sampling.presencePenalty ?? 0,
        sampling.frequencyPenalty ?? 0,
        Int32Array.from(bias, ([t]) => t),
        Float32Array.from(bias, ([, b]) => b),
        sampling.grammar ?? "",
        sampling.logprobs ?? -1,
      );
    });
  }

  /** The logprobs of the tokens just sampled, in order. */
  private takeLogprobs(): TokenLogprob[] {
    const got = this.rt.engine.takeLogprobs(this.id);
    return Array.from(got.tokens, (token, i) => ({
      token,
      logprob: got.logprobs[i]!,
      top: Array.from(got.topTokens.subarray(i * got.k, (i + 1) * got.k), (t, j) => ({ token: t, logprob: got.topLogprobs[i * got.k + j]! })),
    }));
  }

  async *generate(next: readonly Token[], sampling: Sampling, onLogprob?: (lp: TokenLogprob) => void, limit = Infinity): AsyncGenerator<Token, void, void> {
    await this.setSampling(sampling);
    const logprobs = sampling.logprobs !== undefined && onLogprob !== undefined;
    let input: Token[] = [...next];
    let consumed = this.held.length;
    let left = limit;
    try {
      while (left > 0 && this.held.length + input.length <= this.rt.info.contextSize) {
        const room = Math.min(this.rt.info.contextSize - this.held.length - input.length, left - 1);
        const got = await this.rt.scheduler.evaluate({ seq: this.id, pos: this.held.length, tokens: input, sample: true, room, last: left === 1 });
        left -= got.length;
        this.held.push(...input, ...got.slice(0, -1));
        consumed += input.length;
        const lps = logprobs ? this.takeLogprobs() : [];
        for (const [i, token] of got.entries()) {
          deliver(lps[i], onLogprob);
          yield token;
          consumed++;
        }
        input = got.slice(-1);
        consumed--;
        if (input.length === 0) return;
      }
    } finally {
      await this.trimTo(consumed);
    }
  }

  async exportState(): Promise<Buffer> {
    return this.rt.scheduler.exclusive(async () => this.rt.engine.stateGetFile(this.id, Int32Array.from(this.held)));
  }

  exportRange(from: number, to: number): Promise<Buffer> {
    if (!(from >= 0 && from < to && to <= this.held.length)) throw new RangeError(`exportRange(${from}, ${to}): the sequence holds ${this.held.length} tokens`);
    return this.rt.exportRange(this.id, this.held.slice(from, to), from);
  }

  async importParts(parts: readonly Buffer[]): Promise<void> {
    const tokens = parts.flatMap((p) => seqStateTokens(p));
    this.held = [];
    await this.rt.importParts(this.id, parts);
    this.held = tokens;
  }

  importPartsAt(parts: readonly PlacedPart[]): Promise<void> {
    return this.rt.importPartsAt(this.id, parts);
  }

  async adoptParts(tokens: readonly Token[]): Promise<void> {
    await this.rt.scheduler.exclusive(() => {
      if (this.rt.engine.seqPosMax(this.id) === tokens.length - 1) {
        this.held = [...tokens];
        return;
      }
      this.rt.engine.seqRm(this.id, 0, -1);
      this.held = [];
      throw new Error(`the imported parts do not make one sequence of ${tokens.length} tokens`);
    });
  }

  async importState(state: Buffer): Promise<void> {
    // The addon checks magic, version and size again before llama.cpp reads the state.
    const tokens = seqStateTokens(state);
    await importFile(this.rt, this.id, state, () => (this.held = []));
    // Held (and lent to other sequences) once its copies are in.
    this.held = tokens;
  }

  stateSize(): Promise<number> {
    return this.rt.scheduler.exclusive(() => sharedStateSize(this.rt.engine, this.id));
  }

  exportStateTo(region: number): Promise<LocalState> {
    return this.rt.scheduler.exclusive(() => exportShared(this.rt.engine, this.id, this.held, region));
  }

  async importStateFrom(region: number, state: LocalState): Promise<void> {
    await this.rt.scheduler.exclusive(async () => {
      this.held = [];
      await importShared(this.rt.engine, this.id, region, state);
      this.held = [...state.tokens];
    });
  }

  clear(): Promise<void> {
    return this.rt.scheduler.exclusive(() => {
      this.rt.engine.seqRm(this.id, 0, -1);
      this.held = [];
    });
  }
}

/** See NativeRuntimeOptions.kvUnified: unified on a GPU, one stream per sequence on CPU. */
function kvUnifiedFor(opts: NativeRuntimeOptions): boolean {
  return opts.kvUnified ?? (opts.gpuLayers ?? 0) !== 0;
}

export class NativeRuntime implements ModelRuntime {
  private disposed = false;
  readonly info: RuntimeInfo;
  readonly features: RuntimeFeatures;
  readonly sequences: readonly NativeSequence[];
  readonly scheduler: StepScheduler;

  private constructor(
    readonly engine: NativeEngine,
    private readonly opts: NativeRuntimeOptions,
    private readonly addon: NativeAddon,
  ) {
    const native = engine.info();
    this.info = {
      modelId: basename(opts.modelPath).replace(/\.gguf$/, ""),
      contextSize: opts.contextSize,
      parallel: opts.parallel,
      kvStreams: native.kvUnified ? 1 : opts.parallel,
      flashAttention: native.flashAttention,
      threads: opts.threads,
    };
    this.features = { backend: "native", vocabSize: native.nVocab, logprobs: true, penalties: true, logitBias: true, grammar: true };
    this.scheduler = new StepScheduler(engine, Math.max(opts.batchSize ?? 512, opts.parallel), opts.decodeLookahead ?? 1);
    const all = Array.from({ length: opts.parallel }, (_, i) => new NativeSequence(i, this));
    this.sequences = native.kvUnified ? all : all.map((s) => Object.assign(s, { evaluateJoined: undefined, exportRange: undefined, importParts: undefined, importPartsAt: undefined, adoptParts: undefined }));
  }

  exportStats(): { exports: number; copies: number; waitSeconds: number; copySeconds: number } {
    return this.engine.exportStats();
  }

  importStats(): { imports: number; copies: number; seconds: number } {
    return this.engine.importStats();
  }

  releaseState(state: Buffer): void {
    this.addon.kvRelease?.(state);
  }

  /** The engine's extra sequence (the unified KV has one beyond the pool's): documents are computed alone there. */
  private get scratch(): number {
    return this.opts.parallel;
  }

  private scratchQueue: Promise<unknown> = Promise.resolve();

  /** Runs `fn` when no other use of the scratch sequence is in progress (a computation spans steps). */
  private withScratch<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.scratchQueue.then(fn);
    this.scratchQueue = run.catch(() => undefined);
    return run;
  }

  /** The state of `tokens` computed alone, in the scratch sequence. */
  async computeAlone(tokens: readonly Token[], start?: Buffer): Promise<Buffer> {
    const have = start ? seqStateTokens(start) : [];
    if (!have.every((t, i) => t === tokens[i])) throw new Error("computeAlone: the start state is not of a prefix of the tokens");
    const from = have.length;
    return this.withScratch(async () => {
      await this.scheduler.exclusive(() => this.engine.seqRm(this.scratch, -1, -1));
      try {
        if (start) await this.scheduler.exclusive(() => this.engine.stateSetFile(this.scratch, start));
        if (from < tokens.length) await this.scheduler.evaluate({ seq: this.scratch, pos: from, tokens: tokens.slice(from), sample: false });
        return await this.scheduler.exclusive(async () => this.engine.stateGetFile(this.scratch, Int32Array.from(tokens)));
      } finally {
        await this.scheduler.exclusive(() => this.engine.seqRm(this.scratch, -1, -1));
      }
    });
  }

  /** Positions [from, from + tokens.length) of `seq` alone: shared with the scratch sequence (no copy), exported from there. */
  exportRange(seq: number, tokens: readonly Token[], from: number): Promise<Buffer> {
    const e = this.engine;
    return this.withScratch(() =>
      this.scheduler.exclusive(async () => {
        e.seqRm(this.scratch, -1, -1);
        e.seqCp(seq, this.scratch, from, from + tokens.length);
        try {
          return await e.stateGetFile(this.scratch, Int32Array.from(tokens));
        } finally {
          e.seqRm(this.scratch, -1, -1);
        }
      }),
    );
  }

  /** Within one exclusive call: each part into the scratch sequence, then its cells at [from, to) shared with `seq` (no copy), which keeps its own. */
  importPartsAt(seq: number, parts: readonly PlacedPart[]): Promise<void> {
    return this.withScratch(() => this.scheduler.exclusive(() => partsInto(this.engine, this.scratch, seq, parts)));
  }

  /** Within one exclusive call: `seq` cleared, then the parts one after another from position 0 (importPartsAt), checked to make one sequence. */
  importParts(seq: number, parts: readonly Buffer[]): Promise<void> {
    let at = 0;
    const placed = parts.map((state) => ({ state, from: at, to: (at += seqStateTokens(state).length) }));
    return this.withScratch(() =>
      this.scheduler.exclusive(() => {
        this.engine.seqRm(seq, 0, -1);
        partsInto(this.engine, this.scratch, seq, placed);
        // Each part's cells carry their own positions: a part that is not the next range shows here.
        if (at > 0 && this.engine.seqPosMax(seq) !== at - 1) {
          this.engine.seqRm(seq, 0, -1);
          throw new Error(`the hand-off's parts do not make one sequence of ${at} tokens`);
        }
      }),
    );
  }



  /**
   * Within one exclusive call: loads a document's own state into the scratch sequence, drops its
   * lead, moves the document to `at` (llama.cpp re-rotates the keys on the next decode) and shares
   * its cells with `seq` up to `keep` (the unified KV: no copy); false when the sequence could not
   * go on from `keep` (nothing joined). Waits for the scratch sequence and the scheduler.
   */
  moveIn(state: Buffer, seq: number, to: { lead: number; at: number; keep: number }): Promise<boolean> {
    return this.withScratch(() => this.scheduler.exclusive(() => moveIn(this.engine, this.scratch, seq, { state, ...to })));
  }

  static async load(opts: NativeRuntimeOptions): Promise<NativeRuntime> {
    const unified = kvUnifiedFor(opts);
    const addon = await loadNativeAddon();
    const engine = await addon.load(opts.modelPath, {
      gpuLayers: opts.gpuLayers ?? 0,
      contextSize: unified ? (opts.kvCells ?? opts.contextSize * opts.parallel) : opts.contextSize * opts.parallel,
      // The unified KV gets one sequence more than the pool: documents are computed alone there.
      sequences: unified ? opts.parallel + 1 : opts.parallel,
      batchSize: Math.max(opts.batchSize ?? 512, opts.parallel),
      threads: opts.threads,
      flashAttention: opts.flashAttention ?? false,
      kvUnified: unified,
      swaFull: true,
      gpuEmbeddings: opts.gpuEmbeddings ?? true,
      ...(opts.pipelineDecode === undefined ? {} : { pipeline: opts.pipelineDecode }),
      deviceGreedy: opts.deviceGreedy ?? false,
      ...splitOptions(opts),
    });
    return new NativeRuntime(engine, opts, addon);
  }

  /** The other sequence holding the longest prefix of `tokens`, if longer than `than`. */
  bestDonor(self: NativeSequence, tokens: readonly Token[], than: number): { seq: NativeSequence; length: number } | undefined {
    if (this.opts.sharePrefixes === false) return undefined;
    // A cross-stream copy lands at the next decode: leave at least one token to evaluate after it.
    const cap = this.info.kvStreams === 1 ? tokens.length : tokens.length - 1;
    let best: { seq: NativeSequence; length: number } | undefined;
    for (const seq of this.sequences) {
      // Another tenant's KV is never lent: a prefix copied across namespaces is the side channel.
      if (seq === self || seq.kvNamespace !== self.kvNamespace) continue;
      const length = Math.min(cap, commonPrefixLength(seq.held, tokens));
      if (length > (best?.length ?? than)) best = { seq, length };
    }
    return best;
  }

  get stepStats(): StepStats {
    return this.scheduler.stats;
  }

  kvStrayTokens(): Promise<number> {
    return this.scheduler.exclusive(() => this.sequences.reduce((n, s) => n + Math.abs(this.engine.seqPosMax(s.id) + 1 - s.held.length), 0));
  }

  /** Multi-step decoding depth (see StepScheduler); may be changed while serving. */
  get lookahead(): number {
    return this.scheduler.lookahead;
  }

  set lookahead(k: number) {
    this.scheduler.lookahead = Math.max(1, Math.floor(k));
  }

  /** Resolves once the device has finished all queued work (prefills without sampling return early). */
  synchronize(): Promise<void> {
    return this.scheduler.exclusive(() => this.engine.synchronize());
  }

  get gpu(): boolean {
    return this.engine.info().gpu;
  }

  tokenize(text: string): Token[] {
    return Array.from(this.engine.tokenize(text, true, false));
  }

  tokenizeChat(messages: readonly ChatMessage[]): { tokens: Token[]; stop: string[] } {
    const text = this.engine.applyChatTemplate(
      messages.map((m) => m.role),
      messages.map((m) => m.content),
    );
    if (text !== null) return { tokens: Array.from(this.engine.tokenize(text, true, true)), stop: [] };
    const plain = messages.map((m) => `${m.role === "assistant" ? "Assistant" : m.role === "system" ? "System" : "User"}: ${m.content}`).join("\n");
    return { tokens: this.tokenize(`${plain}\nAssistant:`), stop: ["\nUser:"] };
  }

  detokenize(tokens: readonly Token[]): string {
    return this.engine.detokenize(Int32Array.from(tokens), false);
  }

  /** The BOS token takes the leading-space strip llama.cpp applies to a text's first token. */
  tokenPiece(token: Token): string {
    const bos = this.engine.info().bos;
    return this.engine.detokenize(Int32Array.from(bos >= 0 ? [bos, token] : [token]), false);
  }

  isEndOfGeneration(token: Token): boolean {
    return this.engine.isEog(token);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await this.scheduler.exclusive(async () => this.engine.dispose());
  }
}
