/**
 * KV codec work off the event loop. The lossy codecs run at 30–180 MB/s in JavaScript: encoding a
 * write-back of a 14 MB state on the pod's event loop held every other request (their tokens, their
 * TTFT) for a few hundred milliseconds, and decoding a load did the same to everyone else. Large
 * inputs of real codecs go to one worker thread (codec-worker.ts); `none` and small inputs stay
 * inline, where a copy to the worker would cost more than the work. A worker that cannot start
 * (a bundle without codec-worker.mjs beside it) or dies, at any point of a job, falls back to
 * running inline: same bytes, and the process goes on (codec-offload-bundle.test.ts).
 */
import { Worker } from "node:worker_threads";
import { kvCodec } from "./codec.ts";
import { runJob, type CodecAnswer, type CodecJob } from "./codec-worker.ts";
import { nativeKvCodecPath } from "./native-codec.ts";
import { KvEntryError, type KvEntryHeader } from "../kvstore/kv-entry.ts";
import { splitFromLayout, type SplitLayout, type SplitState } from "../kvstore/kv-blocks.ts";

/** Below this many bytes the work runs inline. */
export const OFFLOAD_MIN_BYTES = 256 * 1024;

type Done = { out: Buffer; header?: KvEntryHeader; split?: SplitLayout };
type Pending = { resolve: (d: Done) => void; reject: (e: Error) => void };

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
    if ("error" in a) p.reject(a.entryError ? new KvEntryError(a.error) : new Error(a.error));
    else
      p.resolve({
        out: Buffer.from(a.out.buffer, a.out.byteOffset, a.out.byteLength),
        ...(a.header ? { header: a.header } : {}),
        ...(a.split ? { split: a.split } : {}),
      });
  });
  worker.on("error", (err) => fail(err));
  worker.on("exit", (code) => fail(new Error(`KV codec worker exited (code ${code})`)));
  return worker;
}

/** Bytes copied between turns of the event loop when a job's input is copied for the worker. */
const COPY_SLICE = 16 * 2 ** 20;

/**
 * A copy of `data` for the worker, made a slice at a time with the event loop free between slices:
 * a write-back of a GPU pod's state is a GB or more, and one copy of it held every other request
 * (their tokens, the scheduler's steps) for 0.6-2.5 s on a 2-core machine. The caller's buffer is
 * never changed across an await (the engine's imports swap bytes only within one synchronous call).
 */
async function copyForWorker(data: Uint8Array): Promise<Uint8Array> {
  if (data.length <= COPY_SLICE) return new Uint8Array(data);
  const out = new Uint8Array(data.length);
  for (let at = 0; at < data.length; at += COPY_SLICE) {
    if (at > 0) await new Promise<void>((r) => setImmediate(r));
    out.set(data.subarray(at, Math.min(at + COPY_SLICE, data.length)), at);
  }
  return out;
}

/** Runs the job on the worker when there is one and it is worth it; same result either way. */
async function offload(job: Omit<CodecJob, "id">, worth: boolean): Promise<Done> {
  const w = worth ? codecWorker() : undefined;
  if (!w) return runJob(job);
  const nativeAddon = nativeKvCodecPath();
  // A copy for the worker (the caller keeps its buffer, which may be pinned native memory).
  const data = await copyForWorker(job.data);
  // The copy took turns of the event loop, in which the worker may have failed to start (a bundle
  // without codec-worker.mjs) or died: then the job runs here. The job's promise is made only now
  // and awaited in this same turn: made before the copy, a failure in between rejected it with no
  // one awaiting it yet, an unhandled rejection, which ends the process.
  if (broken || worker !== w) return runJob(job);
  const id = nextId++;
  const done = new Promise<Done>((resolve, reject) => pending.set(id, { resolve, reject }));
  w.postMessage({ ...job, id, data, nativeAddon }, [data.buffer as ArrayBuffer]);
  // Keep the process alive only while work is in flight.
  w.ref();
  try {
    return await done;
  } catch (err) {
    if (broken) return runJob(job);
    throw err;
  } finally {
    if (pending.size === 0) worker?.unref();
  }
}

/** Encodes or decodes with the named codec, off the event loop when it is worth it; same bytes either way. */
export async function runCodec(op: "encode" | "decode", codec: string, data: Buffer, minBytes = OFFLOAD_MIN_BYTES): Promise<Buffer> {
  const name = kvCodec(codec).name;
  return (await offload({ op, codec: name, data }, name !== "none" && data.length >= minBytes)).out;
}

/**
 * A KV store entry of the first header.tokens tokens of `state` (cut, encoded with header.codec,
 * framed and hashed: kv-entry.ts), off the event loop when it is worth it.
 */
export async function writeKvEntry(state: Buffer, header: Omit<KvEntryHeader, "stateBytes">, minBytes = OFFLOAD_MIN_BYTES): Promise<Buffer> {
  const full: KvEntryHeader = { ...header, codec: kvCodec(header.codec).name, stateBytes: 0 };
  return (await offload({ op: "writeEntry", codec: full.codec, data: state, header: full }, state.length >= minBytes)).out;
}

/** Checks a KV store entry (KvEntryError when it fails) and decodes its state, off the event loop when it is worth it. */
export async function readKvEntry(entry: Buffer, minBytes = OFFLOAD_MIN_BYTES): Promise<{ header: KvEntryHeader; state: Buffer }> {
  const { out, header } = await offload({ op: "readEntry", codec: "none", data: entry }, entry.length >= minBytes);
  return { header: header!, state: out };
}

/**
 * The first `tokens` tokens of `state` as v2 entry blocks (kv-blocks.ts: cut, meta block, kv
 * blocks, each coded with the block codec `codec`, block-codec.ts), off the event loop when it is
 * worth it: a write-back's copies and coding of a multi-MB state would otherwise hold every other
 * request on the pod.
 */
export async function splitKvBlocks(state: Buffer, at: { tokens: number; blockTokens: number; codec?: string }, minBytes = OFFLOAD_MIN_BYTES): Promise<SplitState> {
  const { tokens, blockTokens, codec = "none" } = at;
  const { out, split } = await offload({ op: "splitBlocks", codec, data: state, tokens, blockTokens }, state.length >= minBytes);
  return splitFromLayout(out, split!);
}
