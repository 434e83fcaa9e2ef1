/**
 * The KV codec worker's side (codec-offload.ts starts it): runs one job per message and answers
 * with the bytes, transferred, or the error's message. Jobs: a codec's encode or decode, or a
 * whole KV store entry — writeEntry (cut the state to the entry's tokens, encode, frame and
 * SHA-256 it), readEntry (check the SHA-256, decode) and splitBlocks (cut the state, split it into
 * v2 entry blocks, kv-blocks.ts, and code each with a block codec, block-codec.ts): the hashing,
 * coding and copying of a GB-sized state would otherwise hold the pod's event loop for seconds.
 */
import { parentPort } from "node:worker_threads";
import { kvCodec } from "./codec.ts";
import { useNativeKvCodec } from "./native-codec.ts";
import { decodeKvEntry, encodeKvEntry, KvEntryError, type KvEntryHeader } from "../kvstore/kv-entry.ts";
import { seqStateTokens, truncateSeqState } from "../runtime/seq-state.ts";
import { splitLayout, splitState, type SplitLayout } from "../kvstore/kv-blocks.ts";
import { kvBlockCodec } from "./block-codec.ts";

export interface CodecJob {
  id: number;
  op: "encode" | "decode" | "writeEntry" | "readEntry" | "splitBlocks";
  codec: string;
  data: Uint8Array;
  /** writeEntry: the entry's header; the state is cut to header.tokens first and stateBytes set from it. */
  header?: KvEntryHeader;
  /** splitBlocks: the state is cut to `tokens` and split into `blockTokens`-token blocks (kv-blocks.ts), each coded with the block codec `codec`. */
  tokens?: number;
  blockTokens?: number;
  /** The native addon the qpre-family codecs decode with (native-codec.ts), as the sending thread has it. */
  nativeAddon?: string;
}

/** `entryError`: the entry failed its checks (KvEntryError), not the codec. */
export type CodecAnswer = { id: number; out: Uint8Array; header?: KvEntryHeader; split?: SplitLayout } | { id: number; error: string; entryError?: boolean };

/** Runs a job on this thread (the worker, or inline when there is none): the output and, for readEntry, the header. */
export function runJob(job: Omit<CodecJob, "id">): { out: Buffer; header?: KvEntryHeader; split?: SplitLayout } {
  if ("nativeAddon" in job) useNativeKvCodec(job.nativeAddon);
  const input = Buffer.from(job.data.buffer, job.data.byteOffset, job.data.byteLength);
  if (job.op === "splitBlocks") {
    const raw = seqStateTokens(input).length === job.tokens ? input : truncateSeqState(input, job.tokens!);
    const codec = job.codec === "none" ? undefined : kvBlockCodec(job.codec);
    if (job.codec !== "none" && !codec) throw new Error(`unknown KV block codec ${job.codec}`);
    const split = splitState(raw, job.blockTokens!, { codec });
    return { out: split.buffer, split: splitLayout(split) };
  }
  if (job.op === "writeEntry") {
    const header = job.header!;
    const raw = truncateSeqState(input, header.tokens);
    return { out: encodeKvEntry({ ...header, stateBytes: raw.length }, kvCodec(header.codec).encode(raw)) };
  }
  if (job.op === "readEntry") {
    const { header, payload } = decodeKvEntry(input);
    return { out: kvCodec(header.codec).decode(payload), header };
  }
  const codec = kvCodec(job.codec);
  return { out: job.op === "encode" ? codec.encode(input) : codec.decode(input) };
}

function run(job: CodecJob): CodecAnswer {
  const { out, header, split } = runJob(job);
  // Transfer needs the whole ArrayBuffer: copy a view of a shared or pooled one.
  const whole = out.byteOffset === 0 && out.byteLength === out.buffer.byteLength ? out : new Uint8Array(out);
  return { id: job.id, out: whole, ...(header ? { header } : {}), ...(split ? { split } : {}) };
}

parentPort?.on("message", (job: CodecJob) => {
  let answer: CodecAnswer;
  try {
    answer = run(job);
  } catch (err) {
    answer = { id: job.id, error: (err as Error).message, ...(err instanceof KvEntryError ? { entryError: true } : {}) };
  }
  parentPort!.postMessage(answer, "out" in answer ? [answer.out.buffer as ArrayBuffer] : []);
});
