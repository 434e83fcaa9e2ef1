// The engine flags of Model.spec.runtime for the pods that load the model (prefill, decode,
// aggregated): the Model's values, else the defaults crds/schema/runtime.ts documents. Every
// setting is passed explicitly, so what runs is what the CRD says, whatever the engine's own
// defaults are; the flags the engine accepts only with --backend native are left out otherwise.
import type { EnginePool, Model } from "../api.ts";
import { RUNTIME_DEFAULTS as D, type PipelineDecodeMode } from "../../crds/schema/runtime.ts";
import { nameOf, namespaceOf } from "../../lib/kube/types.ts";
import { durationSeconds } from "../autoscaler/duration.ts";

export interface RuntimeSettings {
  backend: "native" | "llama";
  contextSize: number;
  parallel: number;
  batchSize: number;
  flashAttention: boolean;
  /** Native only: layers on the GPU, -1 = all. */
  gpuLayers: number;
  /** Native only. */
  decodeLookahead: number;
  /** Native only. */
  pipelineDecode: "on" | "off" | "auto";
  /** Native only: RAG documents' recomputed share. */
  ragRecompute: number;
  /** Native only, a pod with more than one GPU: how the model is split over them and each one's share. */
  multiGpu?: { splitMode: "layer" | "row" | "none"; tensorSplit?: number[] };
}

/** Where a pod runs: its own GPUs, and whether its Model is on GPUs (crds/schema/runtime.ts ON_GPUS_RULE). */
export interface PodPlacement {
  gpus: number;
  modelOnGPUs: boolean;
}

/** GPUs per aggregated replica: placement.gpusPerReplica (default 1); none without spec.replicas. */
export function aggregatedGPUs(model: Model): number {
  return model.spec.replicas ? (model.spec.placement?.gpusPerReplica ?? 1) : 0;
}

/** ON_GPUS_RULE. `pools` may include other Models' pools; only this Model's count. */
export function modelOnGPUs(model: Model, pools: EnginePool[]): boolean {
  const mine = (p: EnginePool): boolean => p.spec.modelRef.name === nameOf(model) && namespaceOf(p) === namespaceOf(model);
  return aggregatedGPUs(model) > 0 || pools.some((p) => mine(p) && p.spec.gpusPerReplica > 0);
}

/** The settings every pod of the Model must share: they follow the Model-wide rule. */
function modelWideSettings(model: Model, onGPUs: boolean): Pick<RuntimeSettings, "contextSize" | "parallel" | "flashAttention"> {
  const rt = model.spec.runtime;
  const d = onGPUs ? D.onGPUs : D.onCPUs;
  return { contextSize: rt?.contextSize ?? d.contextSize, parallel: rt?.parallel ?? d.parallel, flashAttention: rt?.flashAttention ?? d.flashAttention };
}

/** The CRD's pipelineDecode (YAML-safe words) as the engine's --pipeline-decode value. */
export const ENGINE_PIPELINE_DECODE: Record<PipelineDecodeMode, "on" | "off" | "auto"> = { Auto: "auto", Enabled: "on", Disabled: "off" };

/** The native backend's own settings; gpuLayers follows the pod's own GPUs. */
function nativeSettings(model: Model, gpus: number): Pick<RuntimeSettings, "gpuLayers" | "decodeLookahead" | "pipelineDecode" | "ragRecompute" | "multiGpu"> {
  const rt = model.spec.runtime;
  return {
    gpuLayers: rt?.gpuLayers ?? (gpus > 0 ? D.gpuLayers.withGPUs : D.gpuLayers.withoutGPUs),
    decodeLookahead: rt?.decodeLookahead ?? D.decodeLookahead,
    pipelineDecode: ENGINE_PIPELINE_DECODE[rt?.pipelineDecode ?? D.pipelineDecode],
    ragRecompute: rt?.ragRecompute ?? D.ragRecompute,
    ...multiGpuSettings(model, gpus),
  };
}

/** A replica over several GPUs: the Model's splitMode (engine spelling) and tensorSplit; nothing for one GPU or none. */
function multiGpuSettings(model: Model, gpus: number): Pick<RuntimeSettings, "multiGpu"> {
  if (gpus <= 1) return {};
  const rt = model.spec.runtime;
  const splitMode = (rt?.splitMode ?? D.splitMode).toLowerCase() as "layer" | "row" | "none";
  return { multiGpu: rt?.tensorSplit ? { splitMode, tensorSplit: rt.tensorSplit } : { splitMode } };
}

export function runtimeSettings(model: Model, pod: PodPlacement): RuntimeSettings {
  const rt = model.spec.runtime;
  return {
    backend: rt?.backend ?? D.backend,
    ...modelWideSettings(model, pod.modelOnGPUs),
    batchSize: rt?.batchSize ?? D.batchSize,
    ...nativeSettings(model, pod.gpus),
  };
}

/**
 * The flags of `s`. --flash-attention is a switch (absent = off). -1 layers is spelled "all":
 * the engine's parser (node:util parseArgs) takes "-1" after a flag for another flag.
 */
export function runtimeArgs(s: RuntimeSettings): string[] {
  const args = ["--backend", s.backend, "--ctx-size", String(s.contextSize), "--parallel", String(s.parallel), "--batch-size", String(s.batchSize)];
  if (s.flashAttention) args.push("--flash-attention");
  if (s.backend !== "native") return args;
  const layers = s.gpuLayers === -1 ? "all" : String(s.gpuLayers);
  args.push(
    "--gpu-layers",
    layers,
    "--decode-lookahead",
    String(s.decodeLookahead),
    "--pipeline-decode",
    s.pipelineDecode,
    "--rag-recompute",
    String(s.ragRecompute),
  );
  if (s.multiGpu) args.push("--split-mode", s.multiGpu.splitMode);
  if (s.multiGpu?.tensorSplit) args.push("--tensor-split", s.multiGpu.tensorSplit.join(","));
  return args;
}

/** How an engine pod stops (engine --drain-*; the pod's grace period covers both and a margin). */
export interface DrainPlan {
  delaySeconds: number;
  timeoutSeconds: number;
}

/** Seconds to keep serving after readiness drops: long enough for endpoints to learn it. */
const DRAIN_DELAY_SECONDS = 5;
/** The Model's ITL target when it sets none (crds/schema/model.ts documents 50ms). */
const DEFAULT_ITL_SECONDS = 0.05;

/**
 * A pod of the Model stops without cutting a stream: it waits for the longest generation the
 * Model allows — a whole context of tokens at its ITL target — plus a margin.
 */
export function modelDrain(model: Model, onGPUs: boolean): DrainPlan {
  const { contextSize } = modelWideSettings(model, onGPUs);
  const itl = durationSeconds(model.spec.slo?.itlP90, DEFAULT_ITL_SECONDS);
  return { delaySeconds: DRAIN_DELAY_SECONDS, timeoutSeconds: Math.ceil(contextSize * itl) + 10 };
}

/** Pods that hold no generation (the KV store): requests are short. */
export const SHORT_DRAIN: DrainPlan = { delaySeconds: DRAIN_DELAY_SECONDS, timeoutSeconds: 30 };
