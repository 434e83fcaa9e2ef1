/**
 * Internal P/D routes (pod to pod, not for clients):
 *   prefill: POST /internal/prefill {request, kind, handoffId, decodeUrl?}
 *            evaluates the prompt, streams its KV to decodeUrl, answers {handoffId, decodeUrl, ...}
 *            where decodeUrl is the pod that staged the state (below)
 *   decode:  PUT  /internal/kv/:id       LFKV stream (kv-wire.ts) -> staged; answers 204 with
 *            x-llmfleet-decode-url: this pod's own URL. A decode pool is a Service over several
 *            pods, so the generate call must go to the pod that staged the state, not the Service.
 *            POST /internal/generate/:id {request, kind} -> the OpenAI response (SSE or JSON)
 */
import { Readable } from "node:stream";
import express, { type Request, type Response, type Router } from "express";
import type { EngineMetrics, Role } from "../metrics/engine-metrics.ts";
import type { CompletionService } from "../serving/completion-service.ts";
import { HttpError } from "../http/http-error.ts";
import { httpUrl } from "../http/http-url.ts";
import { parseOpenAIRequest, type RequestKind } from "../http/openai-request.ts";
import { clientGone, respondWithGeneration } from "../http/respond.ts";
import { HandoffStore, HandoffStoreFullError } from "./handoff-store.ts";
import { decodeKvHandoff, encodeKvHandoff, KvWireError } from "./kv-wire.ts";
import { normaliseSeqState } from "../runtime/seq-state.ts";
import { identityHeaders, identityOf } from "../access/identity.ts";

export interface HandoffDeps {
  role: Exclude<Role, "router">;
  service: CompletionService;
  metrics: EngineMetrics;
  /** Prefill: decode pods to use when the router names none. */
  decodeUrls: string[];
  /** Time allowed for one KV transfer. Default 30 s. */
  sendTimeoutMs?: number;
  /** Decode: this pod's URL for hand-offs (default: the address the hand-off arrived on). */
  advertiseUrl?: string;
  /** Prefill: the fleet token sent with each hand-off (engine/access/fleet-auth.ts); default none. */
  fleetToken?: () => string | undefined;
}

export const DECODE_URL_HEADER = "x-llmfleet-decode-url";

/** The URL a connection reached this pod at: its local address and port (a Service's DNAT lands on the pod's own). */
function localUrl(req: Request): string | undefined {
  const { localAddress, localPort } = req.socket;
  if (!localAddress || !localPort) return undefined;
  const host = localAddress.startsWith("::ffff:") ? localAddress.slice(7) : localAddress;
  return host.includes(":") ? `http://[${host}]:${localPort}` : `http://${host}:${localPort}`;
}

/** The staging pod's URL from its answer, when it is a usable http(s) URL; else the URL the state was sent to. */
function stagedAt(res: globalThis.Response, sentTo: string): string {
  const named = res.headers.get(DECODE_URL_HEADER);
  return (named ? httpUrl(named) : undefined) ?? sentTo;
}

export interface HandoffRoutes extends AsyncDisposable {
  router: Router;
}

export interface PrefillResponse {
  handoffId: string;
  decodeUrl: string;
  promptTokens: number;
  prefixHitTokens: number;
  stateBytes: number;
  prefillMs: number;
  sendMs: number;
}

function parseKind(kind: unknown): RequestKind {
  if (kind !== "chat" && kind !== "completion") throw new HttpError(400, "kind must be chat or completion", { param: "kind" });
  return kind;
}

/** PUTs the state to the decode base URL; returns the URL of the pod that staged it. */
async function sendState(base: string, id: string, frames: Iterable<Buffer>, opts: { timeoutMs: number; headers: Record<string, string> }): Promise<string> {
  const url = `${base}/internal/kv/${encodeURIComponent(id)}`;
  let res: globalThis.Response;
  try {
    res = await fetch(url, {
      method: "PUT",
      // One connection per hand-off: kube-proxy balances a Service's connections, not its
      // requests, so over a kept-alive connection every hand-off of this pod would reach the same
      // decode pod. A connect is nothing next to megabytes of KV state.
      headers: { ...opts.headers, "content-type": "application/octet-stream", connection: "close" },
      body: Readable.toWeb(Readable.from(frames)) as ReadableStream,
      duplex: "half",
      signal: AbortSignal.timeout(opts.timeoutMs),
    } as RequestInit);
  } catch (err) {
    throw new HttpError(502, `KV hand-off to ${url} failed: ${(err as Error).message}`, { code: "handoff_failed", cause: err });
  }
  if (!res.ok) {
    const text = await res.text().catch(() => "");
    const status = res.status === 429 ? 429 : 502;
    throw new HttpError(status, `KV hand-off to ${url} refused (${res.status}): ${text.slice(0, 300)}`, { code: "handoff_failed" });
  }
  return stagedAt(res, base);
}

function prefillHandler(deps: HandoffDeps) {
  return async (req: Request, res: Response): Promise<void> => {
    const { service, metrics } = deps;
    const body = (req.body ?? {}) as { request?: unknown; kind?: unknown; handoffId?: unknown; decodeUrl?: unknown };
    const handoffId = typeof body.handoffId === "string" ? body.handoffId : crypto.randomUUID();
    const decodeUrl = typeof body.decodeUrl === "string" ? body.decodeUrl : deps.decodeUrls[0];
    if (!decodeUrl) throw new HttpError(400, "no decode pod: pass decodeUrl or start the prefill pod with --decode", { param: "decodeUrl" });
    const prepared = service.prepare(parseOpenAIRequest(body.request, parseKind(body.kind), service.runtime.info.modelId));
    prepared.identity = identityOf(res);
    const t0 = performance.now();
    const { state, prefixHitTokens } = await service.prefillState(prepared, clientGone(req, res).signal);
    const t1 = performance.now();
    const header = { handoffId, model: service.runtime.info.modelId, tokens: prepared.prompt.slice(0, -1), vTransposed: !service.runtime.info.flashAttention };
    const sendOpts = { timeoutMs: deps.sendTimeoutMs ?? 30_000, headers: identityHeaders(deps.fleetToken?.(), prepared.identity) };
    const stagedUrl = await sendState(decodeUrl, handoffId, encodeKvHandoff(header, state), sendOpts);
    const sendMs = performance.now() - t1;
    metrics.handoffBytes.observe(state.length);
    metrics.handoffSeconds.observe({ stage: "send" }, sendMs / 1000);
    const out: PrefillResponse = {
      handoffId,
      decodeUrl: stagedUrl,
      promptTokens: prepared.prompt.length,
      prefixHitTokens,
      stateBytes: state.length,
      prefillMs: t1 - t0,
      sendMs,
    };
    res.json(out);
  };
}

function receiveHandler(deps: HandoffDeps, store: HandoffStore) {
  return async (req: Request, res: Response): Promise<void> => {
    const t0 = performance.now();
    const { info } = deps.service.runtime;
    let decoded;
    try {
      decoded = await decodeKvHandoff(req);
    } catch (err) {
      if (err instanceof KvWireError) throw new HttpError(400, err.message, { code: "bad_kv_stream" });
      throw err;
    }
    if (decoded.header.model !== info.modelId) {
      throw new HttpError(409, `KV state is for model ${decoded.header.model}; this pod serves ${info.modelId}`, { code: "model_mismatch" });
    }
    const state = normaliseSeqState(decoded.state, { streams: info.kvStreams, vTransposed: !info.flashAttention });
    try {
      store.put(String(req.params.id), decoded.header.tokens, state);
    } catch (err) {
      if (err instanceof HandoffStoreFullError) throw new HttpError(429, err.message, { code: "handoff_store_full", headers: { "Retry-After": "1" } });
      throw err;
    }
    deps.metrics.handoffBytes.observe(state.length);
    deps.metrics.handoffSeconds.observe({ stage: "receive" }, (performance.now() - t0) / 1000);
    const self = deps.advertiseUrl ?? localUrl(req);
    if (self) res.setHeader(DECODE_URL_HEADER, self);
    res.status(204).end();
  };
}

function generateHandler(deps: HandoffDeps, store: HandoffStore) {
  return async (req: Request, res: Response): Promise<void> => {
    const body = (req.body ?? {}) as { request?: unknown; kind?: unknown };
    const prepared = deps.service.prepare(parseOpenAIRequest(body.request, parseKind(body.kind), deps.service.runtime.info.modelId));
    prepared.identity = identityOf(res);
    const staged = store.take(String(req.params.id));
    if (!staged) throw new HttpError(404, `no staged KV state ${req.params.id} (expired or never received)`, { code: "handoff_not_found" });
    const expected = prepared.prompt.slice(0, -1);
    if (staged.tokens.length !== expected.length || staged.tokens.some((t, i) => t !== expected[i])) {
      throw new HttpError(409, "staged KV state does not match the request's prompt tokens", { code: "handoff_mismatch" });
    }
    await respondWithGeneration(deps.service, prepared, res, { signal: clientGone(req, res).signal, importedState: staged.state });
  };
}

export function handoffRoutes(deps: HandoffDeps): HandoffRoutes {
  const router = express.Router();
  const store = new HandoffStore(deps.service.pool.size + deps.service.pool.maxQueue);
  if (deps.role === "prefill") router.post("/internal/prefill", prefillHandler(deps));
  if (deps.role === "decode") {
    router.put("/internal/kv/:id", receiveHandler(deps, store));
    router.post("/internal/generate/:id", generateHandler(deps, store));
  }
  router.get("/internal/kv-debug", (_req, res) => {
    res.json({ staged: store.size, stagedBytes: store.bytes });
  });
  return {
    router,
    [Symbol.asyncDispose]: () => store[Symbol.asyncDispose](),
  };
}
