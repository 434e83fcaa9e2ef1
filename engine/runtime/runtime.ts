/**
 * The model runtime behind the engine. Everything above this interface (HTTP, batching
 * admission, P/D hand-off) is runtime-agnostic, so that a better batching path than
 * node-llama-cpp's per-sequence evaluate() (for example llama.cpp's own server loop) can
 * replace it without touching the serving code.
 */
export type Token = number;

export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

export interface Sampling {
  /** 0 means greedy. */
  temperature: number;
  topP: number;
  topK: number;
  seed?: number;
  /** OpenAI's presence penalty (-2..2, default 0): subtracted once from the logit of every token already generated. */
  presencePenalty?: number;
  /** OpenAI's frequency penalty (-2..2, default 0): subtracted from a token's logit once per time it was generated. */
  frequencyPenalty?: number;
  /** Added to the logits of these tokens before sampling (-100..100; -100 bans, 100 forces). Default none. */
  logitBias?: readonly (readonly [Token, number])[];
  /** A GBNF grammar (start rule `root`) the generated text must match. Default none. */
  grammar?: string;
  /**
   * Report each sampled token's log-probability (of the model's distribution, before penalties,
   * biases and grammar) and its `logprobs` most likely alternatives (0..20). Default off.
   */
  logprobs?: number;
}

/** A sampled token's log-probability and the most likely alternatives at its position. */
export interface TokenLogprob {
  token: Token;
  logprob: number;
  top: { token: Token; logprob: number }[];
}

/** What a runtime can do beyond plain sampling; the engine refuses a request asking for more (400). */
export interface RuntimeFeatures {
  /** The backend's name, for error messages. */
  backend: string;
  /** Tokens of the vocabulary (logit_bias keys must be below it). */
  vocabSize: number;
  logprobs: boolean;
  penalties: boolean;
  logitBias: boolean;
  grammar: boolean;
}

export interface RuntimeInfo {
  /** The name clients use; the engine also answers to "default". */
  modelId: string;
  /**
   * The name the API lists first and answers to besides modelId (--served-model-name: a Model
   * resource's name). modelId, the GGUF file's, stays the model's identity in P/D hand-offs.
   */
  servedName?: string;
  /** Tokens one sequence can hold (prompt + generated). */
  contextSize: number;
  /** Concurrent sequences in the shared context. */
  parallel: number;
  /** llama.cpp KV streams in the context: native, 1 (the unified KV of all sequences, or the only sequence's); llama, one per sequence. */
  kvStreams: number;
  /** Flash attention on means V is stored untransposed in the KV state. */
  flashAttention: boolean;
  threads: number;
}

/** One sequence of the shared context. Owned by one request at a time (see SequencePool). */
/** What evaluateJoined needs: the documents to join and where each one's own KV comes from. */
export interface JoinRequest {
  /** Each document's span in the tokens, and the end of the part of it to join (the rest is computed in place). */
  spans: ReadonlyArray<{ start: number; end: number; keep: number }>;
  /** Tokens before the first document ([BOS]), which every document's own KV starts with. */
  lead: number;
  /**
   * The state of `tokens` (lead + one document) computed alone: from a cache, or computed now
   * (`compute`, from `start` when given: the state of a prefix of `tokens`, from the KV store).
   */
  chunk(tokens: readonly Token[], compute: (start?: Buffer) => Promise<Buffer>): Promise<Buffer>;
}

/** A part of a sequence's state: a state of its own cells, at positions [from, to). */
export interface PlacedPart {
  state: Buffer;
  from: number;
  to: number;
}

export interface RuntimeSequence {
  readonly id: number;
  /**
   * Scope of the KV this sequence holds (a tenant's KV namespace; "" or unset: none). A sequence
   * lends its prefix to another (seq_cp) only within the same namespace. SequencePool sets it
   * when a request leases the sequence, to a value no request has while it is still to be cleared.
   */
  kvNamespace?: string;
  /** Tokens whose KV the sequence holds now (kept after a request for prefix reuse). */
  contextTokens(): readonly Token[];
  /**
   * Makes the sequence hold KV for exactly `tokens`, reusing the longest common prefix it
   * already holds; returns how many tokens were reused.
   */
  evaluatePrefix(tokens: readonly Token[]): Promise<number>;
  /**
   * evaluatePrefix without the evaluation: keeps the longest prefix of `tokens` it (or, shared,
   * another sequence) holds, drops the rest, and returns its length. The caller evaluates the
   * remainder itself, with generate (CompletionService: a short remainder and the prompt's last
   * token in one step, not two).
   */
  keepPrefix?(tokens: readonly Token[]): Promise<number>;
  /**
   * evaluatePrefix for a prompt with RAG documents: each document span in `join.spans` (in order,
   * wholly before the part computed in place) comes from its own KV — `join.chunk` gives the
   * state of [lead] + that document computed alone — moved to its position, instead of being
   * computed after the documents before it. Returns the tokens reused and the tokens joined.
   * Runtimes that cannot move KV between sequences do not have it (the caller computes instead).
   */
  evaluateJoined?(tokens: readonly Token[], join: JoinRequest): Promise<{ reused: number; joined: number }>;
  /**
   * Evaluates `next` and yields sampled tokens until the consumer stops iterating. With
   * `sampling.logprobs` set, `onLogprob` gets each token's log-probabilities before it is yielded.
   * `limit`: the consumer takes at most this many tokens (max_tokens), so a runtime neither decodes
   * past them nor starts the decode of the last one ahead (a pipelined engine would, and whoever
   * touches the sequence next waits for it and rolls it back).
   */
  generate(next: readonly Token[], sampling: Sampling, onLogprob?: (lp: TokenLogprob) => void, limit?: number): AsyncGenerator<Token, void, void>;
  /** llama.cpp's sequence state (the `ggsq` file format: header, tokens, KV). */
  exportState(): Promise<Buffer>;
  /**
   * The KV of the held positions [from, to) alone, as a sequence state of those tokens (the cells
   * keep their positions): one part of a hand-off sent while later parts are still computed.
   * Runtimes that cannot share cells between sequences (no unified KV) do not have it.
   */
  exportRange?(from: number, to: number): Promise<Buffer>;
  /**
   * Makes the sequence hold the parts' tokens, in order: each part a state exportRange gave for
   * the positions right after the previous part's (the first from 0). With exportRange.
   */
  importParts?(parts: readonly Buffer[]): Promise<void>;
  /**
   * Parts of a state (each a state of its own cells, at positions [from, to)) imported into this
   * sequence, which keeps the cells it already has: a KV store load's blocks as they arrive (the
   * unified KV cache shares their cells, no copy). Clear the sequence first; adoptParts ends it.
   * Absent: whole states only.
   */
  importPartsAt?(parts: readonly PlacedPart[]): Promise<void>;
  /** After importPartsAt: the sequence holds `tokens` from position 0; throws (the sequence cleared) when its cells do not end at their last position. */
  adoptParts?(tokens: readonly Token[]): Promise<void>;
  importState(state: Buffer): Promise<void>;
  /**
   * The state with its rows written into a shared region (engine/native/binding.ts SharedRegions,
   * opened in this process: `region` is its handle), device to device on a GPU; what comes back is
   * the rest. Absent where the runtime cannot (the llama backend, a build without the copy wrapper).
   */
  exportStateTo?(region: number): Promise<LocalState>;
  /** Bytes of the state exportStateTo writes now (the region it needs). With exportStateTo. */
  stateSize?(): Promise<number>;
  /** Imports what exportStateTo described, its rows read from `region` (this process's handle of it). */
  importStateFrom?(region: number, state: LocalState): Promise<void>;
  clear(): Promise<void>;
}

/** A sequence state whose rows are in a shared region: the tokens it holds, and its headers and row layout (binding.ts SharedState). */
export interface LocalState {
  tokens: Token[];
  size: number;
  meta: Buffer;
  rows: Float64Array;
}

export interface ModelRuntime extends AsyncDisposable {
  readonly info: RuntimeInfo;
  readonly features: RuntimeFeatures;
  /** Layers are on a GPU: layers asked for (--gpu-layers) and a build that offloads (native); absent: no. */
  readonly gpu?: boolean;
  tokenize(text: string): Token[];
  /** Applies the model's chat template; returns prompt tokens and extra stop strings. */
  tokenizeChat(messages: readonly ChatMessage[]): { tokens: Token[]; stop: string[] };
  detokenize(tokens: readonly Token[]): string;
  /**
   * One token's text as it appears inside a text (with its leading space, which detokenizing the
   * token alone drops); for logprobs. Default: detokenize([token]).
   */
  tokenPiece?(token: Token): string;
  isEndOfGeneration(token: Token): boolean;
  readonly sequences: readonly RuntimeSequence[];
  /**
   * KV positions no sequence accounts for: for every sequence, how far the KV cache's last
   * position of it is from the tokens it holds (0 when they agree). A leak detector; where a
   * runtime cannot tell, undefined.
   */
  kvStrayTokens?(): Promise<number>;
  /** The batching loop's running totals (native runtime): how full its steps are and how long they take. */
  readonly stepStats?: StepStats;
  /**
   * The state of `tokens` computed alone, in no sequence of the pool: a RAG document's own KV
   * (JoinRequest.chunk). Usable where the sequences join (evaluateJoined). `start`: the state of a
   * prefix of `tokens` (the document's stored blocks) to go on from instead of computing it.
   */
  computeAlone?(tokens: readonly Token[], start?: Buffer): Promise<Buffer>;
  /**
   * A state its last reader is done with (sent to the decode pod, imported): its page-locked block
   * back to the pool now rather than when V8 collects the Buffer, so the next state of that size
   * reuses it instead of page-locking anew (which costs more than moving it). The Buffer reads as
   * empty after. A no-op for buffers that are not the runtime's.
   */
  releaseState?(state: Buffer): void;
  /** Totals over state exports: waiting for the device's queued work (a prompt's last layers), then copying the state out. */
  exportStats?(): { exports: number; copies: number; waitSeconds: number; copySeconds: number };
  /** Totals over state imports: seconds in the engine's read of the state (the rest of an import is JavaScript and waiting for the engine). */
  importStats?(): { imports: number; copies: number; seconds: number };
}

export interface StepStats {
  /** Tokens decoded, one per sequence per decode. */
  steps: number;
  /** Tokens evaluated (prompt chunks and decodes). */
  tokens: number;
  /** Tokens sampled and handed back. */
  sampled: number;
  /** Native step calls. */
  calls: number;
  /** Sequences over all native step calls (rows / calls = sequences per step). */
  rows: number;
  /** Seconds JavaScript waited on native step calls (busy / wall time = how much of the time the model ran). */
  busySeconds: number;
  /** Prompt tokens evaluated (chunks of more than one token). */
  prefillTokens: number;
  /**
   * The share of busySeconds spent on prompt tokens (a mixed step's time split by its tokens):
   * prefillTokens / prefillSeconds is the rate this engine prefills at, known at any load.
   */
  prefillSeconds: number;
}

/** How many leading tokens two sequences share. */
export function commonPrefixLength(a: readonly Token[], b: readonly Token[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}
