/**
 * A RAG document's own KV ([lead] + document computed alone, issue 26), from the nearest place that
 * holds it: the pod's document cache (host memory), else the KV store, else computed. A document's
 * own KV is exactly the KV of a prompt that starts with it, so the store keeps it as the prefix
 * entry such a prompt would write (its whole blocks; the last partial block is computed again), and
 * a pod that computes a document writes it there: any pod of the fleet then joins it without
 * computing it, and a request that starts with it reuses it as a prefix.
 */
import type { KvPrefixCache } from "../kvstore/prefix-cache.ts";
import type { Token } from "../runtime/runtime.ts";
import { ChunkCache } from "./chunk-cache.ts";

export type DocumentOutcome = "cached" | "stored" | "computed";

export interface DocumentKvDeps {
  chunks: ChunkCache;
  /** The KV store (--kv-store); without it documents come from the cache or are computed. */
  kvCache?: KvPrefixCache | undefined;
  /** A pool block the runtime is done with (the store's state, once computeAlone has read it). */
  release?: ((state: Buffer) => void) | undefined;
}

/**
 * The document's own KV and where it came from. `compute` computes `tokens` alone, from `start`
 * (the state of a stored prefix of them) when given. What is computed is kept in the cache and
 * written back to the store in the background (the cache keeps the state: it is not released).
 */
export async function documentKv(
  deps: DocumentKvDeps,
  doc: { tokens: readonly Token[]; kvNamespace: string },
  compute: (start?: Buffer) => Promise<Buffer>,
): Promise<{ state: Buffer; outcome: DocumentOutcome }> {
  const key = ChunkCache.key(doc.kvNamespace, doc.tokens);
  const cached = deps.chunks.get(key);
  if (cached) return { state: cached, outcome: "cached" };
  const { kvCache } = deps;
  const stored = kvCache ? await kvCache.fetchPrefix(doc.tokens, doc.kvNamespace) : undefined;
  let state: Buffer;
  try {
    state = await compute(stored?.state);
  } finally {
    if (stored) deps.release?.(stored.state);
  }
  deps.chunks.put(key, state);
  if (kvCache) writeDocument(kvCache, doc, state, stored?.tokens ?? 0);
  return { state, outcome: stored ? "stored" : "computed" };
}

/** The document's whole blocks to the store in the background, unless it holds them (`have` of them loaded, or known). */
function writeDocument(kvCache: KvPrefixCache, doc: { tokens: readonly Token[]; kvNamespace: string }, state: Buffer, have: number): void {
  const length = kvCache.storableLength(doc.tokens, 0, doc.kvNamespace);
  if (length > have && kvCache.admitWriteBack(length, false)) kvCache.writeBack(doc.tokens, length, state, { kvNamespace: doc.kvNamespace });
}
