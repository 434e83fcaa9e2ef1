/**
 * Loads the engine's native addon (engine/native: llama.cpp driven a step at a time, built by
 * scripts/native/build.sh from the llama.cpp source node-llama-cpp bundles).
 * LLMFLEET_NATIVE_ADDON names a built llmfleet_native.node (the GPU machine, images); without it
 * the CPU build is made on first use (minutes, then cached under ~/.cache/llmfleet/native).
 */
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import { resolve } from "node:path";

export interface NativeLoadOptions {
  /** Layers on the GPU: 0 (default) = CPU only, -1 = all. */
  gpuLayers?: number;
  /** KV cells of the whole context (all sequences share them when kvUnified). */
  contextSize: number;
  sequences: number;
  /** Tokens per llama_decode call; default 512. */
  batchSize?: number;
  ubatchSize?: number;
  threads: number;
  /** Default false. Decides the V layout of the KV state: P/D sides must agree. */
  flashAttention?: boolean;
  /** Default true: one KV buffer for all sequences, so a prefix is shared by seqCp at no cost. */
  kvUnified?: boolean;
  /** Default true: the full KV on sliding-window models (prefix reuse needs it). */
  swaFull?: boolean;
  /** Default true: with layers on a GPU, the token embeddings go there too (one GPU graph per decode step). */
  gpuEmbeddings?: boolean;
  /** Pipelined decoding (engine.h): default on when layers are on a GPU; true/false forces it. */
  pipeline?: boolean;
  /** Greedy sequences sample on the device (engine.h device_greedy). Default false. */
  deviceGreedy?: boolean;
}

export interface NativeInfo {
  nCtx: number;
  nCtxSeq: number;
  nSeqMax: number;
  nVocab: number;
  /** Width of the model (token embedding length). */
  nEmbd: number;
  modelBytes: number;
  modelParams: number;
  description: string;
  flashAttention: boolean;
  kvUnified: boolean;
  gpu: boolean;
  /** Times llama.cpp reused its previous compute graph (a decode step that did not rebuild it). */
  graphsReused: number;
  /** Pipelined decoding is on. */
  pipeline: boolean;
  /** Greedy sequences sample on the device. */
  deviceGreedy: boolean;
  /** Pipelined decodes a step used, and ones rolled back because something else came first. */
  speculatedUsed: number;
  speculatedDropped: number;
  /** Seconds spent sampling steps once their logits were ready (the device waits meanwhile). */
  sampleSeconds: number;
  /** -1 when the model adds no BOS token. */
  bos: number;
}

export interface NativeEngine {
  info(): NativeInfo;
  /**
   * One batch: entry i evaluates counts[i] tokens of seqs[i] from position pos0[i]; sample[i] asks
   * for the next token. With lookahead k > 1 (every entry sampling) each sequence decodes k tokens,
   * feeding each sampled token back, before the call returns: k tokens per entry, -1 after an
   * end-of-generation token.
   */
  step(seqs: Int32Array, pos0: Int32Array, counts: Int32Array, tokens: Int32Array, sample: Uint8Array, lookahead?: number): Promise<Int32Array>;
  /** Waits for the device to finish queued work (llama.cpp decodes asynchronously when no logits are read). */
  synchronize(): void;
  /**
   * Diagnostics: greedy-decodes n tokens of seq in a C++ loop with no JavaScript in it; resolves with the seconds of each step.
   * mode bits (engine.h): 1 llama-bench's batch (llama_batch_get_one), 2 no logits read (synchronize only).
   */
  decodeLoop(seq: number, pos0: number, first: number, n: number, mode?: number): Promise<number[]>;
  /** temperature 0 = greedy. */
  setSampler(seq: number, temperature: number, topK: number, topP: number, seed?: number): void;
  tokenize(text: string, addSpecial: boolean, parseSpecial: boolean): Int32Array;
  detokenize(tokens: Int32Array, unparseSpecial?: boolean): string;
  isEog(token: number): boolean;
  /** null when llama.cpp does not know the model's chat template. */
  applyChatTemplate(roles: string[], contents: string[]): string | null;
  seqRm(seq: number, p0: number, p1: number): boolean;
  seqCp(src: number, dst: number, p0: number, p1: number): void;
  seqPosMax(seq: number): number;
  /** The state in llama.cpp's file format (ggsq header, tokens, state), built in one allocation with no copy. */
  stateGetFile(seq: number, tokens: Int32Array): Promise<Buffer>;
  /** Loads a file-format state synchronously without copying it; returns the state bytes read. Throws on a bad state. */
  stateSetFile(seq: number, state: Buffer): number;
  /**
   * Refuses new calls at once and frees the model and context when the calls in flight have
   * settled. Every other method throws once dispose() was called; a method that touches the
   * context (step, seq*, state*, setSampler, synchronize, decodeLoop) also throws while another
   * call is still running on it. Bad arguments are TypeErrors / RangeErrors.
   */
  dispose(): Promise<void>;
}

export interface NativeAddon {
  load(modelPath: string, options: NativeLoadOptions): Promise<NativeEngine>;
}

const ROOT = resolve(import.meta.dirname, "../..");

/** The addon's path: LLMFLEET_NATIVE_ADDON, or the cached CPU build (built now if missing). */
export function nativeAddonPath(): string {
  const fromEnv = process.env.LLMFLEET_NATIVE_ADDON;
  if (fromEnv) return fromEnv;
  const out = execFileSync("bash", [resolve(ROOT, "scripts/native/build.sh")], { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] });
  return out.toString().trim().split("\n").pop() ?? "";
}

let addon: NativeAddon | undefined;

export function loadNativeAddon(): NativeAddon {
  addon ??= createRequire(import.meta.url)(nativeAddonPath()) as NativeAddon;
  return addon;
}
