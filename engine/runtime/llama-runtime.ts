/** ModelRuntime on node-llama-cpp (llama.cpp CPU prebuilt here). */
import { readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { randomUUID } from "node:crypto";
import {
  getLlama,
  LlamaLogLevel,
  resolveChatWrapper,
  type ChatHistoryItem,
  type ChatWrapper,
  type Llama,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaModel,
  type Token as LlamaToken,
} from "node-llama-cpp";
import type { ChatMessage, ModelRuntime, RuntimeFeatures, RuntimeInfo, RuntimeSequence, Sampling, Token } from "./runtime.ts";

export interface LlamaRuntimeOptions {
  modelPath: string;
  /** llama.cpp threads; set explicitly because the default oversubscribes small machines. */
  threads: number;
  /** Tokens per sequence. */
  contextSize: number;
  /** Sequences in the one shared context. */
  parallel: number;
  /** Default 512. */
  batchSize?: number;
  /** Default false: both P/D sides must agree (it decides the V layout of the KV state). */
  flashAttention?: boolean;
}

const asLlama = (t: readonly Token[]): LlamaToken[] => t as LlamaToken[];

class LlamaSequence implements RuntimeSequence {
  constructor(
    readonly id: number,
    private readonly seq: LlamaContextSequence,
  ) {}

  contextTokens(): readonly Token[] {
    return this.seq.contextTokens;
  }

  async evaluatePrefix(tokens: readonly Token[]): Promise<number> {
    const { firstDifferentIndex } = this.seq.compareContextTokens(asLlama(tokens));
    const reused = Math.min(firstDifferentIndex, tokens.length);
    if (reused < this.seq.nextTokenIndex) {
      await this.seq.eraseContextTokenRanges([{ start: reused, end: this.seq.nextTokenIndex }]);
    }
    if (reused < tokens.length) await this.seq.evaluateWithoutGeneratingNewTokens(asLlama(tokens.slice(reused)));
    return reused;
  }

  async *generate(next: readonly Token[], sampling: Sampling): AsyncGenerator<Token, void, void> {
    const options = {
      temperature: sampling.temperature,
      topP: sampling.topP,
      topK: sampling.topK,
      ...(sampling.seed === undefined ? {} : { seed: sampling.seed }),
    };
    yield* this.seq.evaluate(asLlama(next), options);
  }

  /** node-llama-cpp saves and loads sequence state only through files. */
  async exportState(): Promise<Buffer> {
    const path = join(tmpdir(), `llmfleet-kv-${randomUUID()}.ggsq`);
    try {
      await this.seq.saveStateToFile(path);
      return await readFile(path);
    } finally {
      await rm(path, { force: true });
    }
  }

  async importState(state: Buffer): Promise<void> {
    const path = join(tmpdir(), `llmfleet-kv-${randomUUID()}.ggsq`);
    try {
      await writeFile(path, state);
      await this.seq.loadStateFromFile(path, { acceptRisk: true });
    } finally {
      await rm(path, { force: true });
    }
  }

  clear(): Promise<void> {
    return this.seq.clearHistory();
  }
}

function toChatHistory(messages: readonly ChatMessage[]): ChatHistoryItem[] {
  const history: ChatHistoryItem[] = messages.map((m) => {
    if (m.role === "system") return { type: "system", text: m.content };
    if (m.role === "user") return { type: "user", text: m.content };
    return { type: "model", response: [m.content] };
  });
  history.push({ type: "model", response: [] });
  return history;
}

export class LlamaRuntime implements ModelRuntime {
  private disposed = false;

  private readonly llama: Llama;
  private readonly model: LlamaModel;
  private readonly context: LlamaContext;
  private readonly chatWrapper: ChatWrapper;
  readonly info: RuntimeInfo;
  /** The API passes this backend temperature, top-p, top-k and seed only; the engine refuses the rest (400). */
  readonly features: RuntimeFeatures;
  readonly sequences: readonly RuntimeSequence[];

  private constructor(parts: {
    llama: Llama;
    model: LlamaModel;
    context: LlamaContext;
    chatWrapper: ChatWrapper;
    info: RuntimeInfo;
    sequences: readonly RuntimeSequence[];
  }) {
    this.llama = parts.llama;
    this.model = parts.model;
    this.context = parts.context;
    this.chatWrapper = parts.chatWrapper;
    this.info = parts.info;
    this.sequences = parts.sequences;
    // vocabSize 0: logit_bias is refused before its tokens are checked.
    this.features = { backend: "llama", vocabSize: 0, logprobs: false, penalties: false, logitBias: false, grammar: false };
  }

  static async load(opts: LlamaRuntimeOptions): Promise<LlamaRuntime> {
    const llama = await getLlama({ gpu: false, build: "never", maxThreads: opts.threads, logLevel: LlamaLogLevel.error });
    const model = await llama.loadModel({ modelPath: opts.modelPath });
    const flashAttention = opts.flashAttention ?? false;
    const context = await model.createContext({
      sequences: opts.parallel,
      contextSize: opts.contextSize,
      batchSize: opts.batchSize ?? 512,
      flashAttention,
      threads: { ideal: opts.threads, min: opts.threads },
      // Prefix reuse needs the full KV even on sliding-window models (Gemma 3).
      swaFullCache: true,
    });
    const sequences = Array.from({ length: opts.parallel }, (_, i) => new LlamaSequence(i, context.getSequence()));
    const info: RuntimeInfo = {
      modelId: basename(opts.modelPath).replace(/\.gguf$/, ""),
      contextSize: context.contextSize,
      parallel: opts.parallel,
      kvStreams: opts.parallel,
      flashAttention: context.flashAttention === true,
      threads: opts.threads,
    };
    return new LlamaRuntime({ llama, model, context, chatWrapper: resolveChatWrapper(model), info, sequences });
  }

  tokenize(text: string): Token[] {
    const bos = this.model.tokens.bos;
    const tokens = this.model.tokenize(text, false);
    return bos === null ? tokens : [bos, ...tokens];
  }

  tokenizeChat(messages: readonly ChatMessage[]): { tokens: Token[]; stop: string[] } {
    const state = this.chatWrapper.generateContextState({ chatHistory: toChatHistory(messages) });
    const stop = state.stopGenerationTriggers
      .map((t) => t.values.map((part) => (typeof part === "string" ? part : "")).join(""))
      .filter((s) => s.length > 0);
    return { tokens: state.contextText.tokenize(this.model.tokenizer), stop };
  }

  detokenize(tokens: readonly Token[]): string {
    return this.model.detokenize(asLlama(tokens));
  }

  isEndOfGeneration(token: Token): boolean {
    return this.model.isEogToken(token as LlamaToken);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await this.context.dispose();
    await this.model.dispose();
    await this.llama.dispose();
  }
}

