/**
 * createRouterApp: the fleet's OpenAI endpoint. Disaggregated (prefill and decode pods): for each
 * request it asks a prefill pod (chosen by the routing policy) to evaluate the prompt and hand
 * the KV state to a chosen decode pod, then streams the decode pod's tokens to the client. A
 * failed hand-off or a decode pod that fails before answering is retried on the next decode pod.
 * Aggregated (only --aggregated pods): the request is relayed to one pod, retried on the next.
 * Every failure ends in a clear error.
 */
import { randomUUID } from "node:crypto";
import { Gauge } from "prom-client";
import express, { type Express, type Request, type RequestHandler, type Response } from "express";
import type { EngineMetrics } from "../metrics/engine-metrics.ts";
import { countRequests, observabilityRoutes } from "../http/engine-app.ts";
import { errorHandler, HttpError, notFound, wrongMethod, type OpenAIErrorBody } from "../http/http-error.ts";
import { jsonBody } from "../http/json-body.ts";
import { modelNotFound, validateOpenAIRequest, type RequestKind } from "../http/openai-request.ts";
import { clientGone } from "../http/respond.ts";
import type { PrefillResponse } from "../pd/handoff-routes.ts";
import { admission } from "./admission.ts";
import { relayStream, relayWhole } from "./relay.ts";
import { affinityKey, RouterUpstreams, type RoutingPolicy } from "./upstreams.ts";
import { identityOf, upstreamHeadersOf } from "../access/identity.ts";

export interface RouterDeps {
  prefill: string[];
  decode: string[];
  /** Aggregated pods, used when there are no prefill and decode pods. Default none. */
  aggregated?: string[];
  /** How a prefill (or aggregated) pod is chosen. Default least-loaded. */
  policy?: RoutingPolicy;
  metrics: EngineMetrics;
  /** Decode pods tried per request (default 3). */
  maxAttempts?: number;
  /** Time allowed for prefill + hand-off (default 120 s). */
  prefillTimeoutMs?: number;
  /**
   * Pods that change while the router serves (--upstreams-file), used instead of the lists above,
   * which still decide the mode (disaggregated or aggregated); GET /internal/upstreams then shows
   * requests in flight per pod, for draining. Default: the fixed lists.
   */
  upstreams?: RouterUpstreams;
  /**
   * The front door (engine/access/router-guard.ts): API keys, tenant limits, the identity and
   * fleet token sent upstream. Default none: open, and engines get no fleet token.
   */
  guard?: RequestHandler;
  /** Completions in flight at once; past it, 429 with Retry-After (engine/router/admission.ts). Default 1024. */
  maxStreams?: number;
}

interface Attempt {
  kind: RequestKind;
  body: unknown;
  decodeUrl: string;
  signal: AbortSignal;
  /** Fleet token and tenant identity for the engine pods. */
  headers: Record<string, string>;
  /** Prefix-aware routing's key: the tenant's KV namespace with the prompt's leading text. */
  affinity: string;
}

/** An upstream answer to hand to the client as it is (a 4xx such as 400/404/429). */
class Relayed extends Error {
  constructor(
    readonly status: number,
    readonly body: OpenAIErrorBody,
    readonly retryAfter: string | null,
  ) {
    super(body.error?.message ?? `upstream status ${status}`);
  }
}

async function postJson(url: string, body: unknown, signal: AbortSignal, headers: Record<string, string> = {}): Promise<globalThis.Response> {
  return fetch(url, { method: "POST", headers: { ...headers, "content-type": "application/json" }, body: JSON.stringify(body), signal });
}

/** Where the prefill pod sent the state, the first token it sampled, and whether the state was still on its way when it answered (the generate call then waits for it). */
interface Staged {
  url: string;
  firstToken?: number;
  early?: boolean;
}

/**
 * The generate call, on the decode pod that staged the state. When that pod's own address does not
 * answer at all (it named an address this router cannot reach: NAT, port mapping — set its
 * --advertise-url), the call goes through the URL the hand-off went to instead.
 */
async function generateOn(staged: Staged, a: Attempt, handoffId: string): Promise<globalThis.Response> {
  const path = `/internal/generate/${handoffId}`;
  const first = staged.firstToken === undefined ? {} : { firstToken: staged.firstToken, ...(staged.early ? { awaitState: true } : {}) };
  const body = { request: a.body, kind: a.kind, ...first };
  try {
    return await postJson(`${staged.url}${path}`, body, a.signal, a.headers);
  } catch (err) {
    if (staged.url === a.decodeUrl || a.signal.aborted) throw err;
    return postJson(`${a.decodeUrl}${path}`, body, a.signal, a.headers);
  }
}

async function failure(res: globalThis.Response): Promise<Relayed> {
  const text = await res.text();
  let body: OpenAIErrorBody;
  try {
    body = JSON.parse(text) as OpenAIErrorBody;
  } catch {
    body = new HttpError(res.status, text.slice(0, 300) || `status ${res.status}`).body();
  }
  return new Relayed(res.status, body, res.headers.get("retry-after"));
}

const retryable = (status: number): boolean => status >= 500;

/** A non-retryable upstream answer (400, 404, 429...) goes to the client as it is. */
function relayedToClient(err: unknown, res: Response): boolean {
  if (!(err instanceof Relayed) || retryable(err.status)) return false;
  if (err.retryAfter) res.set("Retry-After", err.retryAfter);
  res.status(err.status).json(err.body);
  return true;
}

export function createRouterApp(deps: RouterDeps): Express {
  const { metrics } = deps;
  const sets = deps.upstreams ?? new RouterUpstreams({ prefill: deps.prefill, decode: deps.decode, aggregated: deps.aggregated ?? [] }, deps.policy);
  const { prefill, decode, aggregated } = sets;
  const disaggregated = deps.prefill.length > 0 && deps.decode.length > 0;
  const prefillTimeout = deps.prefillTimeoutMs ?? 120_000;

  /** Prefills on a prefill pod, which hands the KV to a decode pod; returns that decode pod's own URL and the first token when the prefill pod sampled it. */
  async function prefillOn(a: Attempt, handoffId: string): Promise<Staged> {
    const url = prefill.ranked(a.affinity)[0];
    if (!url) throw new HttpError(503, "no prefill pod is serving", { code: "prefill_unavailable" });
    const t0 = performance.now();
    const res = await prefill.track(url, () =>
      postJson(
        `${url}/internal/prefill`,
        { request: a.body, kind: a.kind, handoffId, decodeUrl: a.decodeUrl },
        AbortSignal.any([a.signal, AbortSignal.timeout(prefillTimeout)]),
        a.headers,
      ),
    );
    if (!res.ok) throw await failure(res);
    const done = (await res.json()) as Partial<PrefillResponse>;
    metrics.handoffSeconds.observe({ stage: "prefill_and_handoff" }, (performance.now() - t0) / 1000);
    const staged = typeof done.decodeUrl === "string" && done.decodeUrl.length > 0 ? done.decodeUrl : a.decodeUrl;
    if (typeof done.firstToken !== "number") return { url: staged };
    return { url: staged, firstToken: done.firstToken, ...(done.early === true ? { early: true } : {}) };
  }

  async function attempt(a: Attempt, res: Response, arrivedAt: number): Promise<void> {
    const handoffId = randomUUID();
    // The decode pod is busy with the request from the hand-off on, so it is tracked from there.
    await decode.track(a.decodeUrl, async () => {
      // The pod that staged the state, which behind a Service is not necessarily the next one a.decodeUrl reaches.
      const staged = await prefillOn(a, handoffId);
      const upstream = await generateOn(staged, a, handoffId);
      if (!upstream.ok) throw await failure(upstream);
      const stream = (upstream.headers.get("content-type") ?? "").startsWith("text/event-stream");
      await (stream ? relayStream(upstream, res, metrics, arrivedAt) : relayWhole(upstream, res));
    });
  }

  /** Relays a request to an aggregated pod as it is, trying the next pod on a 5xx or no answer. */
  async function viaAggregated(kind: RequestKind, req: Request, res: Response): Promise<void> {
    const arrivedAt = performance.now();
    const signal = clientGone(req, res).signal;
    const path = kind === "chat" ? "/v1/chat/completions" : "/v1/completions";
    const errors: string[] = [];
    const candidates = aggregated.ranked(affinityKey(req.body, identityOf(res).kvNamespace)).slice(0, deps.maxAttempts ?? 3);
    observeDecision(res);
    for (const url of candidates) {
      try {
        await aggregated.track(url, async () => {
          const upstream = await postJson(`${url}${path}`, req.body, signal, upstreamHeadersOf(res));
          if (!upstream.ok) throw await failure(upstream);
          const stream = (upstream.headers.get("content-type") ?? "").startsWith("text/event-stream");
          await (stream ? relayStream(upstream, res, metrics, arrivedAt) : relayWhole(upstream, res));
        });
        metrics.e2eLatency.observe((performance.now() - arrivedAt) / 1000);
        return;
      } catch (err) {
        if (signal.aborted || relayedToClient(err, res)) return;
        errors.push(`${url}: ${(err as Error).message}`);
      }
    }
    throw new HttpError(502, `no aggregated pod completed the request: ${errors.join("; ")}`, { code: "upstream_unavailable" });
  }

  /** Body parsed to the first upstream chosen (validation, prefix hashing, ranking). */
  function observeDecision(res: Response): void {
    const arrived = res.locals.arrivedAt as number | undefined;
    if (arrived !== undefined) metrics.routerDecision.observe((performance.now() - arrived) / 1000);
  }

  /** Every request is validated here once, so a bad one never costs a pod a prefill (or a 5xx). */
  function handler(kind: RequestKind) {
    const serve = disaggregated ? viaDisaggregated(kind) : (req: Request, res: Response): Promise<void> => viaAggregated(kind, req, res);
    return async (req: Request, res: Response): Promise<void> => {
      validateOpenAIRequest(req.body, kind);
      await serve(req, res);
    };
  }

  function viaDisaggregated(kind: RequestKind) {
    return async (req: Request, res: Response): Promise<void> => {
      const arrivedAt = performance.now();
      const signal = clientGone(req, res).signal;
      const errors: string[] = [];
      const candidates = decode.ranked().slice(0, deps.maxAttempts ?? 3);
      observeDecision(res);
      for (const decodeUrl of candidates) {
        try {
          const routing = { headers: upstreamHeadersOf(res), affinity: affinityKey(req.body, identityOf(res).kvNamespace) };
          await attempt({ kind, body: req.body, decodeUrl, signal, ...routing }, res, arrivedAt);
          metrics.e2eLatency.observe((performance.now() - arrivedAt) / 1000);
          return;
        } catch (err) {
          if (signal.aborted || relayedToClient(err, res)) return;
          metrics.handoffFailures.inc({ reason: err instanceof Relayed ? "upstream_status" : "unreachable" });
          errors.push(`${decodeUrl}: ${(err as Error).message}`);
        }
      }
      throw new HttpError(502, `no decode pod completed the request: ${errors.join("; ")}`, { code: "decode_unavailable" });
    };
  }

  const app = express();
  app.disable("x-powered-by");
  app.use(countRequests(metrics));
  app.use(observabilityRoutes(metrics, () => true));
  if (deps.guard) app.use(deps.guard);
  const modelList = (res: Response): Promise<globalThis.Response> =>
    fetch(`${(disaggregated ? decode : aggregated).urls[0]}/v1/models`, { headers: upstreamHeadersOf(res), signal: AbortSignal.timeout(5_000) });
  app.get("/v1/models", async (_req, res) => {
    const upstream = await modelList(res);
    res
      .status(upstream.status)
      .type("application/json")
      .send(await upstream.text());
  });
  // Answered from the pod's list, so no id ("..", "a/b") ever becomes a path on the pod.
  app.get("/v1/models/:id", async (req, res) => {
    const upstream = await modelList(res);
    if (!upstream.ok) return void res.status(upstream.status).type("application/json").send(await upstream.text());
    const list = (await upstream.json()) as { data?: { id?: string }[] };
    const found = list.data?.find((m) => m.id === req.params.id);
    if (!found) throw modelNotFound(req.params.id, list.data?.[0]?.id ?? "default", "fleet");
    res.json(found);
  });
  if (deps.upstreams) app.get("/internal/upstreams", (_req, res) => void res.json(sets.snapshot()));
  // Before the body is parsed: a request past capacity costs the router no more than its headers.
  const admitted = admission(deps.maxStreams);
  new Gauge({
    name: "llmfleet_router_streams_in_flight",
    help: "Completions this router has admitted and not yet finished (429 past --max-streams)",
    registers: [metrics.registry],
    collect() {
      this.set(admitted.inFlight);
    },
  });
  app.use(wrongMethod);
  app.use(["/v1/completions", "/v1/chat/completions"], admitted);
  app.use(jsonBody());
  // The decision latency is measured from here, the body read and parsed: the rest is the router's own work per request.
  app.use((_req, res, next) => {
    res.locals.arrivedAt = performance.now();
    next();
  });
  app.post("/v1/completions", handler("completion"));
  app.post("/v1/chat/completions", handler("chat"));
  app.use(notFound);
  app.use(errorHandler());
  return app;
}
