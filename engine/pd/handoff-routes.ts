/**
 * Internal P/D routes (pod to pod, not for clients):
 *   prefill: POST /internal/prefill {request, kind, handoffId, decodeUrl?}
 *            evaluates the prompt, streams its KV to decodeUrl, answers {handoffId, decodeUrl, ...}
 *            where decodeUrl is the pod that staged the state (below)
 *   decode:  PUT  /internal/kv/:id       LFKV stream (kv-wire.ts) -> staged; answers 204 with
 *            x-llmfleet-decode-url: this pod's own URL. A decode pool is a Service over several
 *            pods, so the generate call must go to the pod that staged the state, not the Service.
 *            POST /internal/generate/:id {request, kind} -> the OpenAI response (SSE or JSON)
 *            GET  /internal/kv-transport -> KvTransportInfo: the pod's TCP hand-off port, if any
 * The state goes over the native TCP stream when the decode pod offers one and over the PUT
 * above otherwise (kv-transport.ts); the generate call finds it staged either way.
 */
import { Readable } from "node:stream";
import express, { type Request, type Response, type Router } from "express";
import type { EngineMetrics, Role } from "../metrics/engine-metrics.ts";
import type { CompletionService } from "../serving/completion-service.ts";
import { HttpError } from "../http/http-error.ts";
import { httpUrl } from "../http/http-url.ts";
import { parseEngineRequest, type RequestKind } from "../http/openai-request.ts";
import { clientGone, respondWithGeneration } from "../http/respond.ts";
import { HandoffStore, HandoffStoreFullError } from "./handoff-store.ts";
import { decodeKvHandoff, encodeKvHandoff, KvWireError } from "./kv-wire.ts";
import { normaliseSeqState, seqStateTokens } from "../runtime/seq-state.ts";
import { identityHeaders, identityOf } from "../access/identity.ts";
import {
  KV_SEND_STATUS,
  kvSendErrorCode,
  kvStreamAddon,
  TCP_CHUNK_BYTES,
  defaultTcpStreams,
  TCP_STREAMS_MAX,
  type HandoffPath,
  type KvListener,
  type KvSendResult,
  type KvStreamAddon,
  type KvTransportInfo,
  type KvTransportMode,
} from "./kv-transport.ts";

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
  /** Which mechanism moves the state (kv-transport.ts). Default auto. */
  transport?: KvTransportMode;
  /** Prefill: parallel TCP connections per hand-off (at most what the decode pod takes). Default defaultTcpStreams(). */
  tcpStreams?: number;
  /** Decode: the native TCP listener this pod receives hand-offs on (started by pod.ts). */
  tcp?: KvListener;
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
  /** Of prefillMs: copying the state out of the engine (the GPU) into host memory. */
  exportMs: number;
  sendMs: number;
  /** TCP connections the state went over (1 over HTTP). */
  streams: number;
  /** The mechanism that moved the state. */
  path: HandoffPath;
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

/** What the prefill pod knows of a decode base URL's transport, re-probed after PROBE_TTL_MS. */
interface Probe {
  info?: KvTransportInfo;
  at: number;
}
const PROBE_TTL_MS = 30_000;
const probes = new Map<string, Probe>();

async function probe(base: string, headers: Record<string, string>): Promise<KvTransportInfo | undefined> {
  const known = probes.get(base);
  if (known && performance.now() - known.at < PROBE_TTL_MS) return known.info;
  let info: KvTransportInfo | undefined;
  try {
    const res = await fetch(`${base}/internal/kv-transport`, { headers, signal: AbortSignal.timeout(2_000) });
    info = res.ok ? ((await res.json()) as KvTransportInfo) : undefined; // an older decode pod: 404, HTTP only
  } catch {
    info = undefined; // unreachable now: the HTTP PUT reports the real error
  }
  probes.set(base, { info, at: performance.now() });
  return info;
}

type HandoffHeader = { handoffId: string; model: string; tokens: number[]; vTransposed: boolean; cachedTokens: number };

/** The URL the decode pod named in its TCP answer: its advertised URL, or the IP the connection reached plus its HTTP port. */
function tcpStagedUrl(message: string, base: string, info: KvTransportInfo): string {
  if (/^https?:\/\//.test(message)) return httpUrl(message) ?? base;
  if (!message) return base;
  const port = info.httpPort ?? new URL(base).port;
  return message.includes(":") ? `http://[${message}]:${port}` : `http://${message}:${port}`;
}

class TcpUnavailable extends Error {}

interface TcpTarget {
  addon: KvStreamAddon;
  base: string;
  info: KvTransportInfo;
  host: string;
  port: number;
}

/** The staged URL from the decode pod's answer; a refusal is a 429 (full) or a 502. */
function tcpAnswer(t: TcpTarget, r: KvSendResult): string {
  if (r.status === KV_SEND_STATUS.ok) return tcpStagedUrl(r.message, t.base, t.info);
  const where = `${t.host}:${t.port}`;
  if (r.status === KV_SEND_STATUS.full) {
    throw new HttpError(429, `KV hand-off to ${where} refused: ${r.message}`, { code: "handoff_store_full", headers: { "Retry-After": "1" } });
  }
  throw new HttpError(502, `KV hand-off to ${where} refused (status ${r.status}): ${r.message}`, { code: "handoff_failed" });
}

/**
 * Streams the state to the decode pod's TCP port. Nobody listening there is TcpUnavailable (the
 * caller falls back to HTTP); a decode pod that dies or stalls mid-stream (its partial state is
 * freed on its side) is tried once more on a new connection, which behind a Service may reach
 * another pod, then a 502 that says why.
 */
/** Connections for one hand-off: this pod's setting, but several only to a listener that says it takes them (an older decode pod speaks v1). */
function streamsFor(deps: HandoffDeps, t: TcpTarget): number {
  return Math.max(1, Math.min(deps.tcpStreams ?? defaultTcpStreams(), t.info.tcpStreams ?? 1, TCP_STREAMS_MAX));
}

/** A decode pod that died or stalled mid-stream: another connection (another pod behind a Service) may do. */
const retryable = (code: string | undefined): boolean => code === "closed" || code === "timeout";

async function sendTcp(deps: HandoffDeps, t: TcpTarget, header: HandoffHeader, state: Buffer): Promise<{ stagedUrl: string; streams: number }> {
  // The tokens travel in the state's own header (seqStateTokens); the JSON names the rest.
  const json = JSON.stringify({ handoffId: header.handoffId, model: header.model, tokens: header.tokens.length, vTransposed: header.vTransposed, cachedTokens: header.cachedTokens });
  const streams = streamsFor(deps, t);
  const timeoutMs = deps.sendTimeoutMs ?? 30_000;
  for (let attempt = 1; ; attempt++) {
    try {
      const sent = await t.addon.kvSend(state, t.host, t.port, header.handoffId, json, TCP_CHUNK_BYTES, timeoutMs, streams);
      return { stagedUrl: tcpAnswer(t, sent), streams: sent.streams ?? 1 };
    } catch (err) {
      if (err instanceof HttpError) throw err;
      const code = kvSendErrorCode(err);
      deps.metrics.handoffFailures.inc({ reason: `tcp_${code ?? "error"}` });
      if (code === "connect") throw new TcpUnavailable((err as Error).message, { cause: err });
      if (attempt >= 2 || !retryable(code)) throw new HttpError(502, (err as Error).message, { code: "handoff_failed", cause: err });
    }
  }
}

/** Where TCP can go for this decode base URL, or why not (mode tcp makes that an error). */
async function tcpTarget(base: string, headers: Record<string, string>): Promise<TcpTarget | string> {
  const [addon, info] = await Promise.all([kvStreamAddon(), probe(base, headers)]);
  if (!addon) return "the native addon (kv-stream) is not available on this pod";
  if (!info?.tcpPort) return `decode pod ${base} offers no TCP hand-off port`;
  return { addon, base, info, host: new URL(base).hostname.replace(/^\[|\]$/g, ""), port: info.tcpPort };
}

/** The TCP hand-off, or undefined when the caller should fall back to HTTP (auto mode). */
async function tryTcp(deps: HandoffDeps, base: string, header: HandoffHeader, state: Buffer): Promise<{ stagedUrl: string; streams: number } | undefined> {
  const strict = deps.transport === "tcp";
  const target = await tcpTarget(base, identityHeaders(deps.fleetToken?.()));
  if (typeof target === "string") {
    if (strict) throw new HttpError(502, `--kv-transport tcp: ${target}`, { code: "handoff_failed" });
    return undefined;
  }
  try {
    return await sendTcp(deps, target, header, state);
  } catch (err) {
    if (!(err instanceof TcpUnavailable)) throw err;
    if (strict) throw new HttpError(502, err.message, { code: "handoff_failed", cause: err });
    // The port is not reachable from here (a Service without it, a firewall): HTTP until the next probe.
    probes.set(base, { info: { ...target.info, tcpPort: undefined }, at: performance.now() });
    return undefined;
  }
}

/** Moves the state to the decode pod by the best mechanism both can use; says which one did. */
async function handOff(deps: HandoffDeps, base: string, header: HandoffHeader, state: Buffer): Promise<{ stagedUrl: string; path: HandoffPath; streams: number }> {
  let path: HandoffPath = deps.transport === "http" ? "http" : "tcp";
  try {
    const sent = path === "tcp" ? await tryTcp(deps, base, header, state) : undefined;
    if (sent) {
      deps.metrics.handoffs.inc({ path, outcome: "ok" });
      return { ...sent, path };
    }
    path = "http";
    // The fleet token only: staging needs no tenant (the generate call carries it, from the router).
    const opts = { timeoutMs: deps.sendTimeoutMs ?? 30_000, headers: identityHeaders(deps.fleetToken?.()) };
    const stagedUrl = await sendState(base, header.handoffId, encodeKvHandoff(header, state), opts);
    deps.metrics.handoffs.inc({ path, outcome: "ok" });
    return { stagedUrl, path, streams: 1 };
  } catch (err) {
    deps.metrics.handoffs.inc({ path, outcome: "error" });
    throw err;
  }
}

function prefillHandler(deps: HandoffDeps) {
  return async (req: Request, res: Response): Promise<void> => {
    const { service, metrics } = deps;
    const body = (req.body ?? {}) as { request?: unknown; kind?: unknown; handoffId?: unknown; decodeUrl?: unknown };
    const handoffId = typeof body.handoffId === "string" ? body.handoffId : crypto.randomUUID();
    const decodeUrl = typeof body.decodeUrl === "string" ? body.decodeUrl : deps.decodeUrls[0];
    if (!decodeUrl) throw new HttpError(400, "no decode pod: pass decodeUrl or start the prefill pod with --decode", { param: "decodeUrl" });
    const prepared = service.prepare(parseEngineRequest(body.request, parseKind(body.kind), service.runtime));
    prepared.identity = identityOf(res);
    const t0 = performance.now();
    const { state, prefixHitTokens, exportMs } = await service.prefillState(prepared, clientGone(req, res).signal);
    const t1 = performance.now();
    const header = { handoffId, model: service.runtime.info.modelId, tokens: prepared.prompt.slice(0, -1), vTransposed: !service.runtime.info.flashAttention, cachedTokens: prefixHitTokens };
    const { stagedUrl, path, streams } = await handOff(deps, decodeUrl, header, state);
    const sendMs = performance.now() - t1;
    metrics.handoffBytes.observe(state.length);
    metrics.handoffSeconds.observe({ stage: "export" }, exportMs / 1000);
    metrics.handoffSeconds.observe({ stage: "send" }, sendMs / 1000);
    const out: PrefillResponse = {
      handoffId,
      decodeUrl: stagedUrl,
      promptTokens: prepared.prompt.length,
      prefixHitTokens,
      stateBytes: state.length,
      prefillMs: t1 - t0,
      exportMs,
      sendMs,
      streams,
      path,
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
      store.put(String(req.params.id), decoded.header.tokens, state, cachedTokensOf(decoded.header));
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

/** The prefill pod's reused prompt tokens from a hand-off header (0 when absent or not a count). */
function cachedTokensOf(header: { cachedTokens?: unknown }): number {
  const n = header.cachedTokens;
  return typeof n === "number" && Number.isInteger(n) && n >= 0 ? n : 0;
}

/** A state the native listener staged, normalised to this pod's layout (no copy when they agree). */
function takeTcp(deps: HandoffDeps, id: string): { tokens: number[]; state: Buffer; cachedTokens: number } | undefined {
  if (!deps.tcp) return undefined;
  const taken = deps.tcp.addon.kvTake(deps.tcp.handle, id);
  if (!taken) return undefined;
  const { info } = deps.service.runtime;
  let header: { model?: unknown; cachedTokens?: unknown };
  try {
    header = JSON.parse(taken.header) as { model?: unknown; cachedTokens?: unknown };
  } catch {
    throw new HttpError(400, "staged KV state has no valid header", { code: "bad_kv_stream" });
  }
  if (header.model !== info.modelId) {
    throw new HttpError(409, `KV state is for model ${String(header.model)}; this pod serves ${info.modelId}`, { code: "model_mismatch" });
  }
  let state: Buffer;
  try {
    state = normaliseSeqState(taken.state, { streams: info.kvStreams, vTransposed: !info.flashAttention });
  } catch (err) {
    throw new HttpError(400, `staged KV state: ${(err as Error).message}`, { code: "bad_kv_stream" });
  }
  deps.metrics.handoffBytes.observe(state.length);
  deps.metrics.handoffSeconds.observe({ stage: "receive" }, taken.seconds);
  return { tokens: seqStateTokens(state), state, cachedTokens: cachedTokensOf(header) };
}

function generateHandler(deps: HandoffDeps, store: HandoffStore) {
  return async (req: Request, res: Response): Promise<void> => {
    const body = (req.body ?? {}) as { request?: unknown; kind?: unknown };
    const prepared = deps.service.prepare(parseEngineRequest(body.request, parseKind(body.kind), deps.service.runtime));
    prepared.identity = identityOf(res);
    const staged = store.take(String(req.params.id)) ?? takeTcp(deps, String(req.params.id));
    if (!staged) throw new HttpError(404, `no staged KV state ${req.params.id} (expired or never received)`, { code: "handoff_not_found" });
    const expected = prepared.prompt.slice(0, -1);
    if (staged.tokens.length !== expected.length || staged.tokens.some((t, i) => t !== expected[i])) {
      throw new HttpError(409, "staged KV state does not match the request's prompt tokens", { code: "handoff_mismatch" });
    }
    await respondWithGeneration(deps.service, prepared, res, { signal: clientGone(req, res).signal, importedState: staged.state, importedCachedTokens: staged.cachedTokens });
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
    res.json({ staged: store.size, stagedBytes: store.bytes, tcp: deps.tcp ? deps.tcp.addon.kvStats(deps.tcp.handle) : { listening: false } });
  });
  router.get("/internal/kv-transport", (req, res) => {
    const { info } = deps.service.runtime;
    const out: KvTransportInfo = {
      model: info.modelId,
      layout: { streams: info.kvStreams, vTransposed: !info.flashAttention },
      httpPort: req.socket.localPort,
      ...(deps.role === "decode" && deps.tcp ? { tcpPort: deps.tcp.port, tcpStreams: TCP_STREAMS_MAX } : {}),
    };
    res.json(out);
  });
  return {
    router,
    async [Symbol.asyncDispose](): Promise<void> {
      if (deps.tcp) deps.tcp.addon.kvClose(deps.tcp.handle);
      await store[Symbol.asyncDispose]();
    },
  };
}
