/**
 * Internal P/D routes (pod to pod, not for clients):
 *   prefill: POST /internal/prefill {request, kind, handoffId, decodeUrl?}
 *            evaluates the prompt, streams its KV to decodeUrl, answers {handoffId, decodeUrl, ...}
 *            where decodeUrl is the pod that staged the state (below)
 *   decode:  PUT  /internal/kv/:id       LFKV stream (kv-wire.ts) -> staged; answers 204 with
 *            x-llmfleet-decode-url: this pod's own URL. A decode pool is a Service over several
 *            pods, so the generate call must go to the pod that staged the state, not the Service.
 *            POST /internal/generate/:id {request, kind, firstToken?, awaitState?} -> the OpenAI
 *            response (SSE or JSON); with awaitState the state may still be on its way
 *            POST /internal/handoff-failed/:id {message}: a prefill pod's send that failed after it
 *            answered (its first token went ahead of the state: firstTokenAhead below)
 *            GET  /internal/kv-transport -> KvTransportInfo: the pod's TCP hand-off port, if any
 * The state goes over the native TCP stream when the decode pod offers one and over the PUT
 * above otherwise (kv-transport.ts); the generate call finds it staged either way.
 */
import express, { type Request, type Response, type Router } from "express";
import type { EngineMetrics, Role } from "../metrics/engine-metrics.ts";
import type { CompletionService } from "../serving/completion-service.ts";
import { HttpError } from "../http/http-error.ts";
import { parseEngineRequest, type RequestKind } from "../http/openai-request.ts";
import { clientGone, respondWithGeneration } from "../http/respond.ts";
import { HandoffStore, HandoffStoreFullError } from "./handoff-store.ts";
import { partsTarget, prefillInParts } from "./handoff-parts.ts";
import type { GenerateOptions, HandOffState, ImportedLocal } from "../serving/completion-service.ts";
import { localRoutes, localTarget, LocalUnavailable, notLocal, prefillLocal } from "./local-handoff.ts";
import { firstTokenHere, prefillWhole } from "./prefill-whole.ts";
import type { LocalRegions } from "./local-regions.ts";
import { AWAIT_STATE_MS, awaitStaged, SendFailures, StagedWaitError } from "./staged-wait.ts";
import { decodeKvHandoff, KvWireError } from "./kv-wire.ts";
import { normaliseSeqState, seqStateTokens } from "../runtime/seq-state.ts";
import { identityOf } from "../access/identity.ts";
import {
  handoffParts,
  partId,
  TCP_STREAMS_MAX,
  type HandoffPath,
  type KvListener,
  type KvTaken,
  type KvTransportInfo,
  type KvTransportMode,
  type PartTokens,
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
  /** Prefill: tokens per part of a hand-off sent while computed (handoffParts); default 0, whole states. */
  partTokens?: PartTokens;
  /** Prefill: parallel TCP connections per hand-off (at most what the decode pod takes). Default defaultTcpStreams(). */
  tcpStreams?: number;
  /** Decode: the native TCP listener this pod receives hand-offs on (started by pod.ts). */
  tcp?: KvListener;
  /** Prefill: the fleet token sent with each hand-off (engine/access/fleet-auth.ts); default none. */
  fleetToken?: () => string | undefined;
  /** Decode: how long a generate call waits for a state still on its way (staged-wait.ts). Default AWAIT_STATE_MS. */
  awaitStateMs?: number;
  /** Decode: the regions this pod lends to prefill pods on its machine (local-handoff.ts); none: the network path only. */
  local?: LocalRegions;
}

export const DECODE_URL_HEADER = "x-llmfleet-decode-url";

/** The URL a connection reached this pod at: its local address and port (a Service's DNAT lands on the pod's own). */
export function localUrl(req: Request): string | undefined {
  const { localAddress, localPort } = req.socket;
  if (!localAddress || !localPort) return undefined;
  const host = localAddress.startsWith("::ffff:") ? localAddress.slice(7) : localAddress;
  return host.includes(":") ? `http://[${host}]:${localPort}` : `http://${host}:${localPort}`;
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
  /** Parts the state went in (1: the whole state after the prompt). */
  parts: number;
  /** The mechanism that moved the state. */
  path: HandoffPath;
  /** The answer's first token, sampled here (serving/first-token.ts): the state is then of the whole prompt. */
  firstToken?: number;
  /**
   * The state was still being sent when this answered (its first token ahead of it): the generate
   * call passes awaitState. sendMs and streams are then 0: the send's own figures are in /metrics.
   */
  early?: boolean;
}

function parseKind(kind: unknown): RequestKind {
  if (kind !== "chat" && kind !== "completion") throw new HttpError(400, "kind must be chat or completion", { param: "kind" });
  return kind;
}

/** Stages a received state; a full store is a 429 with Retry-After (the prefill pod retries). */
export function stageOr429(store: HandoffStore, w: { id: string; tokens: number[]; held: { state?: Buffer; local?: ImportedLocal }; cachedTokens: number }): void {
  try {
    store.put(w.id, w.tokens, w.held, w.cachedTokens);
  } catch (err) {
    if (err instanceof HandoffStoreFullError) throw new HttpError(429, err.message, { code: "handoff_store_full", headers: { "Retry-After": "1" } });
    throw err;
  }
}

function prefillHandler(deps: HandoffDeps) {
  return async (req: Request, res: Response): Promise<void> => {
    const { service } = deps;
    const body = (req.body ?? {}) as { request?: unknown; kind?: unknown; handoffId?: unknown; decodeUrl?: unknown };
    const handoffId = typeof body.handoffId === "string" ? body.handoffId : crypto.randomUUID();
    const decodeUrl = typeof body.decodeUrl === "string" ? body.decodeUrl : deps.decodeUrls[0];
    if (!decodeUrl) throw new HttpError(400, "no decode pod: pass decodeUrl or start the prefill pod with --decode", { param: "decodeUrl" });
    const prepared = service.prepare(parseEngineRequest(body.request, parseKind(body.kind), service.runtime));
    prepared.identity = identityOf(res);
    const signal = clientGone(req, res).signal;
    const local = await localTarget(deps, decodeUrl);
    if (local) {
      try {
        res.json(await prefillLocal(deps, local, { prepared, handoffId, decodeUrl, sampleFirst: await firstTokenHere(deps, prepared, decodeUrl), signal }));
        return;
      } catch (err) {
        if (!(err instanceof LocalUnavailable)) throw err;
        notLocal(decodeUrl, err.message); // then over the network, below
      }
    }
    const bounds = handoffParts(prepared.prompt.length - 1, deps.partTokens);
    const inParts = await partsTarget(deps, decodeUrl, prepared, bounds);
    if (inParts) {
      res.json(await prefillInParts(deps, inParts, { prepared, handoffId, bounds, signal }));
      return;
    }
    res.json(await prefillWhole(deps, { prepared, handoffId, decodeUrl, signal }));
  };
}

/** A 409 unless a hand-off's state is for this pod's model. */
function requireModel(deps: HandoffDeps, model: unknown): void {
  const { modelId } = deps.service.runtime.info;
  if (model !== modelId) throw new HttpError(409, `KV state is for model ${String(model)}; this pod serves ${modelId}`, { code: "model_mismatch" });
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
      // The sender's side ended it (its timeout, its pod gone): said here too, as no one reads the answer.
      const message = `KV hand-off ${String(req.params.id)}: the stream broke off after ${((performance.now() - t0) / 1000).toFixed(1)} s: ${(err as Error).message}`;
      console.error(`engine: ${message}`);
      throw new HttpError(400, message, { code: "bad_kv_stream", cause: err });
    }
    requireModel(deps, decoded.header.model);
    const state = normaliseSeqState(decoded.state, { streams: info.kvStreams, vTransposed: !info.flashAttention });
    stageOr429(store, { id: String(req.params.id), tokens: decoded.header.tokens, held: { state }, cachedTokens: cachedTokensOf(decoded.header) });
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

type Staged = { tokens: number[]; state?: Buffer; parts?: Buffer[]; local?: ImportedLocal; cachedTokens: number };

/** A staged hand-off's JSON header, checked against this pod's model. */
function stagedHeader(deps: HandoffDeps, text: string): { cachedTokens?: unknown; parts?: unknown } {
  let header: { model?: unknown; cachedTokens?: unknown; parts?: unknown };
  try {
    header = JSON.parse(text) as typeof header;
  } catch {
    throw new HttpError(400, "staged KV state has no valid header", { code: "bad_kv_stream" });
  }
  requireModel(deps, header.model);
  return header;
}

/** A staged state normalised to this pod's layout (no copy when they agree). */
function normalised(deps: HandoffDeps, state: Buffer): Buffer {
  const { info } = deps.service.runtime;
  try {
    return normaliseSeqState(state, { streams: info.kvStreams, vTransposed: !info.flashAttention });
  } catch (err) {
    throw new HttpError(400, `staged KV state: ${(err as Error).message}`, { code: "bad_kv_stream" });
  }
}

/** Parts 1..n-1 of hand-off `id` (part 0 taken), or a 404 naming the first one missing. */
function takeRest(deps: HandoffDeps, id: string, parts: unknown): KvTaken[] {
  const n = Number(parts);
  if (!Number.isInteger(n) || n < 1 || n > 1 << 16) throw new HttpError(400, "staged KV parts have no valid part count", { code: "bad_kv_stream" });
  const rest: KvTaken[] = [];
  for (let k = 1; k < n; k++) {
    const next = deps.tcp!.addon.kvTake(deps.tcp!.handle, partId(id, k));
    if (!next) throw new HttpError(404, `part ${k} of ${n} of staged KV state ${id} is missing (expired or never received)`, { code: "handoff_not_found" });
    rest.push(next);
  }
  return rest;
}

/** The native listener's staged hand-off: one state, or the parts `<id>~0..n-1` of one sent while computed. */
function takeTcp(deps: HandoffDeps, id: string): Staged | undefined {
  if (!deps.tcp) return undefined;
  const { addon, handle } = deps.tcp;
  const whole = addon.kvTake(handle, id);
  const first = whole ?? addon.kvTake(handle, partId(id, 0));
  if (!first) return undefined;
  const header = stagedHeader(deps, first.header);
  const taken = whole ? [whole] : [first, ...takeRest(deps, id, header.parts)];
  const states = taken.map((t) => normalised(deps, t.state));
  for (const t of states) deps.metrics.handoffBytes.observe(t.length);
  deps.metrics.handoffSeconds.observe(
    { stage: "receive" },
    taken.reduce((a, t) => a + t.seconds, 0),
  );
  const tokens = states.flatMap((st) => seqStateTokens(st));
  // The reused count is final only once the prompt is computed: the last part says it.
  const cachedTokens = cachedTokensOf(taken.length > 1 ? stagedHeader(deps, taken.at(-1)!.header) : header);
  return whole ? { tokens, state: states[0]!, cachedTokens } : { tokens, parts: states, cachedTokens };
}

/** A staged state as the generate call hands it to the service. */
function handOffOf(staged: Staged): HandOffState {
  const importedCachedTokens = staged.cachedTokens;
  if (staged.local) return { importedLocal: staged.local, importedCachedTokens };
  return staged.parts ? { importedParts: staged.parts, importedCachedTokens } : { importedState: staged.state!, importedCachedTokens };
}

/** A staged state no one will import: its memory back now. */
function discard(deps: HandoffDeps, s: Staged): void {
  s.local?.done();
  for (const b of s.parts ?? (s.state ? [s.state] : [])) deps.service.runtime.releaseState?.(b);
}

/**
 * The state of a generate call: staged already, or (awaitState: its first token went ahead of it)
 * a promise of it, which rejects when it never comes or is of other tokens (the service then
 * computes the prompt itself).
 */
function stateFor(deps: HandoffDeps, sources: { store: HandoffStore; failures: SendFailures }, call: { id: string; expected: readonly number[]; firstToken?: number; awaitState: boolean; signal: AbortSignal }): Partial<GenerateOptions> {
  const { id, expected, firstToken } = call;
  const take = (): Staged | undefined => sources.store.take(id) ?? takeTcp(deps, id);
  const staged = take();
  if (staged) {
    requireTokens(staged.tokens, expected, firstToken);
    return handOffOf(staged);
  }
  if (!call.awaitState) throw new HttpError(404, `no staged KV state ${id} (expired or never received)`, { code: "handoff_not_found" });
  const t0 = performance.now();
  const later = awaitStaged(id, take, sources.failures, { timeoutMs: deps.awaitStateMs ?? AWAIT_STATE_MS, signal: call.signal }).then((s) => {
    // How long the generate call (its first token already out) waited for the state to land.
    deps.metrics.handoffSeconds.observe({ stage: "await" }, (performance.now() - t0) / 1000);
    try {
      requireTokens(s.tokens, expected, firstToken);
    } catch (err) {
      discard(deps, s); // imported by nobody
      throw new StagedWaitError("mismatch", (err as Error).message);
    }
    return handOffOf(s);
  });
  later.catch(() => undefined); // the service awaits it once the first token is out; a request that fails before must not leave it unhandled
  return { stagedLater: later };
}

function generateHandler(deps: HandoffDeps, sources: { store: HandoffStore; failures: SendFailures }) {
  return async (req: Request, res: Response): Promise<void> => {
    const body = (req.body ?? {}) as { request?: unknown; kind?: unknown; firstToken?: unknown; awaitState?: unknown };
    const prepared = deps.service.prepare(parseEngineRequest(body.request, parseKind(body.kind), deps.service.runtime));
    prepared.identity = identityOf(res);
    const firstToken = parseFirstToken(body.firstToken, deps.service.runtime.features.vocabSize);
    const awaitState = body.awaitState === true;
    if (awaitState && firstToken === undefined) throw new HttpError(400, "awaitState needs the firstToken the state goes behind", { param: "awaitState" });
    const expected = firstToken === undefined ? prepared.prompt.slice(0, -1) : prepared.prompt;
    const { signal } = clientGone(req, res);
    const state = stateFor(deps, sources, { id: String(req.params.id), expected, awaitState, signal, ...(firstToken === undefined ? {} : { firstToken }) });
    await respondWithGeneration(deps.service, prepared, res, { signal, ...state, ...(firstToken === undefined ? {} : { firstToken }) });
  };
}

/** A 409 unless the staged state is of the tokens the generate call expects. */
function requireTokens(staged: readonly number[], expected: readonly number[], firstToken: number | undefined): void {
  if (staged.length === expected.length && staged.every((t, i) => t === expected[i])) return;
  const hint = firstToken === undefined && staged.length === expected.length + 1 ? " (it holds the whole prompt: pass the prefill answer's firstToken)" : "";
  throw new HttpError(409, `staged KV state does not match the request's prompt tokens${hint}`, { code: "handoff_mismatch" });
}

/** The generate call's firstToken: absent, or a token of this model's vocabulary (else a 400). */
function parseFirstToken(v: unknown, vocabSize: number | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || (vocabSize !== undefined && v >= vocabSize)) {
    throw new HttpError(400, `firstToken must be a token of the model's vocabulary, got ${JSON.stringify(v)}`, { param: "firstToken" });
  }
  return v;
}

/** Whether this pod's sequences import a hand-off in parts (the unified KV). */
const importsParts = (deps: HandoffDeps): boolean => deps.service.runtime.sequences.every((s) => s.importParts !== undefined);

export function handoffRoutes(deps: HandoffDeps): HandoffRoutes {
  const router = express.Router();
  const store = new HandoffStore(deps.service.pool.size + deps.service.pool.maxQueue);
  if (deps.role === "prefill") router.post("/internal/prefill", prefillHandler(deps));
  const local = deps.role === "decode" && deps.local ? localRoutes(router, deps, deps.local, store) : undefined;
  if (deps.role === "decode") {
    router.put("/internal/kv/:id", receiveHandler(deps, store));
    const failures = new SendFailures();
    router.post("/internal/generate/:id", generateHandler(deps, { store, failures }));
    router.post("/internal/handoff-failed/:id", (req, res) => {
      const message = (req.body as { message?: unknown } | undefined)?.message;
      failures.add(String(req.params.id), typeof message === "string" ? message.slice(0, 500) : "no reason given");
      res.status(204).end();
    });
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
      ...(deps.role === "decode" && deps.tcp ? { tcpPort: deps.tcp.port, tcpStreams: TCP_STREAMS_MAX, ...(importsParts(deps) ? { parts: true } : {}) } : {}),
      ...(deps.role === "decode" ? { firstToken: true, awaitsState: true } : {}),
      ...(local ? { local } : {}),
    };
    res.json(out);
  });
  return {
    router,
    async [Symbol.asyncDispose](): Promise<void> {
      if (deps.tcp) deps.tcp.addon.kvClose(deps.tcp.handle);
      await store[Symbol.asyncDispose]();
      deps.local?.close();
    },
  };
}
