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
}

export interface RuntimeInfo {
  /** The name clients use; the engine also answers to "default". */
  modelId: string;
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
  /** Evaluates `next` and yields sampled tokens until the consumer stops iterating. */
  generate(next: readonly Token[], sampling: Sampling): AsyncGenerator<Token, void, void>;
  /** llama.cpp's sequence state (the `ggsq` file format: header, tokens, KV). */
  exportState(): Promise<Buffer>;
  importState(state: Buffer): Promise<void>;
  clear(): Promise<void>;
}

export interface ModelRuntime extends AsyncDisposable {
  readonly info: RuntimeInfo;
  tokenize(text: string): Token[];
  /** Applies the model's chat template; returns prompt tokens and extra stop strings. */
  tokenizeChat(messages: readonly ChatMessage[]): { tokens: Token[]; stop: string[] };
  detokenize(tokens: readonly Token[]): string;
  isEndOfGeneration(token: Token): boolean;
  readonly sequences: readonly RuntimeSequence[];
  /**
   * KV positions no sequence accounts for: for every sequence, how far the KV cache's last
   * position of it is from the tokens it holds (0 when they agree). A leak detector; where a
   * runtime cannot tell, undefined.
   */
  kvStrayTokens?(): Promise<number>;
}

/** How many leading tokens two sequences share. */
export function commonPrefixLength(a: readonly Token[], b: readonly Token[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}
