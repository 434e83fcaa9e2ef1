/**
 * KV codec work off the event loop. The lossy codecs run at 30–180 MB/s in JavaScript: encoding a
 * write-back of a 14 MB state on the pod's event loop held every other request (their tokens, their
 * TTFT) for a few hundred milliseconds, and decoding a load did the same to everyone else. Large
 * inputs of real codecs go to one worker thread (codec-worker.ts); `none` and small inputs stay
 * inline, where a copy to the worker would cost more than the work. A worker that cannot start
 * (a bundled build without the .ts file) or dies falls back to running inline.
 */
import { Worker } from "node:worker_threads";
import { kvCodec } from "./codec.ts";
import type { CodecAnswer, CodecJob } from "./codec-worker.ts";

/** Below this many bytes the work runs inline. */
export const OFFLOAD_MIN_BYTES = 256 * 1024;

type Pending = { resolve: (b: Buffer) => void; reject: (e: Error) => void };

let worker: Worker | undefined;
let broken = false;
let nextId = 0;
const pending = new Map<number, Pending>();

function fail(err: Error): void {
  broken = true;
  worker = undefined;
  for (const p of pending.values()) p.reject(err);
  pending.clear();
}

function codecWorker(): Worker | undefined {
  if (broken) return undefined;
  if (worker) return worker;
  try {
    // The engine runs its TypeScript through tsx (node --import tsx), whose loader a worker does
    // not inherit: the worker registers it before importing its module. The engine image runs an
    // esbuild bundle (engine.mjs) that ships the worker as codec-worker.mjs beside it, plain JavaScript.
    if (import.meta.url.endsWith(".mjs")) worker = new Worker(new URL("./codec-worker.mjs", import.meta.url));
    else {
      const url = new URL("./codec-worker.ts", import.meta.url).href;
      worker = new Worker(`import("tsx/esm/api").then(({ register }) => { register(); return import(${JSON.stringify(url)}); })`, { eval: true });
    }
  } catch {
    broken = true;
    return undefined;
  }
  worker.unref();
  worker.on("message", (a: CodecAnswer) => {
    const p = pending.get(a.id);
    pending.delete(a.id);
    if (!p) return;
    if ("error" in a) p.reject(new Error(a.error));
    else p.resolve(Buffer.from(a.out.buffer, a.out.byteOffset, a.out.byteLength));
  });
  worker.on("error", (err) => fail(err));
  worker.on("exit", (code) => fail(new Error(`KV codec worker exited (code ${code})`)));
  return worker;
}

function inline(op: CodecJob["op"], codec: string, data: Buffer): Buffer {
  const c = kvCodec(codec);
  return op === "encode" ? c.encode(data) : c.decode(data);
}

/** Encodes or decodes with the named codec, off the event loop when it is worth it; same bytes either way. */
export async function runCodec(op: CodecJob["op"], codec: string, data: Buffer, minBytes = OFFLOAD_MIN_BYTES): Promise<Buffer> {
  const name = kvCodec(codec).name;
  const w = name === "none" || data.length < minBytes ? undefined : codecWorker();
  if (!w) return inline(op, codec, data);
  const id = nextId++;
  const done = new Promise<Buffer>((resolve, reject) => pending.set(id, { resolve, reject }));
  const job: CodecJob = { id, op, codec: name, data: new Uint8Array(data) };
  w.postMessage(job, [job.data.buffer as ArrayBuffer]);
  // Keep the process alive only while work is in flight.
  w.ref();
  try {
    return await done;
  } catch (err) {
    if (broken) return inline(op, codec, data);
    throw err;
  } finally {
    if (pending.size === 0) worker?.unref();
  }
}
