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

/** A prompt with its documents laid out: the tokens, each document's [start, end) in them, and the lead ([BOS]) length. */
export interface DocumentLayout {
  tokens: Token[];
  spans: Array<[number, number]>;
  lead: number;
}

/** The prompt tokens with the documents laid out before them. */
export function withDocuments(runtime: Pick<ModelRuntime, "tokenize">, documents: readonly string[], prompt: readonly Token[]): DocumentLayout {
  const lead = runtime.tokenize(""); // what the tokenizer puts before any text: [BOS], or nothing
  const tokens: Token[] = [...lead];
  const spans: Array<[number, number]> = [];
  for (const d of documents) {
    const start = tokens.length;
    tokens.push(...documentBody(runtime, d, lead));
    spans.push([start, tokens.length]);
  }
  tokens.push(...withoutLead(prompt, lead));
  return { tokens, spans, lead: lead.length };
}

/**
 * A document's own tokens: the lead and the document as withDocuments lays it out — what its own
 * KV is computed from and ChunkCache keys it by, wherever it later sits.
 */
export function ownTokens(runtime: Pick<ModelRuntime, "tokenize">, document: string): Token[] {
  const lead = runtime.tokenize("");
  return [...lead, ...documentBody(runtime, document, lead)];
}

function documentBody(runtime: Pick<ModelRuntime, "tokenize">, document: string, lead: readonly Token[]): readonly Token[] {
  return withoutLead(runtime.tokenize(`${document}${DOCUMENT_SEPARATOR}`), lead);
}

function withoutLead(tokens: readonly Token[], lead: readonly Token[]): readonly Token[] {
  return startsWith(tokens, lead) ? tokens.slice(lead.length) : tokens;
}

/**
 * The share of document tokens recomputed in place by default (--rag-recompute, the Model's
 * spec.runtime.ragRecompute): the smallest share on bench:rag's curve that kept greedy agreement
 * with a full prefill at 0.95 (Gemma 3 270M, 6 documents in a new order, 18 prompts: 0.957, the
 * perturbation floor 0.973, TTFT 2.0x sooner; 0.3 was 3x sooner at 0.940). BENCHMARKS.md "RAG documents".
 */
export const RAG_RECOMPUTE_DEFAULT = 0.5;

/** A document joined from its own KV: its span in the prompt, and how much of it to keep (to `keep`). */
export interface JoinSpan {
  start: number;
  end: number;
  keep: number;
}

/**
 * Which documents a prompt joins from their own KV and where recomputing starts: the last
 * `recompute` share of the document tokens, and everything after the documents, are computed in
 * place (RAG_RECOMPUTE_DEFAULT says why its default). Documents before that point are joined, the
 * one it cuts up to it.
 */
export function joinPlan(layout: Pick<DocumentLayout, "spans">, recompute: number): JoinSpan[] {
  const docTokens = layout.spans.reduce((n, [s, e]) => n + e - s, 0);
  const end = layout.spans.at(-1)?.[1] ?? 0;
  const tailStart = end - Math.ceil(recompute * docTokens);
  return layout.spans.filter(([s]) => s < tailStart).map(([start, e]) => ({ start, end: e, keep: Math.min(e, tailStart) }));
}

function startsWith(tokens: readonly Token[], lead: readonly Token[]): boolean {
  return lead.every((t, i) => tokens[i] === t);
}
