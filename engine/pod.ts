/** Assembles a pod of one role from its options: runtime, admission pool, metrics, app. */
import type { Express } from "express";
import { createEngineApp } from "./http/engine-app.ts";
import { createEngineMetrics, type EngineMetrics, type Role } from "./metrics/engine-metrics.ts";
import { ensureModel, verifyChecksum } from "./model/fetch.ts";
import { LlamaRuntime } from "./runtime/llama-runtime.ts";
import { CompletionService } from "./serving/completion-service.ts";
import { SequencePool } from "./serving/sequence-pool.ts";
import { handoffRoutes } from "./pd/handoff-routes.ts";

export interface ModelPodOptions {
  role: Exclude<Role, "router">;
  /** GGUF path or model URI. */
  model: string;
  /** Expected "sha256:<hex>" of the model file; the pod refuses to start on another. Default none. */
  modelChecksum?: string;
  threads: number;
  ctxSize: number;
  parallel: number;
  batchSize?: number;
  maxQueue: number;
  flashAttention?: boolean;
  /** Prefill role: decode pods to hand off to when the router names none. */
  decode?: string[];
  withProcessMetrics?: boolean;
}

export interface ModelPod extends AsyncDisposable {
  app: Express;
  service: CompletionService;
  metrics: EngineMetrics;
}

export async function createModelPod(opts: ModelPodOptions): Promise<ModelPod> {
  const modelPath = await ensureModel(opts.model);
  if (opts.modelChecksum) await verifyChecksum(modelPath, opts.modelChecksum);
  const runtime = await LlamaRuntime.load({
    modelPath,
    threads: opts.threads,
    contextSize: opts.ctxSize,
    parallel: opts.parallel,
    ...(opts.batchSize === undefined ? {} : { batchSize: opts.batchSize }),
    flashAttention: opts.flashAttention ?? false,
  });
  const metrics = createEngineMetrics(opts.role, opts.withProcessMetrics ?? false);
  const service = new CompletionService(runtime, new SequencePool(runtime.sequences, opts.maxQueue), metrics);
  const routes = handoffRoutes({ role: opts.role, service, metrics, decodeUrls: opts.decode ?? [] });
  const app = createEngineApp({ service, metrics, extraRoutes: routes.router });
  return {
    app,
    service,
    metrics,
    async [Symbol.asyncDispose](): Promise<void> {
      await routes[Symbol.asyncDispose]();
      await runtime[Symbol.asyncDispose]();
    },
  };
}
