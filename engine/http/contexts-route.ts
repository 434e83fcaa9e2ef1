/**
 * Pre-warm API: `POST /v1/contexts {"text": "..."}` (or "prompt") computes the KV of a context
 * (a document, a system prompt) once and stores it, so any pod that later gets a prompt starting
 * with it loads it instead of prefilling it. Answers what was reused, computed and stored:
 *   {object: "kv.context", tokens, stored_tokens, reused_tokens, computed_tokens, key, prefill_ms}
 * Only whole blocks are stored; `stored_tokens` is the block-aligned length.
 */
import express, { type Request, type Response, type Router } from "express";
import { HttpError } from "./http-error.ts";
import { clientGone } from "./respond.ts";
import type { CompletionService } from "../serving/completion-service.ts";
import { commonPrefixLength } from "../runtime/runtime.ts";
import type { KvPrefixCache } from "../kvstore/prefix-cache.ts";
import { identityOf } from "../access/identity.ts";

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

export function contextsRoute(service: CompletionService, cache: KvPrefixCache): Router {
  const router = express.Router();
  router.post("/v1/contexts", async (req: Request, res: Response) => {
    const text = contextText(req.body);
    res.json(await prewarm(service, cache, text, { signal: clientGone(req, res).signal, kvNamespace: identityOf(res).kvNamespace }));
  });
  return router;
}
