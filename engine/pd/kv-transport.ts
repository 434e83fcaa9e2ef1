/**
 * How a prefill pod's KV state reaches a decode pod. Two mechanisms, picked per hand-off:
 *
 *   tcp   the native addon streams the state in CRC-32C-checked chunks (engine/native/src/kv-stream.h),
 *         over --kv-streams parallel TCP connections (default a quarter of the CPUs, 1 to 4; each one contiguous stripe of the
 *         state: one connection tops out at a few GB/s, bound by one core), read in place from the
 *         exported (page-locked on a GPU) buffer and received into page-locked memory by threads of
 *         the decode pod's addon; both buffers come from a pool of page-locked blocks, since
 *         page-locking afresh costs more than the copy. No JavaScript copy or hash of the payload,
 *         and neither pod's event loop or engine context is held while it moves. The decode pod
 *         listens on its KV port (--kv-port, default HTTP port + 1) and says so, with the number of
 *         stripes it accepts, at GET /internal/kv-transport.
 *   http  the LFKV stream of kv-wire.ts over PUT /internal/kv/:id (the fallback: an older decode
 *         pod, no addon, a KV port nobody can reach, or pods whose KV layouts differ, which the
 *         HTTP path normalises in transit).
 *
 * --kv-transport auto (default) uses tcp where both sides can and falls back to http; tcp makes
 * the fallback an error; http never tries tcp. The metric llmfleet_kv_handoffs_total{path,outcome}
 * says which path each hand-off took.
 */
import { availableParallelism } from "node:os";
import { loadNativeAddon } from "../native/binding.ts";
import { useNativeCrc32c } from "../kvstore/crc32c.ts";

export const KV_TRANSPORTS = ["auto", "tcp", "http"] as const;
export type KvTransportMode = (typeof KV_TRANSPORTS)[number];
export type HandoffPath = "tcp" | "http" | "local";

export interface KvSendResult {
  /** 0 staged, 1 full (retry later), 2 bad stream, 3 too large, 4 exists. */
  status: number;
  /** Staged: the decode pod's advertised URL, or the IP address the connection reached. */
  message: string;
  bytes: number;
  seconds: number;
  /** Connections the state went over (1: the v1 wire). */
  streams?: number;
}

export interface KvTaken {
  state: Buffer;
  header: string;
  /** Seconds from the connection's accept to the state being staged. */
  seconds: number;
  pinned: boolean;
}

export interface KvListenStats {
  listening: boolean;
  port?: number;
  staged?: number;
  stagedBytes?: number;
  receivingBytes?: number;
  connections?: number;
  received?: number;
  refused?: number;
  aborted?: number;
  expired?: number;
  /** Seconds connections waited, all together, while the listener was paused (kvPause). */
  pausedSeconds?: number;
}

export interface KvListenOptions {
  /** Bytes staged plus being received; past it a hand-off is refused "full" (429 at the prefill pod). */
  maxBytes?: number;
  maxConnections?: number;
  /** A staged state not taken by a generate call within this is freed. */
  ttlMs?: number;
  /** A sender silent this long is dropped, its partial state freed. */
  idleMs?: number;
  /** This pod's URL, returned to the sender (default: http://<address the connection reached>:<httpPort>). */
  advertise?: string;
  /** This pod's HTTP port, for the default answer (without it: the bare address). */
  httpPort?: number;
}

const NO_RUNS = new Float64Array(0);
const NOWHERE = new Uint8Array(0);

/**
 * crc32c.ts on the addon: its synchronous CRC-32C, and the same on a worker thread (kvScatter with
 * nothing to copy resolves with its source's CRC-32C) where the addon has it.
 */
export function useAddonCrc32c(addon: KvStreamAddon): void {
  const scatter = addon.kvScatter?.bind(addon);
  useNativeCrc32c((b) => addon.kvChecksum(b), scatter ? (b) => scatter(b, NOWHERE, NO_RUNS) : undefined);
}

/** The addon's KV-stream functions (kv-stream.cpp). */
export interface KvStreamAddon {
  /** streams > 1: that many parallel connections (the LFKN v2 wire); only to a listener that accepts it (KvTransportInfo.tcpStreams). */
  kvSend(state: Uint8Array, host: string, port: number, id: string, header: string, chunkBytes: number, timeoutMs: number, streams?: number): Promise<KvSendResult>;
  /** Listens (port 0: any free one); the handle names this listener in the calls below. */
  kvListen(host: string, port: number, opts?: KvListenOptions): { port: number; handle: number };
  kvTake(handle: number, id: string): KvTaken | null;
  kvStats(handle: number): KvListenStats;
  kvClose(handle: number): void;
  /**
   * Pauses nest (each true needs its false): while any is held the listener reads no further chunk
   * of what it receives (senders block on TCP's flow control), each connection at most 2 s in all;
   * false when no such listener.
   */
  kvPause?(handle: number, paused: boolean): boolean;
  kvChecksum(bytes: Uint8Array): number;
  /** The process's pool of (page-locked) host blocks for states: reuse counts and bytes. */
  kvPoolStats?(): KvPoolStats;
  /** The kept threads that run sends and received connections (task-threads.h): kept now, idle now, started ever. */
  kvTaskThreads?(): { threads: number; idle: number; started: number };
  /** A state Buffer from the pool (an export, a kvTake) back to the pool now; the Buffer is detached. False for any other. */
  kvRelease?(buffer: Uint8Array): boolean;
  /** A pool block of `bytes` as a Buffer, uninitialised (page-locked on a GPU, its pages already there); kvRelease gives it back. */
  kvAlloc?(bytes: number): Buffer;
  /** kvAlloc with the block taken on a worker thread (page-locking a new GB-sized block holds the caller for a large part of a second). */
  kvAllocAsync?(bytes: number): Promise<Buffer>;
  /**
   * The pool's warmed region: `bytes` allocated (page-locked on a GPU) and touched on a worker
   * thread, blocks then carved from it, so a pod's first states of each size are not page-locked on
   * a request's path. A second call keeps the first region.
   */
  kvPoolWarm?(bytes: number): Promise<{ bytes: number; seconds: number; pinned: boolean }>;
  /**
   * `runs` (srcOffset, dstOffset, length triples) of `src` copied into a new pool Buffer of `bytes`
   * on a worker thread, with the CRC-32C of each block of it (blocks end at `blockEnds`): a KV
   * store write-back's blocks cut out of its state off the event loop (kv-gather.cpp).
   */
  kvGather?(src: Uint8Array, runs: Float64Array, bytes: number, blockEnds: Float64Array): Promise<{ data: Buffer; crcs: Uint32Array }>;
  /** `runs` (srcOffset, dstOffset, length) of `src` copied into `dst` on a worker thread; resolves with src's CRC-32C (a load's block placed). */
  kvScatter?(src: Uint8Array, dst: Uint8Array, runs: Float64Array): Promise<number>;
}

export interface KvPoolStats {
  hits: number;
  misses: number;
  freed: number;
  cachedBytes: number;
  cachedBlocks: number;
  outstandingBytes: number;
  capBytes: number;
  /** The warmed region (kvPoolWarm), of it what blocks hold now, and blocks carved from it (also in hits); absent before this addon had it. */
  warmBytes?: number;
  warmUsedBytes?: number;
  warmHits?: number;
  pinned: boolean;
}

/** A decode pod's listener: the addon, the port it listens on, its handle. */
export interface KvListener {
  addon: KvStreamAddon;
  port: number;
  handle: number;
}

export const KV_SEND_STATUS = { ok: 0, full: 1, bad: 2, tooLarge: 3, exists: 4 } as const;

/** A transport failure from kvSend: connect (nobody listening), timeout, closed (peer gone mid-stream), protocol. */
export type KvSendErrorCode = "connect" | "timeout" | "closed" | "protocol";

export function kvSendErrorCode(err: unknown): KvSendErrorCode | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  return code === "connect" || code === "timeout" || code === "closed" || code === "protocol" ? code : undefined;
}

let addon: Promise<KvStreamAddon | undefined> | undefined;

/** The addon's KV-stream functions, or undefined where the addon cannot be built or loaded (then: http). */
export function kvStreamAddon(): Promise<KvStreamAddon | undefined> {
  addon ??= loadNativeAddon().then(
    (a) => {
      const k = a as unknown as Partial<KvStreamAddon>;
      return typeof k.kvSend === "function" && typeof k.kvListen === "function" ? (k as KvStreamAddon) : undefined;
    },
    () => undefined,
  );
  return addon;
}

/** What a decode pod answers at GET /internal/kv-transport. */
export interface KvTransportInfo {
  /** The TCP port of the native listener; absent when this pod receives over HTTP only. */
  tcpPort?: number;
  /** The pod imports a hand-off sent in parts (one TCP hand-off per part, ids `<id>~<k>`); absent: whole states only. */
  parts?: boolean;
  /** The most parallel connections (LFKN v2 stripes) the listener takes for one hand-off; absent: one (v1). */
  tcpStreams?: number;
  /** The pod takes the answer's first token with a state of the whole prompt (serving/first-token.ts); absent: states of the prompt but its last token only. */
  firstToken?: boolean;
  /** The pod's generate call waits for a state still on its way, its first token sent ahead (pd/staged-wait.ts); absent: the state must be staged first. */
  awaitsState?: boolean;
  /** The pod's HTTP port (a Service may map another port to it). */
  httpPort?: number;
  /** The pod lends memory for hand-offs from prefill pods on its machine (local-handoff.ts); absent: the network path only. */
  local?: { node: string; device: boolean; probe: string };
  model: string;
  layout: { streams: number; vTransposed: boolean };
}

/**
 * Chunk size of the TCP stream: big enough that per-chunk overhead (a frame and a CRC call) is
 * nothing, small enough that a bad chunk is found early and the receiver's checks run while the
 * next chunk is on the wire.
 */
export const TCP_CHUNK_BYTES = 4 << 20;

/** The most parallel connections of one TCP hand-off by default (--kv-streams). */
export const TCP_STREAMS_DEFAULT = 8;

/**
 * Parallel connections of one TCP hand-off when --kv-streams is not given: half the CPUs, 1 to
 * TCP_STREAMS_DEFAULT. Each connection is a sending thread on the prefill pod and a receiving one
 * on the decode pod, each copying and checksumming. On the 16-CPU GPU machine (H100, 2026-12-06,
 * BENCHMARKS.md) 8 connections moved 7.6-10.8 GB/s over loopback where 4 moved 6.1-8.2 and one
 * 2.4-2.7, and P/D through the router was faster with 8 than 4 at every prompt size and load; on a
 * 2-core machine four ran at 0.66x of one (bench:kv-transfer), so small machines keep one.
 */
export function defaultTcpStreams(cpus = availableParallelism()): number {
  return Math.max(1, Math.min(TCP_STREAMS_DEFAULT, Math.floor(cpus / 2)));
}
/** The most stripes a listener takes (MAX_STRIPES in kv-net.h). */
export const TCP_STREAMS_MAX = 16;

/** Smallest part of a hand-off sent in parts (--kv-part-tokens auto): below it a part's fixed costs show. */
export type PartTokens = number | "auto";
export const PART_TOKENS_MIN = 256;
/** Parts a hand-off is cut into by default (--kv-part-tokens auto). */
export const PARTS_DEFAULT = 4;

/**
 * Where the parts of a hand-off of `tokens` tokens end (ascending, the last `tokens`): the prefill
 * pod sends each part while it computes the next, so only the last part's transfer is left when
 * the prompt is done. partTokens 0 (the default): one part (the whole state, sent after the
 * prompt); a positive number: parts of that many tokens; auto: PARTS_DEFAULT parts of a multiple
 * of PART_TOKENS_MIN tokens, one part below 2 x PART_TOKENS_MIN.
 *
 * Not the default: on one H100 over loopback (7B f16, BENCHMARKS.md) parts did not pay. Each part
 * is one more forward pass (the weights read again) and its export holds the engine, while the
 * whole state crosses loopback at ~4 GB/s; they are for links slower than the prompt's compute.
 */
export function handoffParts(tokens: number, partTokens: PartTokens = 0): number[] {
  if (tokens <= 0) return [tokens];
  let size = partTokens;
  if (size === "auto") {
    if (tokens < 2 * PART_TOKENS_MIN) return [tokens];
    size = Math.ceil(tokens / PARTS_DEFAULT / PART_TOKENS_MIN) * PART_TOKENS_MIN;
  }
  if (size <= 0 || size >= tokens) return [tokens];
  const bounds: number[] = [];
  for (let at = size; at < tokens; at += size) bounds.push(at);
  bounds.push(tokens);
  return bounds;
}

/** The TCP hand-off id of part `index` of hand-off `id`. */
export const partId = (id: string, index: number): string => `${id}~${index}`;
