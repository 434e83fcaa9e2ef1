/**
 * The KV store as seen from a prefill or aggregated pod. llama.cpp state is per sequence, not
 * per block, so an entry is the whole sequence state at a block-aligned prompt length L, keyed
 * by the chained hash of those L/blockTokens blocks (block-keys.ts). Before evaluating a prompt
 * the pod asks for the longest such prefix and imports it; afterwards it writes the state at
 * the prompt's last full block, in the background. Each entry names the keys of all its block
 * prefixes, and the store answers a lookup with a longer entry that starts with the prompt's
 * longest shared prefix (an alias); the pod cuts that state to the shared blocks after decoding
 * it and checks the tokens it imported, as for any entry. Every failure (store down, slow, corrupt
 * entry) means "recompute": the answer is the same, only slower, and a metric and a log line
 * say why.
 *
 * Tenants: every call takes the request's KV namespace, which joins the store's tenant salt in
 * the chain seed of the block keys, so two namespaces never compute the same key; with a sealer
 * (kv-seal.ts) payloads are encrypted per namespace before they leave the pod, and an entry that
 * is not sealed for the namespace is never imported.
 */
import { decodeKvEntry, encodeKvEntry, KvEntryError, readKvEntryHeader } from "./kv-entry.ts";
import { kvBlockHashes, requestSalt, type KeySalt } from "./block-keys.ts";
import { KV_SEAL_ALGORITHM, KvSealError, type KvSealer } from "./kv-seal.ts";
import { countStage, type KvClientMetrics } from "./client-metrics.ts";
import { readKvEntry, writeKvEntry } from "../kvcodec/codec-offload.ts";
import { normaliseSeqState, truncateSeqState, type KvLayout } from "../runtime/seq-state.ts";
import type { RuntimeSequence, Token } from "../runtime/runtime.ts";
import { ReuseEstimator } from "./reuse-estimator.ts";
import { KvBlockClient, storeTakesV2, type BlockStoreConfig } from "./block-client.ts";
import { isManifest, KvBlockError } from "./kv-blocks.ts";
import type { KvListener, KvTransportMode } from "../pd/kv-transport.ts";
import { kvCodec } from "../kvcodec/codec.ts";
import { blockCodecFor } from "../kvcodec/block-codec.ts";

export interface PrefixCacheOptions {
  url: string;
  /** Longest wait for the store (lookup + fetch) before recomputing. */
  timeoutMs: number;
  /** Model identity the keys are salted with (the store adds the tenant salt). */
  model: string;
  /** This pod's KV layout; loaded states are normalised to it. */
  layout: KvLayout;
  metrics: KvClientMetrics;
  log?: (line: string) => void;
  /** Headers of every request to the store (its fleet token), asked per request: a rotated token is sent at once. Default none. */
  headers?: () => Record<string, string>;
  /** Encrypts payloads per KV namespace before they leave the pod; default none (plaintext). */
  sealer?: KvSealer;
  /**
   * Raw state bytes of write-backs exported and not yet stored; past it a write-back is skipped
   * (a later request with the same prefix writes it). Default 1 GiB.
   */
  writeBackBudgetBytes?: number;
  /** Write-backs wait while this pod loads (load-gate.ts). Default false (block-client.ts says why). */
  writesYieldToLoads?: boolean;
  /** Decides per request whether a load beats recomputing (reuse-estimator.ts). */
  estimator?: ReuseEstimator;
  /** How v2 blocks move (auto: native TCP where both sides can, else HTTP). Default auto. */
  transport?: KvTransportMode;
  /** This pod's native listener: v2 loads arrive on it over TCP (and its addon sends uploads). */
  tcp?: KvListener;
}

interface StoreConfig extends BlockStoreConfig {
  blockTokens: number;
  codec: string;
  tenantSalt: string;
}

/** What a load found: tokens imported, and the longest block index the store is known to hold. */
export interface PrefixLoad {
  loaded: number;
  storedBlocks: number;
}

type Outcome = "hit" | "miss" | "error" | "timeout" | "corrupt" | "mismatch" | "recompute_faster";

class LoadFailure extends Error {
  constructor(
    readonly outcome: Outcome,
    message: string,
  ) {
    super(message);
  }
}

/** fetchEntry's answer when the entry went straight into the sequence (no state to import). */
const IMPORTED = Symbol("imported");

export class KvPrefixCache implements AsyncDisposable {
  private config: StoreConfig | undefined;
  private readonly pending = new Set<Promise<void>>();
  private readonly log: (line: string) => void;
  /** Keys this pod wrote or loaded lately: no need to write them again. */
  private readonly known = new Set<string>();
  readonly estimator: ReuseEstimator;
  /** Raw bytes of write-backs exported and not yet stored, and the last seen state bytes per token. */
  private writeBackBytes = 0;
  private stateBytesPerToken = 0;

  private readonly blocks: KvBlockClient;

  constructor(readonly opts: PrefixCacheOptions) {
    this.log = opts.log ?? ((l) => process.stderr.write(`${l}\n`));
    this.estimator = opts.estimator ?? new ReuseEstimator();
    this.blocks = new KvBlockClient({
      url: opts.url,
      headers: () => opts.headers?.() ?? {},
      model: opts.model,
      metrics: opts.metrics,
      timeoutMs: opts.timeoutMs,
      ...(opts.sealer ? { sealer: opts.sealer } : {}),
      ...(opts.transport ? { transport: opts.transport } : {}),
      ...(opts.tcp ? { tcp: opts.tcp, addon: opts.tcp.addon } : {}),
      ...(opts.writesYieldToLoads !== undefined ? { writesYieldToLoads: opts.writesYieldToLoads } : {}),
    });
  }

  /** The pod prefilled `tokens` tokens in `ms` (the recompute side of load-or-recompute). */
  observePrefill(tokens: number, ms: number): void {
    this.estimator.observePrefill(tokens, ms);
  }

  /**
   * Whether to export a state of `length` tokens for the store now. Not while requests wait for a
   * sequence (`busy`: the export holds the engine and the sequence), not past the budget of bytes
   * in flight; a skipped write-back is not lost, a later request with the prefix writes it.
   */
  admitWriteBack(length: number, busy: boolean): boolean {
    if (busy) {
      this.opts.metrics.writes.inc({ outcome: "skipped_busy" });
      return false;
    }
    const budget = this.opts.writeBackBudgetBytes ?? 2 ** 30;
    if (this.writeBackBytes > 0 && this.writeBackBytes + length * this.stateBytesPerToken > budget) {
      this.opts.metrics.writes.inc({ outcome: "skipped_budget" });
      return false;
    }
    return true;
  }

  private async storeConfig(signal: AbortSignal): Promise<StoreConfig> {
    if (this.config) return this.config;
    const res = await fetch(`${this.opts.url}/v1/kv/config`, { headers: this.headers, signal });
    if (!res.ok) throw new LoadFailure("error", `config: HTTP ${res.status}`);
    this.config = (await res.json()) as StoreConfig;
    return this.config;
  }

  private salt(config: StoreConfig, kvNamespace: string): KeySalt {
    return requestSalt(this.opts.model, config.tenantSalt, kvNamespace);
  }

  private get headers(): Record<string, string> {
    return this.opts.headers?.() ?? {};
  }

  /**
   * Imports into `seq` the longest cached block-aligned prefix of `context` that is longer than
   * `have` tokens (what the sequence already shares with it). Never throws.
   */
  async load(seq: RuntimeSequence, context: readonly Token[], have: number, kvNamespace = ""): Promise<PrefixLoad> {
    return this.loading(context, { have, kvNamespace, into: seq }, async (found) => {
      if (!found.state) return; // imported block by block as it arrived
      try {
        await this.importOrClear(seq, found.state, context.slice(0, found.tokens));
      } finally {
        // On the device now (or refused): the assembled state's pool block goes back at once.
        this.opts.tcp?.addon.kvRelease?.(found.state);
      }
    });
  }

  /**
   * The longest cached block-aligned prefix of `context` as a state, imported nowhere (a RAG
   * document's own KV: the entry a prompt starting with that document writes), or undefined (none
   * held, recomputing was expected to be faster, or the store failed). Counted as load() counts.
   * The state may be a pool block: the caller gives it back (kvRelease) once it has read it.
   */
  async fetchPrefix(context: readonly Token[], kvNamespace = ""): Promise<{ state: Buffer; tokens: number } | undefined> {
    let got: { state: Buffer; tokens: number } | undefined;
    await this.loading(context, { have: 0, kvNamespace }, async (found) => {
      got = { state: found.state!, tokens: found.tokens }; // no sequence to import into: always a state
    });
    return got;
  }

  /** A lookup and fetch, `use` of what was found, the outcome counted. Never throws. */
  private async loading(
    context: readonly Token[],
    at: { have: number; kvNamespace: string; into?: RuntimeSequence },
    use: (found: { state: Buffer | undefined; tokens: number }) => Promise<void>,
  ): Promise<PrefixLoad> {
    const t0 = performance.now();
    const signal = AbortSignal.timeout(this.opts.timeoutMs);
    try {
      const found = await this.lookupAndFetch(context, at, signal);
      if (!found) return this.finish("miss", t0, { loaded: 0, storedBlocks: 0 });
      if ("skip" in found) return this.finish("recompute_faster", t0, { loaded: 0, storedBlocks: found.storedBlocks });
      await use(found);
      this.opts.metrics.reusedTokens.inc(found.tokens);
      this.estimator.observeLoad(found.entryTokens, performance.now() - t0);
      return this.finish("hit", t0, { loaded: found.tokens, storedBlocks: found.tokens / found.blockTokens });
    } catch (err) {
      const outcome = signal.aborted ? "timeout" : err instanceof LoadFailure ? err.outcome : "error";
      this.log(`kv-store: ${outcome} loading a cached prefix from ${this.opts.url}: ${(err as Error).message}; recomputing`);
      return this.finish(outcome, t0, { loaded: 0, storedBlocks: 0 });
    }
  }

  private finish(outcome: Outcome, t0: number, result: PrefixLoad): PrefixLoad {
    this.opts.metrics.loads.inc({ outcome });
    if (outcome === "hit") this.opts.metrics.loadSeconds.observe((performance.now() - t0) / 1000);
    return result;
  }

  private async lookupAndFetch(
    context: readonly Token[],
    { have, kvNamespace, into }: { have: number; kvNamespace: string; into?: RuntimeSequence },
    signal: AbortSignal,
  ): Promise<{ state: Buffer | undefined; tokens: number; entryTokens: number; blockTokens: number } | { skip: true; storedBlocks: number } | undefined> {
    const t0 = performance.now();
    const config = await this.storeConfig(signal);
    const keys = kvBlockHashes(context, config.blockTokens, this.salt(config, kvNamespace));
    const worth = keys.slice(Math.floor(have / config.blockTokens));
    if (worth.length === 0) return undefined;
    const found = await this.lookup(keys, signal);
    const t1 = countStage(this.opts.metrics, "load", "lookup", t0);
    const tokens = (found.index + 1) * config.blockTokens;
    if (found.index < 0 || tokens <= have) return undefined;
    // An older store answers no entryKey: the entry is keys[index] itself.
    const entryKey = found.entryKey ?? keys[found.index]!;
    const entryTokens = (found.entryBlocks ?? found.index + 1) * config.blockTokens;
    if (entryTokens < tokens) throw new LoadFailure("mismatch", `store named an entry of ${entryTokens} tokens for a prefix of ${tokens}`);
    if (this.estimator.decide(entryTokens, tokens - have).choice === "recompute") return { skip: true, storedBlocks: found.index + 1 };
    const target = into ? { seq: into, prefix: context.slice(0, tokens) } : undefined;
    const state = await this.fetchEntry(entryKey, { tokens: entryTokens, entryKey, kvNamespace, into: target }, signal);
    countStage(this.opts.metrics, "load", "fetch", t1);
    if (!state) return undefined;
    this.remember(keys[found.index]!);
    return { state: this.prefixOf(state, entryTokens, tokens), tokens, entryTokens, blockTokens: config.blockTokens };
  }

  /** The state of an entry's first `tokens` (undefined: imported already, nothing to cut). */
  private prefixOf(state: Buffer | typeof IMPORTED, entryTokens: number, tokens: number): Buffer | undefined {
    if (state === IMPORTED) return undefined;
    return entryTokens > tokens ? this.cut(state, tokens) : state;
  }

  /**
   * The decoded state of an entry, or undefined when it is gone (evicted since the lookup); or
   * IMPORTED: a v2 entry's blocks imported into `want.into.seq` as they arrived (its runtime
   * imports parts, the blocks raw: BlockClient.loadParts), its `prefix` tokens held now.
   */
  private async fetchEntry(
    key: string,
    want: { tokens: number; entryKey: string; kvNamespace: string; into?: { seq: RuntimeSequence; prefix: readonly Token[] } | undefined },
    signal: AbortSignal,
  ): Promise<Buffer | typeof IMPORTED | undefined> {
    const got = await fetch(`${this.opts.url}/v1/kv/${key}`, { headers: this.headers, signal });
    if (got.status === 404) return undefined;
    if (!got.ok) throw new LoadFailure("error", `get: HTTP ${got.status}`);
    const buf = Buffer.from(await got.arrayBuffer());
    if (!isManifest(buf)) return this.decodeEntry(buf, want);
    try {
      if (want.into && (await this.loadParts(buf, key, { ...want.into, entryTokens: want.tokens }, signal))) return IMPORTED;
      return (await this.blocks.load(buf, key, want, signal)).state;
    } catch (err) {
      if (err instanceof KvBlockError || err instanceof KvSealError) throw new LoadFailure("corrupt", err.message);
      throw err;
    }
  }

  /** BlockClient.loadParts into `into.seq` (cleared first; cleared again if the load fails); false when the entry or the sequence cannot load that way. */
  private async loadParts(frame: Buffer, key: string, into: { seq: RuntimeSequence; prefix: readonly Token[]; entryTokens: number }, signal: AbortSignal): Promise<boolean> {
    const { seq, prefix, entryTokens } = into;
    if (!seq.importPartsAt || !seq.adoptParts || process.env.LLMFLEET_KV_LOAD_PARTS === "0") return false;
    await seq.clear();
    try {
      const importer = seq.importPartsAt.bind(seq);
      const done = await this.blocks.loadParts(frame, key, { entryTokens, tokens: prefix.length, layout: this.opts.layout, importer }, signal);
      if (!done) return false;
      await seq.adoptParts(prefix);
      return true;
    } catch (err) {
      await seq.clear().catch(() => undefined);
      throw err;
    }
  }

  private async lookup(keys: string[], signal: AbortSignal): Promise<{ index: number; entryKey?: string | null; entryBlocks?: number | null }> {
    const res = await fetch(`${this.opts.url}/v1/kv/lookup`, {
      method: "POST",
      headers: { ...this.headers, "content-type": "application/json" },
      body: JSON.stringify({ keys, aliases: true }),
      signal,
    });
    if (!res.ok) throw new LoadFailure("error", `lookup: HTTP ${res.status}`);
    return (await res.json()) as { index: number; entryKey?: string | null; entryBlocks?: number | null };
  }

  /**
   * The state of the first `tokens` of a longer entry (served through an alias); when that is a
   * copy, its source goes back to the pool at once (kvAlloc'd: a TCP load).
   */
  private cut(state: Buffer, tokens: number): Buffer {
    try {
      const cut = truncateSeqState(state, tokens);
      if (cut.buffer !== state.buffer) this.opts.tcp?.addon.kvRelease?.(state);
      return cut;
    } catch (err) {
      throw new LoadFailure("corrupt", `cutting a ${state.length}-byte state to ${tokens} tokens: ${(err as Error).message}`);
    }
  }

  private async decodeEntry(buf: Buffer, want: { tokens: number; entryKey: string; kvNamespace: string }): Promise<Buffer> {
    try {
      const plainEntry = this.openEntry(buf, want);
      // Off the event loop: the SHA-256 of a GB-sized entry takes seconds, a lossy codec decodes at
      // 50–180 MB/s, and other requests wait meanwhile.
      const { header, state } = await readKvEntry(plainEntry);
      if (header.model !== this.opts.model || header.tokens !== want.tokens)
        throw new LoadFailure("mismatch", `entry is for ${header.model}/${header.tokens} tokens`);
      return state;
    } catch (err) {
      if (err instanceof KvEntryError || err instanceof KvSealError) throw new LoadFailure("corrupt", err.message);
      throw err;
    }
  }

  /**
   * The entry with its payload decrypted (kv-seal.ts), for readKvEntry. With a sealer only sealed
   * entries are imported: a plaintext one could have been planted. Unsealed entries pass as they are.
   */
  private openEntry(buf: Buffer, want: { entryKey: string; kvNamespace: string }): Buffer {
    const sealer = this.opts.sealer;
    const encryption = readKvEntryHeader(buf).encryption;
    if (!sealer && !encryption) return buf;
    if (!sealer) throw new LoadFailure("mismatch", `entry is encrypted (${encryption}) and this pod has no KV encryption key`);
    if (encryption !== KV_SEAL_ALGORITHM) throw new LoadFailure("mismatch", `entry is not encrypted with ${KV_SEAL_ALGORITHM}`);
    const { header, payload } = decodeKvEntry(buf);
    const plainHeader = { ...header };
    delete plainHeader.encryption;
    return encodeKvEntry(plainHeader, sealer.open(want.kvNamespace, want.entryKey, payload));
  }

  /** The entry with its payload encrypted under the namespace's key, bound to the entry's own key (what readers fetch it by). */
  private sealEntry(entry: Buffer, kvNamespace: string, key: string): Buffer {
    const sealer = this.opts.sealer;
    if (!sealer) return entry;
    const { header, payload } = decodeKvEntry(entry);
    return encodeKvEntry({ ...header, encryption: KV_SEAL_ALGORITHM }, sealer.seal(kvNamespace, key, payload));
  }

  /** A failed import leaves the sequence empty (never half-loaded). */
  private async importOrClear(seq: RuntimeSequence, state: Buffer, expected: readonly Token[]): Promise<void> {
    try {
      await this.importState(seq, state, expected);
    } catch (err) {
      await seq.clear().catch(() => undefined);
      throw err;
    }
  }

  private async importState(seq: RuntimeSequence, state: Buffer, expected: readonly Token[]): Promise<void> {
    const t0 = performance.now();
    await seq.clear();
    await seq.importState(normaliseSeqState(state, this.opts.layout));
    countStage(this.opts.metrics, "load", "import", t0);
    const got = seq.contextTokens();
    if (got.length !== expected.length || got.some((t, i) => t !== expected[i]))
      throw new LoadFailure("mismatch", "imported state holds other tokens than the prompt prefix");
  }

  private remember(key: string): void {
    this.known.add(key);
    if (this.known.size > 4096) this.known.delete(this.known.values().next().value!);
  }

  /** Block-aligned length of `context` worth writing, or 0 (store known to hold it, or unreachable so far). */
  storableLength(context: readonly Token[], storedBlocks: number, kvNamespace = ""): number {
    const config = this.config;
    if (!config) return 0;
    const blocks = Math.floor(context.length / config.blockTokens);
    if (blocks === 0 || blocks <= storedBlocks) return 0;
    const length = blocks * config.blockTokens;
    const key = kvBlockHashes(context.slice(0, length), config.blockTokens, this.salt(config, kvNamespace)).at(-1)!;
    return this.known.has(key) ? 0 : length;
  }

  /**
   * Writes the state of context[0..length) (taken from `state`, which may hold more) in the
   * background. opts.release: called with the state once the write has read it (cut into blocks of
   * their own, or sent), where the write-back is its only reader; not if the write failed before
   * (the garbage collector has it then).
   */
  writeBack(context: readonly Token[], length: number, state: Promise<Buffer> | Buffer, opts: { kvNamespace?: string; release?: (state: Buffer) => void } = {}): void {
    const { kvNamespace = "", release } = opts;
    let held = 0;
    const t0 = performance.now();
    const counted = Promise.resolve(state).then((buf) => {
      countStage(this.opts.metrics, "write", "export", t0);
      held = buf.length;
      this.writeBackBytes += held;
      this.stateBytesPerToken = buf.length / Math.max(1, context.length);
      return buf;
    });
    let read = false;
    const done = (): void => {
      if (read || !release) return;
      read = true;
      void counted.then(release);
    };
    const stored = this.write(context.slice(0, length), counted, kvNamespace, done).then(done);
    const p = stored.finally(() => (this.writeBackBytes -= held)).then(
      () => undefined,
      (err: unknown) => {
        this.opts.metrics.writes.inc({ outcome: "error" });
        this.log(`kv-store: writing ${length} tokens to ${this.opts.url} failed: ${withCause(err)}`);
      },
    );
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p));
  }

  /** Writes synchronously (the pre-warm API); returns the key. stateRead: called once `state` is read no more (before the upload ends). */
  async write(prefix: readonly Token[], state: Promise<Buffer> | Buffer, kvNamespace = "", stateRead?: () => void): Promise<string> {
    const config = await this.storeConfig(AbortSignal.timeout(this.opts.timeoutMs));
    const keys = kvBlockHashes(prefix, config.blockTokens, this.salt(config, kvNamespace));
    const key = keys.at(-1);
    if (!key || keys.length * config.blockTokens !== prefix.length) throw new Error(`prefix of ${prefix.length} tokens is not block-aligned`);
    const blockCodec = blockCodecFor(kvCodec(config.codec).name, config.blockCodecs);
    if (storeTakesV2(config, blockCodec)) {
      const signal = AbortSignal.timeout(Math.max(this.opts.timeoutMs, 60_000));
      await this.blocks.write(await state, { keys, config, codec: blockCodec, kvNamespace, signal, onStateRead: stateRead });
      this.remember(key);
      this.opts.metrics.writes.inc({ outcome: "stored" });
      return key;
    }
    // Cut, encoded, framed and hashed off the event loop (a write-back must not hold other requests).
    const plain = await writeKvEntry(await state, { model: this.opts.model, tokens: prefix.length, codec: config.codec, prefixKeys: keys });
    stateRead?.();
    const entry = this.sealEntry(plain, kvNamespace, key);
    const res = await fetch(`${this.opts.url}/v1/kv/${key}`, { method: "PUT", headers: this.headers, body: entry as unknown as BodyInit });
    this.remember(key);
    if (!res.ok) throw new Error(`HTTP ${res.status}: ${(await res.text()).slice(0, 200)}`);
    this.opts.metrics.writes.inc({ outcome: "stored" });
    return key;
  }

  /** Waits for background writes (tests, shutdown). */
  async settled(): Promise<void> {
    await Promise.all([...this.pending]);
  }

  /** Waits for background writes, then closes this pod's block listener (opts.tcp: the pod gave it to the cache). */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.settled();
    if (this.opts.tcp) this.opts.tcp.addon.kvClose(this.opts.tcp.handle);
  }
}

/** An error's message with its cause's ("fetch failed" alone says nothing of which socket error it was). */
function withCause(err: unknown): string {
  const e = err as Error & { cause?: { message?: string; code?: string } };
  const cause = e.cause?.code ?? e.cause?.message;
  return cause ? `${e.message} (${cause})` : e.message;
}
