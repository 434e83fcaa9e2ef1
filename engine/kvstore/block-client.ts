/**
 * The pod side of KV entry format v2 (kv-blocks.ts): writing an entry as blocks the store does not
 * hold yet, and loading one block by block, each checked (size, CRC-32C), opened (kv-seal.ts) and
 * placed into the state while the next one moves.
 *
 * Paths: where the store offers a native TCP listener (config.kvPort) and this pod has the addon,
 * blocks move with the P/D hand-off's stream (engine/native/src/kv-stream.h): uploads are kvSend'ed
 * to the store's listener and committed by the manifest PUT; loads are pushed by the store to this
 * pod's listener (POST /v1/kv/blocks/send) and taken from native memory as each is staged. No
 * JavaScript copy of a block on the way; the one copy is placing its rows into the state. Else
 * (mode http, no addon, the port unreachable in auto mode) blocks move over HTTP.
 */
import { randomBytes } from "node:crypto";
import { setImmediate as tick } from "node:timers/promises";
import {
  blockKey,
  decodeManifest,
  encodeManifest,
  KvBlockError,
  metaShape,
  type BlockEntry,
  type KvManifest,
  type SplitState,
} from "./kv-blocks.ts";
import { splitForWrite } from "./block-split.ts";
import { inWindows } from "./in-windows.ts";
import { LoadGate } from "./load-gate.ts";
import { FrameReader, ndjson } from "./block-frames.ts";
import { DECODABLE_BLOCK_CODECS } from "../kvcodec/block-codec.ts";
import { crc32c } from "./crc32c.ts";
import { KV_SEAL_ALGORITHM, type KvSealer } from "./kv-seal.ts";
import { countStage, type KvClientMetrics } from "./client-metrics.ts";
import { BlockSink } from "./block-sink.ts";
import { partsFit, PartSink, type PartSinkOptions } from "./part-sink.ts";
import { KV_SEND_STATUS, kvSendErrorCode, TCP_CHUNK_BYTES, type KvListener, type KvStreamAddon, type KvTransportMode } from "../pd/kv-transport.ts";

export interface BlockStoreConfig {
  blockTokens: number;
  formats?: string[];
  blockCodecs?: string[];
  kvPort?: number;
  /** TCP-staged blocks go under the writer's upload id (`<upload>.<key>`, the manifest PUT's `?upload=`): no writer takes another's. */
  uploadIds?: boolean;
}

export interface BlockClientOptions {
  url: string;
  /** Headers of every request to the store (the fleet token, re-read when it changes). */
  headers: () => Record<string, string>;
  model: string;
  metrics: KvClientMetrics;
  sealer?: KvSealer;
  /** How blocks move; default auto. */
  transport?: KvTransportMode;
  /** This pod's listener: loads arrive on it over TCP. */
  tcp?: KvListener;
  /** The addon for uploads over TCP (kvSend). */
  addon?: KvStreamAddon;
  timeoutMs: number;
  /**
   * Write-backs wait while this pod loads (load-gate.ts). Default false: with the store holding
   * uploads back during its pushes it gained nothing measurable (BENCHMARKS.md, session 23).
   */
  writesYieldToLoads?: boolean;
}

/** Whether the store takes v2 entries with this block codec (block-codec.ts's blockCodecFor; undefined: none carries the store's codec). */
export function storeTakesV2(config: BlockStoreConfig, blockCodec: string | undefined): blockCodec is string {
  return blockCodec !== undefined && (config.formats ?? []).includes("v2") && (config.blockCodecs ?? []).includes(blockCodec);
}

const aad = (key: string, model: string, kind: string): string => `${key}|${model}|${kind}`;

export interface BlockWriteTarget {
  /** Chain keys of the entry's blocks (block-keys.ts); the last is the entry's key. */
  keys: string[];
  config: BlockStoreConfig;
  /** The kv blocks' codec (block-codec.ts); the meta block is stored as it is (none). */
  codec: string;
  kvNamespace: string;
  signal: AbortSignal;
  /**
   * Called once the state is cut into blocks of their own (kvGather's pool block, or the codec
   * worker's copy): the write reads `state` no more, so a pool block under it can go back while
   * the blocks are still being sent (a write-back otherwise holds two copies of a GB-sized state).
   */
  onStateRead?: () => void;
}

export interface BlockWriteResult {
  key: string;
  sentBytes: number;
  dedupedBytes: number;
  path: "tcp" | "http";
}

export class KvBlockClient {
  /** Set when the store's TCP port failed to connect in auto mode: HTTP for a while. */
  private tcpDownUntil = 0;
  /** This pod's loads under way: write-backs wait for them (load-gate.ts). */
  private readonly loads = new LoadGate();

  constructor(readonly opts: BlockClientOptions) {}

  private get mode(): KvTransportMode {
    return this.opts.transport ?? "auto";
  }

  private useTcpUpload(config: BlockStoreConfig): boolean {
    return this.mode !== "http" && !!this.opts.addon && config.kvPort !== undefined && Date.now() >= this.tcpDownUntil;
  }

  /**
   * Writes the first keys.length blocks of `state` as a v2 entry under keys.at(-1): only blocks the
   * store lacks are sent, then the manifest.
   */
  async write(state: Buffer, to: BlockWriteTarget): Promise<BlockWriteResult> {
    const { keys, config, signal } = to;
    const entryKey = keys.at(-1)!;
    await this.afterLoads();
    let t0 = performance.now();
    const { split, crcs, release } = await splitForWrite(state, to, { addon: this.opts.addon, sealed: !!this.opts.sealer });
    to.onStateRead?.();
    const { tokens, blocks, stored } = this.prepare(split, to);
    t0 = countStage(this.opts.metrics, "write", "split", t0);
    const stateBytes = split.meta.length + split.rawSizes.reduce((n, b) => n + b, 0);
    // Another writer may store a block under the same key between the has-check and the manifest
    // (a GPU computes a prefix's KV bit-differently from batch to batch, so its bytes can differ):
    // the store refuses a manifest that does not name what it holds (409), and the write is done
    // again once against what the store holds now.
    for (let attempt = 1; ; attempt++) {
      const has = await this.has(
        blocks.map((b) => b.key),
        signal,
      );
      await this.describeHeld({ blocks, stored, has, crcs }, signal);
      // Each attempt stages its blocks under an id of its own (what a failed attempt staged expires).
      const upload = config.uploadIds ? randomBytes(8).toString("hex") : undefined;
      const { path, sentBytes, dedupedBytes, staged } = await this.sendMissing(config, { blocks, stored, has, upload }, signal);
      this.opts.metrics.blockBytes.inc({ op: "sent", path }, sentBytes);
      this.opts.metrics.blockBytes.inc({ op: "deduped", path }, dedupedBytes);
      t0 = countStage(this.opts.metrics, "write", "send", t0);
      const manifest: KvManifest = { model: this.opts.model, tokens, blockTokens: config.blockTokens, stateBytes, prefixKeys: keys, blocks };
      const res = await fetch(`${this.opts.url}/v1/kv/${entryKey}${upload && staged ? `?upload=${upload}` : ""}`, {
        method: "PUT",
        headers: { ...this.opts.headers(), "content-type": "application/x-llmfleet-kv-manifest" },
        body: encodeManifest(manifest) as unknown as BodyInit,
        signal,
      });
      const text = res.ok ? "" : (await res.text()).slice(0, 200);
      t0 = countStage(this.opts.metrics, "write", "manifest", t0);
      if (res.ok) {
        release(); // stored: after a failure a send may still read the blocks
        return { key: entryKey, sentBytes, dedupedBytes, path };
      }
      if (res.status !== 409 || attempt === 2) throw new Error(`manifest: HTTP ${res.status}: ${text}`);
    }
  }

  /** The entry's blocks as stored (split, keyed, sealed) and their manifest entries (CRC filled in for those sent). */
  private prepare(split: SplitState, { keys, config, codec, kvNamespace }: BlockWriteTarget): { tokens: number; blocks: BlockEntry[]; stored: Buffer[] } {
    const raws: { kind: "meta" | "kv"; key: string; raw: Buffer; rawBytes: number; codec: string; index?: number }[] = [
      { kind: "meta", key: blockKey(keys.at(-1)!, "meta", "none", metaShape(split.meta)), raw: split.meta, rawBytes: split.meta.length, codec: "none" },
      ...split.blocks.map((raw, i) => ({
        kind: "kv" as const,
        key: blockKey(keys[i]!, "kv", codec, split.shapes[i]!),
        raw,
        rawBytes: split.rawSizes[i]!,
        codec,
        index: i,
      })),
    ];
    const sealer = this.opts.sealer;
    const stored = raws.map((r) => (sealer ? sealer.seal(kvNamespace, aad(r.key, this.opts.model, r.kind), r.raw) : r.raw));
    const blocks = raws.map((r, i): BlockEntry => ({
      key: r.key,
      kind: r.kind,
      ...(r.kind === "kv" ? { index: r.index!, pos0: r.index! * config.blockTokens, tokens: config.blockTokens, rope: "absolute" as const } : {}),
      codec: r.codec,
      rawBytes: r.rawBytes,
      bytes: stored[i]!.length,
      crc32c: 0,
      ...(sealer ? { enc: { alg: KV_SEAL_ALGORITHM, keyId: kvNamespace } } : {}),
    }));
    return { tokens: split.tokens, blocks, stored };
  }

  /**
   * Held blocks are not sent; the manifest names them as the store holds them (size and CRC-32C
   * from POST /v1/kv/blocks/info: a sealed copy, random IV, differs from the one sealed here).
   * A block evicted since the has-check is sent after all.
   */
  private async describeHeld(
    { blocks, stored, has, crcs }: { blocks: BlockEntry[]; stored: Buffer[]; has: boolean[]; crcs: (number | undefined)[] },
    signal: AbortSignal,
  ): Promise<void> {
    const held = has.flatMap((h, i) => (h ? [i] : []));
    const info =
      held.length > 0
        ? await this.info(
            held.map((i) => blocks[i]!.key),
            signal,
          )
        : [];
    held.forEach((i, j) => {
      const got = info[j];
      if (got) Object.assign(blocks[i]!, got);
      else has[i] = false;
    });
    // One block's checksum at a time with the event loop free between them: a GPU pod's write-back
    // is a GB of blocks, whose checksums in one go held every other request for tens of ms.
    for (const [i, b] of blocks.entries()) {
      if (has[i]) continue;
      b.bytes = stored[i]!.length;
      const known = crcs[i];
      b.crc32c = known ?? crc32c(stored[i]!);
      if (known === undefined && b.bytes >= YIELD_BYTES) await tick();
    }
  }

  private async sendMissing(
    config: BlockStoreConfig,
    { blocks, stored, has, upload }: { blocks: BlockEntry[]; stored: Buffer[]; has: boolean[]; upload: string | undefined },
    signal: AbortSignal,
  ): Promise<{ path: "tcp" | "http"; sentBytes: number; dedupedBytes: number; staged: boolean }> {
    let path: "tcp" | "http" = this.useTcpUpload(config) ? "tcp" : "http";
    let staged = false; // some block went over TCP: the manifest names the upload id
    const missing = blocks.flatMap((_, i) => (has[i] ? [] : [i]));
    const sendOne = async (i: number): Promise<void> => {
      const b = blocks[i]!;
      await this.afterLoads();
      if (path === "tcp" && (await this.sendTcp(config, upload ? `${upload}.${b.key}` : b.key, stored[i]!))) staged = true;
      else {
        await this.putHttp(b, stored[i]!, signal);
        path = "http";
      }
    };
    // The first block alone settles the path (auto mode: HTTP when the store's port is unreachable);
    // the rest move UPLOAD_WINDOW at a time, each on a connection of its own.
    if (missing.length > 0) await sendOne(missing[0]!);
    await inWindows(missing.slice(1), UPLOAD_WINDOW, sendOne);
    const bytes = (ix: number[]): number => ix.reduce((n, i) => n + blocks[i]!.bytes, 0);
    return { path, sentBytes: bytes(missing), dedupedBytes: bytes(blocks.flatMap((_, i) => (has[i] ? [i] : []))), staged };
  }

  private async has(keys: string[], signal: AbortSignal): Promise<boolean[]> {
    const res = await fetch(`${this.opts.url}/v1/kv/blocks/has`, {
      method: "POST",
      headers: { ...this.opts.headers(), "content-type": "application/json" },
      body: JSON.stringify({ keys }),
      signal,
    });
    if (!res.ok) throw new Error(`blocks/has: HTTP ${res.status}`);
    return ((await res.json()) as { have: boolean[] }).have;
  }

  /** Size and CRC-32C of held blocks (undefined: gone). */
  private async info(keys: string[], signal: AbortSignal): Promise<({ bytes: number; crc32c: number } | undefined)[]> {
    const res = await fetch(`${this.opts.url}/v1/kv/blocks/info`, {
      method: "POST",
      headers: { ...this.opts.headers(), "content-type": "application/json" },
      body: JSON.stringify({ keys }),
      signal,
    });
    if (!res.ok) throw new Error(`blocks/info: HTTP ${res.status}`);
    return ((await res.json()) as { blocks: ({ bytes: number; crc32c: number } | null)[] }).blocks.map((b) => b ?? undefined);
  }

  /** Sends one block to the store's listener; false when TCP is unreachable and auto mode falls back to HTTP. */
  private async sendTcp(config: BlockStoreConfig, id: string, data: Buffer): Promise<boolean> {
    const host = new URL(this.opts.url).hostname.replace(/^\[|\]$/g, "");
    try {
      const sent = await this.opts.addon!.kvSend(data, host, config.kvPort!, id, "{}", TCP_CHUNK_BYTES, this.opts.timeoutMs);
      if (sent.status === KV_SEND_STATUS.ok || sent.status === KV_SEND_STATUS.exists) return true;
      throw new Error(`the store refused block ${id.slice(0, 30)} (status ${sent.status}: ${sent.message})`);
    } catch (err) {
      if (this.mode === "auto" && kvSendErrorCode(err) === "connect") {
        this.tcpDownUntil = Date.now() + 30_000;
        return false;
      }
      throw err;
    }
  }

  private async putHttp(b: BlockEntry, data: Buffer, signal: AbortSignal): Promise<void> {
    const res = await fetch(`${this.opts.url}/v1/kv/blocks/${b.key}`, {
      method: "PUT",
      headers: { ...this.opts.headers(), "content-type": "application/octet-stream", "x-llmfleet-crc32c": String(b.crc32c) },
      body: data as unknown as BodyInit,
      signal,
    });
    if (!res.ok) throw new Error(`block ${b.key.slice(0, 12)}: HTTP ${res.status}: ${(await res.text()).slice(0, 200)}`);
    // 200: the store already held a block under this key (another writer's): the manifest names that one.
    if (res.status === 200) Object.assign(b, pickSum(await res.json()));
  }

  /**
   * The state of a v2 entry whose manifest is `frame`: every block checked against the manifest,
   * opened and placed as it arrives. KvBlockError on a corrupt, truncated or missing block (the
   * caller recomputes).
   */
  async load(
    frame: Buffer,
    entryKey: string,
    want: { tokens: number; kvNamespace: string },
    signal: AbortSignal,
  ): Promise<{ state: Buffer; path: "tcp" | "http" }> {
    const loaded = this.loads.enter(); // from its first step: a write-back begun meanwhile waits
    try {
      return await this.loadEntry(frame, entryKey, want, signal);
    } finally {
      loaded();
    }
  }

  /**
   * load() into a sequence that imports parts: each kv block imported as it arrives (PartSink),
   * none of the state assembled; undefined (nothing loaded) when the entry's blocks cannot go that
   * way (coded or sealed ones): the caller loads the whole state then.
   */
  async loadParts(
    frame: Buffer,
    entryKey: string,
    into: Pick<PartSinkOptions, "importer" | "layout" | "tokens"> & { entryTokens: number },
    signal: AbortSignal,
  ): Promise<{ path: "tcp" | "http" } | undefined> {
    const m = decodeManifest(frame);
    this.checkLoadable(m, entryKey, into.entryTokens);
    if (!partsFit(m)) return undefined;
    const loaded = this.loads.enter();
    const addon = this.opts.addon;
    const sink = new PartSink(m, {
      importer: into.importer,
      layout: into.layout,
      tokens: into.tokens,
      // Off the event loop: a block the host pool lacks is page-locked as it is taken.
      ...(addon?.kvAllocAsync ? { alloc: addon.kvAllocAsync.bind(addon) } : addon?.kvAlloc ? { alloc: addon.kvAlloc.bind(addon) } : {}),
      ...(addon?.kvRelease ? { free: (b: Buffer) => void addon.kvRelease!(b) } : {}),
      ...(addon?.kvScatter ? { scatter: addon.kvScatter.bind(addon) } : {}),
    });
    try {
      const path = await this.stream(m, entryKey, sink, signal);
      const t0 = performance.now();
      await sink.finish();
      countStage(this.opts.metrics, "load", "import", t0); // what was left after the last block
      this.opts.metrics.stageSeconds.inc({ op: "load", stage: "import_parts" }, sink.importSeconds);
      return { path };
    } finally {
      await sink.close();
      loaded();
    }
  }

  /** The entry's blocks into `sink`: pushed over TCP where this pod can take them, else over HTTP; counted. */
  private async stream(m: KvManifest, entryKey: string, sink: BlockSink | PartSink, signal: AbortSignal): Promise<"tcp" | "http"> {
    let path: "tcp" | "http" = this.opts.tcp && this.mode !== "http" ? "tcp" : "http";
    if (path === "tcp" && !(await this.loadTcp(m, sink, signal))) path = "http";
    if (path === "http") await this.loadHttp(entryKey, sink, signal);
    this.opts.metrics.blockBytes.inc(
      { op: "loaded", path },
      m.blocks.reduce((n, b) => n + b.bytes, 0),
    );
    return path;
  }

  private async loadEntry(frame: Buffer, entryKey: string, want: { tokens: number; kvNamespace: string }, signal: AbortSignal): Promise<{ state: Buffer; path: "tcp" | "http" }> {
    const m = decodeManifest(frame);
    this.checkLoadable(m, entryKey, want.tokens);
    const open = (b: BlockEntry, stored: Buffer): Buffer => (b.enc ? this.opts.sealer!.open(want.kvNamespace, aad(b.key, this.opts.model, b.kind), stored) : stored);
    const state = await this.stateBlock(m.stateBytes);
    const sink = new BlockSink(m, open, state.alloc, this.opts.addon?.kvScatter?.bind(this.opts.addon));
    try {
      const path = await this.stream(m, entryKey, sink, signal);
      return { state: await sink.finish(), path };
    } finally {
      await sink.close(); // no decode or copy into the state outlives the load
      state.unused();
    }
  }

  /** A write-back's next step waits while this pod loads (LoadGate); the seconds waited are counted. */
  private async afterLoads(): Promise<void> {
    if (this.opts.writesYieldToLoads !== true || !this.loads.busy) return;
    const t0 = performance.now();
    await this.loads.idle();
    countStage(this.opts.metrics, "write", "yield", t0);
  }

  /**
   * Where the state is assembled: a pool block taken off the event loop before the stream starts
   * (kvAllocAsync; on a GPU a block the pool lacks is page-locked as it is taken, and doing that on
   * the event loop for a GB-sized state held every other request on the pod for ~0.4 s on an H100
   * host). `alloc` hands it over when the meta block asks for that size; `unused` gives it back if
   * it was not.
   */
  private async stateBlock(bytes: number): Promise<{ alloc: ((n: number) => Buffer) | undefined; unused: () => void }> {
    const addon = this.opts.addon;
    if (!addon?.kvAlloc) return { alloc: undefined, unused: () => undefined };
    let early = addon.kvAllocAsync && bytes > 0 ? await addon.kvAllocAsync(bytes) : undefined;
    const alloc = (n: number): Buffer => {
      const got = early && n === early.length ? early : addon.kvAlloc!(n);
      if (got === early) early = undefined;
      return got;
    };
    return { alloc, unused: () => early && addon.kvRelease?.(early) };
  }

  private checkLoadable(m: KvManifest, entryKey: string, tokens: number): void {
    if (m.model !== this.opts.model || m.tokens !== tokens) throw new KvBlockError(`entry is for ${m.model}/${m.tokens} tokens`);
    if (m.prefixKeys.at(-1) !== entryKey) throw new KvBlockError("manifest is stored under another key than its own");
    for (const b of m.blocks) {
      if (!DECODABLE_BLOCK_CODECS.includes(b.codec) || (b.kind === "meta" && b.codec !== "none"))
        throw new KvBlockError(`block codec ${b.codec} is not one this pod decodes per block`);
      if (!!b.enc !== !!this.opts.sealer)
        throw new KvBlockError(
          b.enc ? "entry is encrypted and this pod has no KV encryption key" : "entry is not encrypted (this pod only imports sealed entries)",
        );
    }
  }

  /** Blocks pushed by the store to this pod's listener, taken as each is staged; false when the store cannot (HTTP then). */
  private async loadTcp(m: KvManifest, sink: BlockSink | PartSink, signal: AbortSignal): Promise<boolean> {
    const tcp = this.opts.tcp!;
    const id = randomBytes(8).toString("hex");
    const res = await fetch(`${this.opts.url}/v1/kv/blocks/send`, {
      method: "POST",
      headers: { ...this.opts.headers(), "content-type": "application/json" },
      // order "any": the meta block first, then each kv block as the store has read it (BlockSink).
      body: JSON.stringify({ keys: m.blocks.map((b) => b.key), port: tcp.port, id, order: "any" }),
      signal,
    });
    if (res.status === 409 && this.mode === "auto") return false;
    if (!res.ok || !res.body) throw new Error(`blocks/send: HTTP ${res.status}`);
    const lines = ndjson(res.body as unknown as AsyncIterable<Uint8Array>);
    try {
      for (let r = await sink.nextWhileIdle(lines); !r.done; r = await sink.nextWhileIdle(lines)) {
        const line = r.value;
        // The store cannot reach this pod's listener at all (a proxy between them, a firewall): HTTP.
        if (!this.takeStaged(line as { index: number; error?: string }, { sink, id })) return false;
        // Several lines may come in one chunk: the event loop gets a turn after each block placed.
        await tick();
      }
    } finally {
      await lines.return(undefined);
      // Blocks staged after a failure: freed now (the listener's TTL would free them later).
      for (const i of sink.missing()) {
        const left = tcp.addon.kvTake(tcp.handle, `${id}.${i}`);
        if (left) tcp.addon.kvRelease?.(left.state); // back to the pool now, not at a collection
      }
    }
    sink.complete("the block stream");
    return true;
  }

  /** One NDJSON line of a push: the block staged under id.index goes to the sink; false when the very first block could not reach this pod (auto mode: HTTP). */
  private takeStaged({ index, error }: { index: number; error?: string }, { sink, id }: { sink: BlockSink | PartSink; id: string }): boolean {
    if (error && index === 0 && sink.count === 0 && this.mode === "auto") return false;
    if (error) throw new KvBlockError(`block ${index} of the entry: ${error}`);
    const t0 = performance.now();
    const taken = this.opts.tcp!.addon.kvTake(this.opts.tcp!.handle, `${id}.${index}`);
    if (!taken) throw new KvBlockError(`block ${index} was reported staged but is not`);
    // Placed: the block goes back to the pool now (or once the addon placed it), not at a collection.
    // A coded block waits for its batch's decode, and is collected later.
    const release = (): void => void this.opts.tcp!.addon.kvRelease?.(taken.state);
    if (!sink.accept(taken.state, release, index)) release();
    countStage(this.opts.metrics, "load", "place", t0);
    return true;
  }

  /** GET /v1/kv/:key/stream: manifest frame, then u32 length | u32 CRC-32C | bytes per block, parsed as it arrives. */
  private async loadHttp(entryKey: string, sink: BlockSink | PartSink, signal: AbortSignal): Promise<void> {
    const res = await fetch(`${this.opts.url}/v1/kv/${entryKey}/stream`, { headers: this.opts.headers(), signal });
    if (!res.ok || !res.body) throw new Error(`stream: HTTP ${res.status}`);
    const frames = new FrameReader();
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        for (const data of frames.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength))) {
          sink.accept(data);
          await tick(); // the event loop gets a turn after each block placed
        }
      }
    } catch (err) {
      if (err instanceof KvBlockError) throw err;
      throw new KvBlockError(`the block stream broke after ${sink.count} of ${sink.total} blocks: ${(err as Error).message}`);
    }
    sink.complete("the block stream (truncated, or a block evicted)");
  }
}

/** Blocks at least this large are checksummed with the event loop free after each. */
const YIELD_BYTES = 1 << 20;

/** Blocks of a write in flight at once (the first alone): a 1 GB write-back is 29 blocks of 32 MB on a 7B model, one connection each. */
const UPLOAD_WINDOW = 4;

/** A block's size and CRC-32C as the store reports them. */
function pickSum(x: unknown): { bytes: number; crc32c: number } {
  const { bytes, crc32c: crc } = (x ?? {}) as { bytes?: unknown; crc32c?: unknown };
  if (!Number.isInteger(bytes) || !Number.isInteger(crc)) throw new Error("the store answered a block upload without its size and CRC-32C");
  return { bytes: bytes as number, crc32c: crc as number };
}
