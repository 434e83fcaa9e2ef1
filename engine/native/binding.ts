/**
 * Loads the engine's native addon (engine/native: llama.cpp driven a step at a time, built by
 * scripts/native/build.sh from the llama.cpp source node-llama-cpp bundles).
 * LLMFLEET_NATIVE_ADDON names a built llmfleet_native.node (the GPU machine, images); without it
 * the CPU build is made on first use (about 100 s on 2 idle cores, then cached under
 * $LLMFLEET_CACHE/native, default ~/.cache/llmfleet/native).
 */
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { availableParallelism } from "node:os";
import { join, resolve } from "node:path";
import { cacheRoot } from "../model/fetch.ts";
import { useNativeKvCodec } from "../kvcodec/native-codec.ts";

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
  /** Several GPUs: whole layers per GPU (layer, the default), each matrix's rows across them (row), or one GPU (none). */
  splitMode?: SplitMode;
  /** Several GPUs: each one's share of the model, in device order (default: by free memory). */
  tensorSplit?: number[];
}

export const SPLIT_MODES = ["layer", "row", "none"] as const;
export type SplitMode = (typeof SPLIT_MODES)[number];

/** The multi-GPU load options that are set (absent ones leave llama.cpp's defaults). */
export function splitOptions(o: { splitMode?: SplitMode | undefined; tensorSplit?: number[] | undefined }): Pick<NativeLoadOptions, "splitMode" | "tensorSplit"> {
  return { ...(o.splitMode === undefined ? {} : { splitMode: o.splitMode }), ...(o.tensorSplit === undefined ? {} : { tensorSplit: o.tensorSplit }) };
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
   * for the next token (1), or for the request's last token (2: a pipelined engine does not start
   * its decode ahead). With lookahead k > 1 (every entry sampling) each sequence decodes k tokens,
   * feeding each sampled token back, before the call returns: k tokens per entry, -1 after an
   * end-of-generation token.
   */
  step(seqs: Int32Array, pos0: Int32Array, counts: Int32Array, tokens: Int32Array, sample: Uint8Array, lookahead?: number): Promise<Int32Array>;
  /** Waits for the device to finish queued work (llama.cpp decodes asynchronously when no logits are read). */
  synchronize(): void;
  /**
   * Totals over state exports: the wait for the device's queued work (a prompt's last layers), then the copy out;
   * copies: llama.cpp's tensor copies (one per contiguous run of the sequence's cells, per layer, K and V),
   * queued on the device and waited for once (copy-batch.h). 0 where the build cannot batch them.
   */
  exportStats(): { exports: number; copies: number; waitSeconds: number; copySeconds: number };
  /** Totals over state imports: seconds in llama.cpp's read of the state (metadata, then the copy to the device); copies as exportStats's. */
  importStats(): { imports: number; copies: number; seconds: number };
  /**
   * Diagnostics: greedy-decodes n tokens of seq in a C++ loop with no JavaScript in it; resolves with the seconds of each step.
   * mode bits (engine.h): 1 llama-bench's batch (llama_batch_get_one), 2 no logits read (synchronize only).
   */
  decodeLoop(seq: number, pos0: number, first: number, n: number, mode?: number): Promise<number[]>;
  /** temperature 0 = greedy. Drops the sequence's extras (setExtras). */
  setSampler(seq: number, temperature: number, topK: number, topP: number, seed?: number): void;
  /**
   * After setSampler: OpenAI's penalties (-2..2), logit biases (-100..100), a GBNF grammar (start
   * rule root; "" = none) and logprobs (-1 = off, else alternatives per token, 0..20). A sequence
   * with any of them samples through them on the CPU, never the greedy fast path. RangeError when
   * the grammar does not parse.
   */
  setExtras(
    seq: number,
    presencePenalty: number,
    frequencyPenalty: number,
    biasTokens: Int32Array,
    biases: Float32Array,
    grammar: string,
    logprobs: number,
  ): void;
  /** The logprobs of the tokens seq sampled since the last call: k alternatives per token, row-major. */
  takeLogprobs(seq: number): { tokens: Int32Array; logprobs: Float32Array; k: number; topTokens: Int32Array; topLogprobs: Float32Array };
  tokenize(text: string, addSpecial: boolean, parseSpecial: boolean): Int32Array;
  detokenize(tokens: Int32Array, unparseSpecial?: boolean): string;
  isEog(token: number): boolean;
  /**
   * The GGUF's chat template rendered by llama.cpp (or, for a GGUF without one, llama.cpp's built-in
   * template of its family: gemma); null when there is neither or llama.cpp does not know the template.
   */
  applyChatTemplate(roles: string[], contents: string[]): string | null;
  seqRm(seq: number, p0: number, p1: number): boolean;
  seqCp(src: number, dst: number, p0: number, p1: number): void;
  /** Moves the sequence's cells in [p0, p1) (-1: open) by delta positions; false when the model's memory cannot shift. */
  seqAdd(seq: number, p0: number, p1: number, delta: number): boolean;
  /** Diagnostics: every position's logits (tokens x nVocab) of tokens evaluated at pos0.. in the sequence. */
  evalLogits(seq: number, pos0: number, tokens: Int32Array): Promise<Float32Array>;
  seqPosMax(seq: number): number;
  /** The state in llama.cpp's file format (ggsq header, tokens, state), built in one allocation with no copy. */
  stateGetFile(seq: number, tokens: Int32Array): Promise<Buffer>;
  /** Loads a file-format state synchronously without copying it; returns the state bytes read. Throws on a bad state. */
  stateSetFile(seq: number, state: Buffer): number;
  /**
   * stateSetFile whose copies to the device are left running: a ticket for copiesDone (0: none
   * left, as on a CPU). Until copiesDone(ticket) settles, `state` must stay as it is and the
   * sequence must not be evaluated; other sequences may be.
   */
  stateSetFileDetached?(seq: number, state: Buffer): number;
  /** Settles once a detached import's copies are in the KV cache; not a call on the context (dispose waits for it). */
  copiesDone?(ticket: number): Promise<void>;
  /** Bytes of llama.cpp's state of the sequence (no file header): the room stateGetShared needs in its region. */
  stateSizeOf?(seq: number): number;
  /**
   * The sequence's state with its rows written into a shared region (kvRegionCreate) at their
   * offsets in the state, device to device for a cuda region; what is returned is the rest, the
   * headers (`meta`, a few bytes a token), and where the rows lie (offset, size pairs). Static
   * builds only (elsewhere it rejects, saying so).
   */
  stateGetShared?(seq: number, region: number): Promise<SharedState>;
  /** Imports what stateGetShared described, its rows read from the region (kvRegionOpen); the bytes read. A failure may leave part of it in the sequence. */
  stateSetShared?(seq: number, region: number, size: number, meta: Buffer, rows: Float64Array): Promise<number>;
  /**
   * Refuses new calls at once and frees the model and context when the calls in flight have
   * settled. Every other method throws once dispose() was called; a method that touches the
   * context (step, seq*, state*, setSampler, synchronize, decodeLoop) also throws while another
   * call is still running on it. Bad arguments are TypeErrors / RangeErrors.
   */
  dispose(): Promise<void>;
}

/** A sequence state whose rows are in a shared region: stateGetShared's answer, stateSetShared's input. */
export interface SharedState {
  /** The state's bytes, rows included. */
  size: number;
  /** Everything of the state that is not a row, in order. */
  meta: Buffer;
  /** Where the rows lie in the state (and in the region): offset, size pairs in increasing offset. */
  rows: Float64Array;
}

/**
 * Memory two processes on one machine map (engine/native/src/shared-region.h): a cuda region is
 * device memory shared by a CUDA IPC handle (both processes see the same GPU), else POSIX shared
 * memory (both share /dev/shm). Names say the kind ("cuda:…", "shm:…").
 */
export interface SharedRegions {
  /** A region this process owns (device memory when asked and a CUDA runtime is loaded, else shared memory). */
  kvRegionCreate(bytes: number, device: boolean): { name: string; handle: number; device: boolean };
  /** Another process's region by its name and size; throws with the reason when it cannot be mapped. */
  kvRegionOpen(name: string, bytes: number): number;
  /** Unmaps it; a region this process created is freed (and unlinked). Idempotent. */
  kvRegionClose(handle: number): void;
  /** Whether this process can create and open cuda regions. */
  kvRegionCuda(): boolean;
}

export interface NativeAddon extends Partial<SharedRegions> {
  load(modelPath: string, options: NativeLoadOptions): Promise<NativeEngine>;
  /** A state Buffer from the host pool (stateGetFile, kvTake) back to the pool now, detached; false for any other buffer. */
  kvRelease?(buffer: Uint8Array): boolean;
}

const ROOT = resolve(import.meta.dirname, "../..");

/**
 * CPU-seconds of a cold CPU build (unpacking llama.cpp, then llama.cpp + the addon): 215 s of CPU
 * (386 s wall at a load average of 6–10) on the 2-core machine on 2026-12-04; 82 s, 87 s and
 * 111 s wall on 2 cores in earlier cold runs. A first-use estimate, not a promise.
 */
const COLD_BUILD_CPU_SECONDS = 200;

const log = (line: string): void => void process.stderr.write(`${line}\n`);

/**
 * Runs build.sh under a lock on the cache, so engines started together on a cold cache (npm
 * start's prefill and decode, the e2e harness) build once and the others wait for that build
 * instead of racing in the same build tree. Without flock(1) it runs unlocked.
 */
function runBuildScript(cache: string): ReturnType<typeof spawn> {
  mkdirSync(cache, { recursive: true });
  const locked = 'if command -v flock >/dev/null; then exec flock "$1" bash "$2"; else exec bash "$2"; fi';
  return spawn("bash", ["-c", locked, "build.sh", join(cache, ".build.lock"), resolve(ROOT, "scripts/native/build.sh")], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
}

/**
 * The cached CPU build's path, building it first when it is missing. build.sh writes to stderr
 * only when it has work to do, so its first progress line is when the user is told a build has
 * started, how long it should take, and where it is cached; its own lines follow.
 */
function buildCpuAddon(): Promise<string> {
  const cache = join(cacheRoot(), "native");
  const child = runBuildScript(cache);
  const started = performance.now();
  let building = false;
  let stdout = "";
  child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on("data", (d: Buffer) => {
    if (!building) {
      const cores = availableParallelism();
      log(
        `llmfleet: building the native engine addon for this CPU — about ${Math.round(COLD_BUILD_CPU_SECONDS / cores)} s on ${cores} cores, once; cached in ${cache}`,
      );
      building = true;
    }
    process.stderr.write(d);
  });
  return new Promise((resolvePath, reject) => {
    child.once("error", reject);
    child.once("close", (code) => {
      if (code !== 0)
        return reject(
          new Error(`building the native addon failed (scripts/native/build.sh exited ${code}, output above; it needs CMake, Ninja and a C++17 compiler)`),
        );
      if (building) log(`llmfleet: native engine addon ready after ${Math.round((performance.now() - started) / 1000)} s`);
      resolvePath(stdout.trim().split("\n").pop() ?? "");
    });
  });
}

/** The addon's path: LLMFLEET_NATIVE_ADDON, or the cached CPU build (built now if missing). */
export async function nativeAddonPath(): Promise<string> {
  return process.env.LLMFLEET_NATIVE_ADDON || buildCpuAddon();
}

let addon: Promise<NativeAddon> | undefined;

/** The addon, loaded once per process; a failed build or load is tried again on the next call. */
export function loadNativeAddon(): Promise<NativeAddon> {
  if (addon) return addon;
  const loading = nativeAddonPath().then((path) => {
    const loaded = createRequire(import.meta.url)(path) as NativeAddon;
    // The qpre-family KV codecs (compact) decode with this addon from now on, here and on the codec's worker.
    useNativeKvCodec(path);
    return loaded;
  });
  addon = loading;
  loading.catch(() => {
    if (addon === loading) addon = undefined;
  });
  return loading;
}
