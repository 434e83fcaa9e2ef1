/**
 * The KV codec worker's side (codec-offload.ts starts it): runs one encode or decode per message
 * and answers with the bytes, transferred, or the error's message.
 */
import { parentPort } from "node:worker_threads";
import { kvCodec } from "./codec.ts";

export interface CodecJob {
  id: number;
  op: "encode" | "decode";
  codec: string;
  data: Uint8Array;
}

export type CodecAnswer = { id: number; out: Uint8Array } | { id: number; error: string };

function run(job: CodecJob): Uint8Array {
  const codec = kvCodec(job.codec);
  const input = Buffer.from(job.data.buffer, job.data.byteOffset, job.data.byteLength);
  const out = job.op === "encode" ? codec.encode(input) : codec.decode(input);
  // Transfer needs the whole ArrayBuffer: copy a view of a shared or pooled one.
  return out.byteOffset === 0 && out.byteLength === out.buffer.byteLength ? out : new Uint8Array(out);
}

parentPort?.on("message", (job: CodecJob) => {
  let answer: CodecAnswer;
  try {
    answer = { id: job.id, out: run(job) };
  } catch (err) {
    answer = { id: job.id, error: (err as Error).message };
  }
  parentPort!.postMessage(answer, "out" in answer ? [answer.out.buffer as ArrayBuffer] : []);
});
