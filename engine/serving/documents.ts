/**
 * Where a request's `documents` (the RAG extension, docs/api.md) go in its prompt: first, each on
 * its own, before the prompt or the rendered chat —
 *
 *   [BOS] document 1, "\n\n" ... document n, "\n\n" [the prompt or chat, without its BOS]
 *
 * Each document is tokenized alone (the same tokens whichever documents surround it), so a
 * document's tokens and KV can be found and reused wherever it sits; requests that share their
 * first document share a prefix, which the prefix cache and the router's affinity already reuse.
 */
import type { ModelRuntime, Token } from "../runtime/runtime.ts";

/** The separator after each document's text. */
export const DOCUMENT_SEPARATOR = "\n\n";

/** The prompt tokens with the documents laid out before them. */
export function withDocuments(runtime: Pick<ModelRuntime, "tokenize">, documents: readonly string[], prompt: readonly Token[]): Token[] {
  const lead = runtime.tokenize(""); // what the tokenizer puts before any text: [BOS], or nothing
  const body = (tokens: readonly Token[]): readonly Token[] => (startsWith(tokens, lead) ? tokens.slice(lead.length) : tokens);
  return [...lead, ...documents.flatMap((d) => body(runtime.tokenize(`${d}${DOCUMENT_SEPARATOR}`))), ...body(prompt)];
}

function startsWith(tokens: readonly Token[], lead: readonly Token[]): boolean {
  return lead.every((t, i) => tokens[i] === t);
}
