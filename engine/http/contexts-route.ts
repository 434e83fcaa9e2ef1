/**
 * Pre-warm API: `POST /v1/contexts {"text": "..."}` (or "prompt") computes the KV of a context
 * (a document, a system prompt) once and stores it in the KV store (--kv-store), so any pod that
 * later gets a prompt starting with it loads it instead of prefilling it. Answers what was reused,
 * computed and stored:
 *   {object: "kv.context", tokens, stored_tokens, reused_tokens, computed_tokens, key, prefill_ms}
 * Only whole blocks are stored; `stored_tokens` is the block-aligned length.
 *
 * `POST /v1/contexts {"documents": [...]}` (RAG documents, as a completion carries them) computes
 * each document's own KV and keeps it in this pod's document cache (--rag-cache-bytes), keyed by
 * its tokens and the tenant's KV namespace, so a later request joins it wherever it sits:
 *   {object: "kv.documents", documents: [{tokens, cached}], computed_tokens, prefill_ms}
 * Pods that do not join documents (no unified KV, --rag-cache-bytes 0) answer 400.
 */
import express, { type Request, type Response, type Router } from "express";
import { HttpError } from "./http-error.ts";
import { clientGone } from "./respond.ts";
import type { CompletionService } from "../serving/completion-service.ts";
import { commonPrefixLength } from "../runtime/runtime.ts";
import type { KvPrefixCache } from "../kvstore/prefix-cache.ts";
import { identityOf } from "../access/identity.ts";
import { documentTexts } from "./openai-request.ts";

function contextText(body: unknown): string {
  const b = (body ?? {}) as { text?: unknown; prompt?: unknown };
  const text = b.text ?? b.prompt;
  if (typeof text !== "string" || text.length === 0) throw new HttpError(400, "text must be a non-empty string", { param: "text" });
  return text;
}

async function prewarm(service: CompletionService, cache: KvPrefixCache, text: string, ctx: { signal: AbortSignal; kvNamespace: string }): Promise<object> {
  const { signal, kvNamespace } = ctx;
  const tokens = service.runtime.tokenize(text);
  if (tokens.length > service.runtime.info.contextSize)
    throw new HttpError(400, `context of ${tokens.length} tokens exceeds the context size ${service.runtime.info.contextSize}`, {
      code: "context_length_exceeded",
    });
  const t0 = performance.now();
  const lease = await service.acquire(tokens, signal, kvNamespace);
  try {
    const seq = lease.sequence;
    const load = await cache.load(seq, tokens, commonPrefixLength(seq.contextTokens(), tokens), kvNamespace);
    const length = cache.storableLength(tokens, load.storedBlocks, kvNamespace);
    const reused = Math.max(load.loaded, Math.min(commonPrefixLength(seq.contextTokens(), tokens), length));
    const key = length > 0 ? await evaluateAndStore(cache, seq, tokens.slice(0, length), kvNamespace) : null;
    const stored = Math.max(length, load.loaded);
    return {
      object: "kv.context",
      tokens: tokens.length,
      stored_tokens: stored,
      reused_tokens: reused,
      computed_tokens: Math.max(0, length - reused),
      key,
      prefill_ms: performance.now() - t0,
    };
  } finally {
    lease.release();
  }
}

async function evaluateAndStore(cache: KvPrefixCache, seq: CompletionServiceSequence, prefix: number[], kvNamespace: string): Promise<string> {
  await seq.evaluatePrefix(prefix);
  return cache.write(prefix, seq.exportState(), kvNamespace);
}

type CompletionServiceSequence = Awaited<ReturnType<CompletionService["acquire"]>>["sequence"];

async function prewarmDocuments(service: CompletionService, raw: unknown, ctx: { signal: AbortSignal; kvNamespace: string }): Promise<object> {
  if (!service.joinsDocuments)
    throw new HttpError(400, "this pod does not join documents (it needs the unified KV, --kv-unified on, and --rag-cache-bytes above 0)", {
      param: "documents",
    });
  const owns = service.documentTokens(documentTexts(raw));
  const { contextSize } = service.runtime.info;
  const lead = service.runtime.tokenize("").length;
  owns.forEach((own, i) => {
    if (own.length > contextSize)
      throw new HttpError(400, `documents[${i}] is ${own.length} tokens; the context holds ${contextSize}`, {
        param: `documents[${i}]`,
        code: "context_length_exceeded",
      });
  });
  const t0 = performance.now();
  const kept = await service.prewarmDocuments(owns, ctx);
  return {
    object: "kv.documents",
    documents: owns.map((own, i) => ({ tokens: own.length - lead, cached: kept[i]! })),
    computed_tokens: owns.reduce((n, own, i) => n + (kept[i] ? 0 : own.length), 0),
    prefill_ms: performance.now() - t0,
  };
}

/** The pre-warm routes; `cache` (the KV store) is what `{text}` needs, documents need joins. */
export function contextsRoute(service: CompletionService, cache: KvPrefixCache | undefined): Router {
  const router = express.Router();
  router.post("/v1/contexts", async (req: Request, res: Response) => {
    const kvNamespace = identityOf(res).kvNamespace;
    const documents = (req.body as { documents?: unknown } | undefined)?.documents;
    if (documents !== undefined) {
      res.json(await prewarmDocuments(service, documents, { signal: clientGone(req, res).signal, kvNamespace }));
      return;
    }
    const text = contextText(req.body);
    if (!cache)
      throw new HttpError(400, "this pod has no KV store (--kv-store) to keep a context's KV in; {documents} can be pre-warmed here", { param: "text" });
    res.json(await prewarm(service, cache, text, { signal: clientGone(req, res).signal, kvNamespace }));
  });
  return router;
}
