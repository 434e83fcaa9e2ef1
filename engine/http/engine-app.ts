/**
 * createEngineApp: the HTTP face of a model-holding pod (aggregated, prefill or decode role).
 * Never listens by itself; main.ts does, tests call it in-process.
 */
import express, { Router, type Express, type Request, type Response } from "express";
import type { EngineMetrics } from "../metrics/engine-metrics.ts";
import type { CompletionService } from "../serving/completion-service.ts";
import { errorHandler, notFound, wrongMethod } from "./http-error.ts";
import type { RuntimeInfo } from "../runtime/runtime.ts";
import { jsonBody } from "./json-body.ts";
import { modelNames, modelNotFound, parseEngineRequest, type RequestKind } from "./openai-request.ts";
import { clientGone, respondWithGeneration } from "./respond.ts";
import { identityOf } from "../access/identity.ts";

export interface EngineAppDeps {
  service: CompletionService;
  metrics: EngineMetrics;
  /** Role-specific routes (P/D hand-off), mounted before the OpenAI API. */
  extraRoutes?: Router;
  /** Refuses requests that do not come from the fleet (engine/access/fleet-auth.ts); default none. */
  guard?: express.RequestHandler;
}

/** Probes and scrapes are not requests: counting them made a scraped pool look busy to the autoscaler. */
const NOT_COUNTED = new Set(["/health", "/ready", "/metrics"]);

export function countRequests(metrics: EngineMetrics): express.RequestHandler {
  return (req, res, next) => {
    if (!NOT_COUNTED.has(req.path)) res.on("finish", () => metrics.requests.inc({ status: String(res.statusCode) }));
    next();
  };
}

export function observabilityRoutes(metrics: EngineMetrics, ready: () => boolean): Router {
  const router = express.Router();
  router.get("/health", (_req, res) => {
    res.json({ status: "ok", role: metrics.role });
  });
  router.get("/ready", (_req, res) => {
    const ok = ready();
    res.status(ok ? 200 : 503).json({ ready: ok, role: metrics.role });
  });
  router.get("/metrics", async (_req, res) => {
    res.set("Content-Type", metrics.registry.contentType).send(await metrics.registry.metrics());
  });
  return router;
}

function completionHandler(service: CompletionService, kind: RequestKind) {
  return async (req: Request, res: Response): Promise<void> => {
    const prepared = service.prepare(parseEngineRequest(req.body, kind, service.runtime));
    prepared.identity = identityOf(res);
    const gone = clientGone(req, res);
    await respondWithGeneration(service, prepared, res, { signal: gone.signal });
  };
}

export function createEngineApp(deps: EngineAppDeps): Express {
  const { service, metrics } = deps;
  const app = express();
  app.disable("x-powered-by");
  app.use(countRequests(metrics));
  service.pool.observe(() => {
    metrics.queueDepth.set(service.pool.queued);
    metrics.runningSequences.set(service.pool.running);
  });
  app.use(observabilityRoutes(metrics, () => true));
  if (deps.guard) app.use(deps.guard);
  app.use(modelRoutes(service.runtime.info));
  app.use(wrongMethod);
  app.use(jsonBody());
  if (deps.extraRoutes) app.use(deps.extraRoutes);
  app.post("/v1/completions", completionHandler(service, "completion"));
  app.post("/v1/chat/completions", completionHandler(service, "chat"));
  app.use(notFound);
  app.use(errorHandler());
  return app;
}

/** GET /v1/models (the served id first, then its aliases and "default") and GET /v1/models/{id}, as OpenAI's API has them. */
function modelRoutes(info: RuntimeInfo): Router {
  const routes = Router();
  const created = Math.floor(Date.now() / 1000);
  const ids = (): string[] => modelNames(info);
  const model = (id: string): Record<string, unknown> => ({ id, object: "model", created, owned_by: "llmfleet" });
  routes.get("/v1/models", (_req, res) => void res.json({ object: "list", data: ids().map(model) }));
  routes.get("/v1/models/:id", (req, res) => {
    const id = req.params.id ?? "";
    if (!ids().includes(id)) throw modelNotFound(id, info.servedName ?? info.modelId);
    res.json(model(id));
  });
  return routes;
}
