/**
 * The identity a router forwards with each request to the engine pods, and what an engine pod
 * reads from it. Engine pods trust the tenant headers only together with the fleet token (a
 * shared secret from a Secret that only the fleet's own pods mount): a client that reaches an
 * engine directly cannot name a tenant, nor use the engine at all (fleet-auth.ts).
 */
import type { Response } from "express";

export const FLEET_TOKEN_HEADER = "x-llmfleet-fleet-token";
export const TENANT_HEADER = "x-llmfleet-tenant";
export const KV_NAMESPACE_HEADER = "x-llmfleet-kv-namespace";
/** Engines answer a generation with its prompt's token count, so the router meters tokens. */
export const PROMPT_TOKENS_HEADER = "x-llmfleet-prompt-tokens";

/** Who a request is for, as far as the KV caches and per-tenant metrics are concerned. */
export interface RequestIdentity {
  /** Tenant name ("" in open mode). */
  tenant: string;
  /** Scope of every KV cache the request may hit ("" in open mode: one shared namespace). */
  kvNamespace: string;
}

export const ANONYMOUS: RequestIdentity = { tenant: "", kvNamespace: "" };

/** Headers for a request to another pod of the fleet on behalf of `id`. */
export function identityHeaders(fleetToken: string | undefined, id: RequestIdentity = ANONYMOUS): Record<string, string> {
  const headers: Record<string, string> = {};
  if (fleetToken) headers[FLEET_TOKEN_HEADER] = fleetToken;
  if (id.tenant) headers[TENANT_HEADER] = id.tenant;
  if (id.kvNamespace) headers[KV_NAMESPACE_HEADER] = id.kvNamespace;
  return headers;
}

/** The identity an engine's guard put on the response (ANONYMOUS when none). */
export function identityOf(res: Response): RequestIdentity {
  return (res.locals.identity as RequestIdentity | undefined) ?? ANONYMOUS;
}

/** Headers the router sends upstream for this request (fleet token and tenant); {} when none were set. */
export function upstreamHeadersOf(res: Response): Record<string, string> {
  return (res.locals.upstreamHeaders as Record<string, string> | undefined) ?? {};
}

/** Counts a request's tokens against its tenant's budget as the router learns them. */
export interface TokenMeter {
  prompt(n: number): void;
  completion(n: number): void;
}

export function tokenMeterOf(res: Response): TokenMeter | undefined {
  return res.locals.tokenMeter as TokenMeter | undefined;
}

/** Prompt tokens an engine reported in its answer's header, 0 when absent. */
export function promptTokensOf(upstream: globalThis.Response): number {
  const n = Number(upstream.headers.get(PROMPT_TOKENS_HEADER));
  return Number.isInteger(n) && n > 0 ? n : 0;
}

/** Completion and prompt tokens of a whole (non-streamed) OpenAI answer's usage. */
export function usageOf(text: string): { prompt: number; completion: number } {
  try {
    const usage = (JSON.parse(text) as { usage?: { prompt_tokens?: unknown; completion_tokens?: unknown } }).usage;
    const n = (v: unknown): number => (typeof v === "number" && Number.isFinite(v) && v > 0 ? v : 0);
    return { prompt: n(usage?.prompt_tokens), completion: n(usage?.completion_tokens) };
  } catch {
    return { prompt: 0, completion: 0 };
  }
}
