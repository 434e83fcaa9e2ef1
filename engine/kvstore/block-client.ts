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
import { blockKey, decodeManifest, encodeManifest, KvBlockError, metaShape, splitState, StateJoiner, verifyBlock, type BlockEntry, type KvManifest } from "./kv-blocks.ts";
import { crc32c } from "./crc32c.ts";
import { KV_SEAL_ALGORITHM, type KvSealer } from "./kv-seal.ts";
import type { KvClientMetrics } from "./client-metrics.ts";
import { KV_SEND_STATUS, kvSendErrorCode, TCP_CHUNK_BYTES, type KvListener, type KvStreamAddon, type KvTransportMode } from "../pd/kv-transport.ts";

export interface BlockStoreConfig {
  blockTokens: number;
  formats?: string[];
  blockCodecs?: string[];
  kvPort?: number;
}

export interface BlockClientOptions {
  url: string;
  headers: Record<string, string>;
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
}

/** Whether the store takes v2 entries with this block codec. */
export function storeTakesV2(config: BlockStoreConfig, codec: string): boolean {
  return (config.formats ?? []).includes("v2") && (config.blockCodecs ?? []).includes(codec);
}

const aad = (key: string, model: string, kind: string): string => `${key}|${model}|${kind}`;

export interface BlockWriteResult {
  key: string;
  sentBytes: number;
  dedupedBytes: number;
  path: "tcp" | "http";
}

export class KvBlockClient {
  /** Set when the store's TCP port failed to connect in auto mode: HTTP for a while. */
  private tcpDownUntil = 0;

  constructor(readonly opts: BlockClientOptions) {}

  private get mode(): KvTransportMode {
    return this.opts.transport ?? "auto";
  }

  private useTcpUpload(config: BlockStoreConfig): boolean {
    return this.mode !== "http" && !!this.opts.addon && config.kvPort !== undefined && Date.now() >= this.tcpDownUntil;
  }

  /**
   * Writes `state` (exactly the prefix's tokens) as a v2 entry under keys.at(-1): only blocks the
   * store lacks are sent, then the manifest.
   */
  async write(state: Buffer, keys: string[], config: BlockStoreConfig, codec: string, kvNamespace: string, signal: AbortSignal): Promise<BlockWriteResult> {
    const split = splitState(state, config.blockTokens);
    const entryKey = keys.at(-1)!;
    const raws: { kind: "meta" | "kv"; key: string; raw: Buffer; index?: number }[] = [
      { kind: "meta", key: blockKey(entryKey, "meta", codec, metaShape(split.meta)), raw: split.meta },
      ...split.blocks.map((raw, i) => ({ kind: "kv" as const, key: blockKey(keys[i]!, "kv", codec, split.shapes[i]!), raw, index: i })),
    ];
    const has = await this.has(
      raws.map((r) => r.key),
      signal,
    );
    const blocks: BlockEntry[] = [];
    const stored: Buffer[] = [];
    for (const [i, r] of raws.entries()) {
      // Held blocks are not sent; their size and CRC-32C come from the store (POST /v1/kv/blocks/info)
      // below, since a sealed copy (random IV) differs from the one sealed here.
      const sealed = this.opts.sealer ? this.opts.sealer.seal(kvNamespace, aad(r.key, this.opts.model, r.kind), r.raw) : r.raw;
      stored.push(sealed);
      blocks.push({
        key: r.key,
        kind: r.kind,
        ...(r.kind === "kv" ? { index: r.index!, pos0: r.index! * config.blockTokens, tokens: config.blockTokens, rope: "absolute" as const } : {}),
        codec,
        rawBytes: r.raw.length,
        bytes: sealed.length,
        crc32c: has[i] ? 0 : crc32c(sealed),
        ...(this.opts.sealer ? { enc: { alg: KV_SEAL_ALGORITHM, keyId: kvNamespace } } : {}),
      });
    }
    // Held blocks: the manifest must carry the stored copy's size and CRC (a sealed copy differs from ours).
    const heldIdx = has.flatMap((h, i) => (h ? [i] : []));
    if (heldIdx.length > 0) {
      const info = await this.info(
        heldIdx.map((i) => blocks[i]!.key),
        signal,
      );
      heldIdx.forEach((i, j) => {
        const got = info[j];
        if (!got) {
          has[i] = false; // evicted since: send it
          blocks[i]!.crc32c = crc32c(stored[i]!);
          return;
        }
        blocks[i]!.bytes = got.bytes;
        blocks[i]!.crc32c = got.crc32c;
      });
    }
    let path: "tcp" | "http" = this.useTcpUpload(config) ? "tcp" : "http";
    let sentBytes = 0;
    let dedupedBytes = 0;
    for (const [i, b] of blocks.entries()) {
      if (has[i]) {
        dedupedBytes += b.bytes;
        continue;
      }
      if (path === "tcp") {
        const ok = await this.sendTcp(config, b, stored[i]!);
        if (!ok) path = "http";
      }
      if (path === "http") await this.putHttp(b, stored[i]!, signal);
      sentBytes += b.bytes;
    }
    this.opts.metrics.blockBytes.inc({ op: "sent", path }, sentBytes);
    this.opts.metrics.blockBytes.inc({ op: "deduped", path }, dedupedBytes);
    const manifest: KvManifest = { model: this.opts.model, tokens: split.tokens, blockTokens: config.blockTokens, stateBytes: state.length, prefixKeys: keys, blocks };
    const res = await fetch(`${this.opts.url}/v1/kv/${entryKey}`, {
      method: "PUT",
      headers: { ...this.opts.headers, "content-type": "application/x-llmfleet-kv-manifest" },
      body: encodeManifest(manifest) as unknown as BodyInit,
      signal,
    });
    if (!res.ok) throw new Error(`manifest: HTTP ${res.status}: ${(await res.text()).slice(0, 200)}`);
    return { key: entryKey, sentBytes, dedupedBytes, path };
  }

  private async has(keys: string[], signal: AbortSignal): Promise<boolean[]> {
    const res = await fetch(`${this.opts.url}/v1/kv/blocks/has`, {
      method: "POST",
      headers: { ...this.opts.headers, "content-type": "application/json" },
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
      headers: { ...this.opts.headers, "content-type": "application/json" },
      body: JSON.stringify({ keys }),
      signal,
    });
    if (!res.ok) throw new Error(`blocks/info: HTTP ${res.status}`);
    return ((await res.json()) as { blocks: ({ bytes: number; crc32c: number } | null)[] }).blocks.map((b) => b ?? undefined);
  }

  /** Sends one block to the store's listener; false when TCP is unreachable and auto mode falls back to HTTP. */
  private async sendTcp(config: BlockStoreConfig, b: BlockEntry, data: Buffer): Promise<boolean> {
    const host = new URL(this.opts.url).hostname.replace(/^\[|\]$/g, "");
    try {
      const sent = await this.opts.addon!.kvSend(data, host, config.kvPort!, b.key, "{}", TCP_CHUNK_BYTES, this.opts.timeoutMs);
      if (sent.status === KV_SEND_STATUS.ok || sent.status === KV_SEND_STATUS.exists) return true;
      throw new Error(`the store refused block ${b.key.slice(0, 12)} (status ${sent.status}: ${sent.message})`);
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
      headers: { ...this.opts.headers, "content-type": "application/octet-stream", "x-llmfleet-crc32c": String(b.crc32c) },
      body: data as unknown as BodyInit,
      signal,
    });
    if (!res.ok) throw new Error(`block ${b.key.slice(0, 12)}: HTTP ${res.status}: ${(await res.text()).slice(0, 200)}`);
  }

  /**
   * The state of a v2 entry whose manifest is `frame`: every block checked against the manifest,
   * opened and placed as it arrives. KvBlockError on a corrupt, truncated or missing block (the
   * caller recomputes).
   */
  async load(frame: Buffer, entryKey: string, want: { tokens: number; kvNamespace: string }, signal: AbortSignal): Promise<{ state: Buffer; path: "tcp" | "http" }> {
    const m = decodeManifest(frame);
    if (m.model !== this.opts.model || m.tokens !== want.tokens) throw new KvBlockError(`entry is for ${m.model}/${m.tokens} tokens`);
    if (m.prefixKeys.at(-1) !== entryKey) throw new KvBlockError("manifest is stored under another key than its own");
    for (const b of m.blocks) {
      if (b.codec !== "none") throw new KvBlockError(`block codec ${b.codec} is not one this pod decodes per block`);
      if (!!b.enc !== !!this.opts.sealer) throw new KvBlockError(b.enc ? "entry is encrypted and this pod has no KV encryption key" : "entry is not encrypted (this pod only imports sealed entries)");
    }
    let joiner: StateJoiner | undefined;
    const accept = (i: number, stored: Buffer): void => {
      const b = m.blocks[i]!;
      verifyBlock(b, stored);
      const raw = b.enc ? this.opts.sealer!.open(want.kvNamespace, aad(b.key, this.opts.model, b.kind), stored) : stored;
      if (i === 0) {
        joiner = new StateJoiner(raw, m.blockTokens);
        if (joiner.blocks !== m.blocks.length - 1) throw new KvBlockError(`meta block describes ${joiner.blocks} kv blocks, the manifest ${m.blocks.length - 1}`);
        return;
      }
      if (!joiner) throw new KvBlockError("a kv block arrived before the meta block");
      joiner.place(i - 1, raw);
    };
    let path: "tcp" | "http" = this.opts.tcp && this.mode !== "http" ? "tcp" : "http";
    if (path === "tcp") {
      const ok = await this.loadTcp(m, accept, signal);
      if (!ok) path = "http";
    }
    if (path === "http") await this.loadHttp(entryKey, m, accept, signal);
    if (!joiner) throw new KvBlockError("the meta block never arrived");
    this.opts.metrics.blockBytes.inc({ op: "loaded", path }, m.blocks.reduce((n, b) => n + b.bytes, 0));
    return { state: joiner.finish(), path };
  }

  /** Blocks pushed by the store to this pod's listener, taken as each is staged; false when the store cannot (HTTP then). */
  private async loadTcp(m: KvManifest, accept: (i: number, stored: Buffer) => void, signal: AbortSignal): Promise<boolean> {
    const tcp = this.opts.tcp!;
    const id = randomBytes(8).toString("hex");
    const res = await fetch(`${this.opts.url}/v1/kv/blocks/send`, {
      method: "POST",
      headers: { ...this.opts.headers, "content-type": "application/json" },
      body: JSON.stringify({ keys: m.blocks.map((b) => b.key), port: tcp.port, id }),
      signal,
    });
    if (res.status === 409 && this.mode === "auto") return false;
    if (!res.ok || !res.body) throw new Error(`blocks/send: HTTP ${res.status}`);
    let next = 0;
    let text = "";
    const decoder = new TextDecoder();
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        text += decoder.decode(chunk, { stream: true });
        let nl: number;
        while ((nl = text.indexOf("\n")) >= 0) {
          const line = JSON.parse(text.slice(0, nl)) as { index: number; error?: string };
          text = text.slice(nl + 1);
          if (line.error) throw new KvBlockError(`block ${line.index} of the entry: ${line.error}`);
          if (line.index !== next) throw new KvBlockError(`block ${line.index} staged out of order (expected ${next})`);
          const taken = tcp.addon.kvTake(tcp.handle, `${id}.${line.index}`);
          if (!taken) throw new KvBlockError(`block ${line.index} was reported staged but is not`);
          accept(next++, taken.state);
        }
      }
    } finally {
      // Blocks staged after a failure are freed by the listener's TTL; take what is already there now.
      for (let i = next; i < m.blocks.length; i++) tcp.addon.kvTake(tcp.handle, `${id}.${i}`);
    }
    if (next !== m.blocks.length) throw new KvBlockError(`the block stream ended after ${next} of ${m.blocks.length} blocks`);
    return true;
  }

  /** GET /v1/kv/:key/stream: manifest frame, then u32 length | u32 CRC-32C | bytes per block, parsed as it arrives. */
  private async loadHttp(entryKey: string, m: KvManifest, accept: (i: number, stored: Buffer) => void, signal: AbortSignal): Promise<void> {
    const res = await fetch(`${this.opts.url}/v1/kv/${entryKey}/stream`, { headers: this.opts.headers, signal });
    if (!res.ok || !res.body) throw new Error(`stream: HTTP ${res.status}`);
    const q = new ByteQueue();
    let manifestLeft: number | undefined;
    let next = 0;
    let want: number | undefined;
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        q.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
        for (;;) {
          if (manifestLeft === undefined) {
            const head = q.take(12);
            if (!head) break;
            manifestLeft = head.readUInt32LE(8) + 4;
          }
          if (manifestLeft > 0) {
            if (!q.take(manifestLeft)) break;
            manifestLeft = 0;
          }
          if (want === undefined) {
            const h = q.take(8);
            if (!h) break;
            want = h.readUInt32LE(0);
          }
          const data = q.take(want);
          if (!data) break;
          if (next >= m.blocks.length) throw new KvBlockError("the block stream holds more blocks than the manifest");
          accept(next++, data);
          want = undefined;
        }
      }
    } catch (err) {
      if (err instanceof KvBlockError) throw err;
      throw new KvBlockError(`the block stream broke after ${next} of ${m.blocks.length} blocks: ${(err as Error).message}`);
    }
    if (next !== m.blocks.length) throw new KvBlockError(`the block stream ended after ${next} of ${m.blocks.length} blocks (truncated or a block evicted)`);
  }
}

/** Bytes arriving in chunks, taken in frames (a copy only when a frame spans chunks). */
class ByteQueue {
  private chunks: Buffer[] = [];
  private size = 0;

  push(b: Buffer): void {
    this.chunks.push(b);
    this.size += b.length;
  }

  take(n: number): Buffer | undefined {
    if (this.size < n) return undefined;
    this.size -= n;
    const first = this.chunks[0];
    if (first && first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    while (at < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, n - at);
      c.copy(out, at, 0, k);
      at += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    return out;
  }
}
