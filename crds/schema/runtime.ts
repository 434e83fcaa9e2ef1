// Model.spec.runtime: how the bundled engine runs the model. The defaults the operator applies are
// constants here, and the field descriptions are written from them, so what `kubectl explain`
// documents is what the planner passes (operator/plan/runtime-args.ts; the contract test checks it).
import { Type } from "@sinclair/typebox";
import { cel, strictObject, StringEnum } from "./common.ts";

/**
 * A Model is "on GPUs" when any of its engine pods has GPUs: a PrefillPool or DecodePool of it
 * with gpusPerReplica > 0, or aggregated replicas (spec.replicas set) with placement.gpusPerReplica
 * > 0. The defaults that prefill and decode pods must share (flash attention decides the V layout
 * of the KV state they hand off and store; the context decides what a hand-off can hold) follow
 * that Model-wide rule, so a CPU pool of a GPU Model still agrees with its GPU pools.
 */
export const ON_GPUS_RULE =
  "the Model is on GPUs (a PrefillPool or DecodePool of it has gpusPerReplica > 0, or it has aggregated replicas, spec.replicas, with placement.gpusPerReplica > 0)";

/**
 * Values of pipelineDecode. Not on/off: YAML 1.1, which kubectl reads, takes an unquoted on, off,
 * yes or no for a boolean, so `pipelineDecode: off` would be refused as "must be of type string".
 */
export const PIPELINE_DECODE_MODES = ["Auto", "Enabled", "Disabled"] as const;
export type PipelineDecodeMode = (typeof PIPELINE_DECODE_MODES)[number];

/** Values of splitMode (a replica over several GPUs; engine --split-mode, lower-cased). */
export const SPLIT_MODES = ["Layer", "Row", "None"] as const;
export type SplitModeName = (typeof SPLIT_MODES)[number];

export const RUNTIME_DEFAULTS = {
  backend: "native",
  batchSize: 512,
  decodeLookahead: 1,
  /** Disabled until the GPU stress gate passes with it on: pipelined decoding crashed the GPU engine under HTTP load (issue 16). */
  pipelineDecode: "Disabled" as PipelineDecodeMode,
  /** A replica over several GPUs: whole layers per GPU. */
  splitMode: "Layer" as SplitModeName,
  /** RAG documents: the share of document tokens recomputed in place (engine --rag-recompute). */
  ragRecompute: 0.5,
  /** Per pod: every layer (-1) on a pod with GPUs, none on a CPU pod. */
  gpuLayers: { withGPUs: -1, withoutGPUs: 0 },
  /** Model-wide, by ON_GPUS_RULE. */
  onGPUs: { contextSize: 4096, parallel: 8, flashAttention: true },
  onCPUs: { contextSize: 2048, parallel: 4, flashAttention: false },
} as const;

const D = RUNTIME_DEFAULTS;
const onOff = (b: boolean): string => (b ? "on" : "off");
const NATIVE_ONLY = "Applies only to backend native.";

const runtimeFields = {
  backend: Type.Optional(
    StringEnum(["native", "llama"], {
      description: `Model runtime of the bundled engine: native (the engine's own addon over llama.cpp, with its batching loop; runs on GPUs) or llama (node-llama-cpp, CPU only). Default ${D.backend}.`,
    }),
  ),
  gpuLayers: Type.Optional(
    Type.Integer({
      minimum: -1,
      maximum: 1024,
      description: `Model layers offloaded to the GPU; -1 = all, 0 = none. Default: all (-1) on pods with GPUs (gpusPerReplica > 0), 0 on CPU pods. Without a GPU (the CPU image) it has no effect. ${NATIVE_ONLY}`,
    }),
  ),
  flashAttention: Type.Optional(
    Type.Boolean({
      description: `Flash attention. It decides the V layout of the KV state, so every pod of the Model gets the same value. Default ${onOff(D.onGPUs.flashAttention)} when ${ON_GPUS_RULE}, else ${onOff(D.onCPUs.flashAttention)}. On CPU it runs llama.cpp's CPU kernels.`,
    }),
  ),
  contextSize: Type.Optional(
    Type.Integer({
      minimum: 128,
      maximum: 1048576,
      description: `Tokens per sequence, prompt plus completion (each engine process holds contextSize × parallel tokens of KV). Default ${D.onGPUs.contextSize} when ${ON_GPUS_RULE}, else ${D.onCPUs.contextSize}.`,
    }),
  ),
  parallel: Type.Optional(
    Type.Integer({
      minimum: 1,
      maximum: 1024,
      description: `Concurrent sequences per engine process. Default ${D.onGPUs.parallel} when ${ON_GPUS_RULE}, else ${D.onCPUs.parallel}.`,
    }),
  ),
  batchSize: Type.Optional(Type.Integer({ minimum: 1, maximum: 65536, description: `Tokens per llama.cpp batch (prompt chunk). Default ${D.batchSize}.` })),
  decodeLookahead: Type.Optional(
    Type.Integer({
      minimum: 1,
      maximum: 64,
      description: `Tokens decoded per sequence per native call while only decoding sequences wait; 1 = off. Default ${D.decodeLookahead}. ${NATIVE_ONLY}`,
    }),
  ),
  ragRecompute: Type.Optional(
    Type.Number({
      minimum: 0,
      maximum: 1,
      description: `RAG documents (a request's documents): the share of document tokens, the last ones before the prompt, computed in place; the documents before them are joined from each one's own KV, computed alone once (engine --rag-recompute; joins need the unified KV, the GPU default). 0 = join every document, 1 = never. Default ${D.ragRecompute}: on Gemma 3 270M with 6 documents in a new order, greedy agreement 0.957 with a full prefill (its perturbation floor 0.973) at 2.0x its speed; 0.3 gave 3x at 0.940 (BENCHMARKS.md "RAG documents"). ${NATIVE_ONLY}`,
    }),
  ),
  splitMode: Type.Optional(
    StringEnum([...SPLIT_MODES], {
      description: `How a replica with more than one GPU (gpusPerReplica > 1) spreads the model (engine --split-mode): Layer, whole layers per GPU (llama.cpp's layer split); Row, each weight matrix's rows across the GPUs; None, the first GPU only. Default ${D.splitMode}. No effect on a replica with one GPU. ${NATIVE_ONLY}`,
    }),
  ),
  tensorSplit: Type.Optional(
    Type.Array(Type.Number({ minimum: 0 }), {
      minItems: 1,
      maxItems: 16,
      description: `Each GPU's share of the model on a replica with more than one GPU, in device order, e.g. [3, 1] (engine --tensor-split); at most gpusPerReplica shares, not all 0. Default: by each GPU's free memory. ${NATIVE_ONLY}`,
    }),
  ),
  pipelineDecode: Type.Optional(
    StringEnum([...PIPELINE_DECODE_MODES], {
      description: `Pipelined decoding (engine --pipeline-decode): each decode step is launched before the previous step's tokens reach JavaScript. Auto = enabled when layers are on a GPU and the KV is per sequence. Default ${D.pipelineDecode}. Enabled with the unified KV on a GPU (the GPU default) is refused by the engine at start: it crashed under HTTP load on the H200 and bought nothing there. ${NATIVE_ONLY}`,
    }),
  ),
};

export const ModelRuntime = strictObject(
  {
    engine: StringEnum(["bundled", "vllm", "sglang"], {
      description: "Inference engine. bundled is llmfleet's own engine on llama.cpp. Default bundled.",
      default: "bundled",
    }),
    image: Type.Optional(
      Type.String({
        maxLength: 512,
        description: "Engine container image. Default: the operator's --engine-gpu-image for pods with GPUs, else its --engine-image.",
      }),
    ),
    threads: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 512, description: "CPU threads llama.cpp uses per engine process. Default: the pod's CPU, rounded up." }),
    ),
    ...runtimeFields,
    extraArgs: Type.Optional(
      Type.Array(Type.String({ maxLength: 256 }), { maxItems: 32, description: "Extra engine command-line arguments, appended after the planned ones." }),
    ),
  },
  {
    description: "How the bundled engine runs the model.",
    ...cel(
      {
        rule: "!has(self.backend) || self.backend == 'native' || !(has(self.gpuLayers) || has(self.decodeLookahead) || has(self.pipelineDecode) || has(self.ragRecompute) || has(self.splitMode) || has(self.tensorSplit))",
        message: "gpuLayers, decodeLookahead, pipelineDecode, ragRecompute, splitMode and tensorSplit apply only to backend native",
        fieldPath: ".backend",
      },
      {
        rule: "!has(self.tensorSplit) || self.tensorSplit.exists(x, x > 0)",
        message: "tensorSplit needs a share above 0",
        fieldPath: ".tensorSplit",
      },
    ),
  },
);
