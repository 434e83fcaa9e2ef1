import { Type, type Static } from "@sinclair/typebox";
import { Duration, LocalRef, Quantity, ReplicaRange, statusBase, strictObject, StringEnum } from "./common.ts";

const Resources = strictObject(
  {
    cpu: Type.Optional(Quantity("CPU requested (and limited) per engine pod. Default 2.")),
    memory: Type.Optional(Quantity("Memory requested (and limited) per engine pod. Default 8Gi.")),
  },
  { description: "CPU and memory per engine pod, besides its GPUs." },
);

function commonPoolFields(role: "prefill" | "decode") {
  return {
    modelRef: LocalRef("Model", `The Model these ${role} pods serve.`),
    kvStoreRef: Type.Optional(LocalRef("KVStore", "The KVStore whose tiers hold reusable KV caches. Without it, pods keep KV only in their own memory.")),
    nodeGroupRef: Type.Optional(
      LocalRef(
        "GPUNodeGroup",
        "The GPUNodeGroup to place pods on: its node selector and tolerations are applied, and its node count follows this pool's GPU demand.",
      ),
    ),
    gpusPerReplica: Type.Integer({ minimum: 0, maximum: 16, default: 1, description: "nvidia.com/gpu per pod. 0 runs on CPU. Default 1." }),
    replicas: ReplicaRange(`${role} pods`, 1),
    resources: Type.Optional(Resources),
    image: Type.Optional(
      Type.String({
        maxLength: 512,
        description:
          "Engine image override for this pool. Default: the Model's runtime.image, else the operator's --engine-gpu-image when gpusPerReplica > 0, else its --engine-image.",
      }),
    ),
  };
}

export const PrefillAutoscaling = strictObject(
  {
    mode: StringEnum(["slo", "external"], {
      description: "slo: llmfleet's autoscaler holds the Model's TTFT SLO. external: leave replicas to HPA or KEDA through the scale subresource. Default slo.",
      default: "slo",
    }),
    maxQueuePerReplica: Type.Integer({
      minimum: 1,
      maximum: 1024,
      default: 4,
      description: "Waiting requests per pod above which the pool scales up. Default 4.",
    }),
    ttftP90: Type.Optional(Duration("Overrides the Model's slo.ttftP90 for this pool.")),
    scaleDownStabilization: Duration("How long the recommendation must stay lower before pods are removed.", "5m"),
  },
  { description: "How the pool scales." },
);

export const DecodeAutoscaling = strictObject(
  {
    mode: StringEnum(["slo", "external"], {
      description: "slo: llmfleet's autoscaler holds the Model's ITL SLO. external: leave replicas to HPA or KEDA through the scale subresource. Default slo.",
      default: "slo",
    }),
    maxRunningPerReplica: Type.Integer({
      minimum: 1,
      maximum: 4096,
      default: 16,
      description: "Running sequences per pod above which the pool scales up. Default 16.",
    }),
    maxKVUtilizationPercent: Type.Integer({
      minimum: 1,
      maximum: 100,
      default: 85,
      description: "KV-cache memory use per pod above which the pool scales up. Default 85.",
    }),
    itlP90: Type.Optional(Duration("Overrides the Model's slo.itlP90 for this pool.")),
    scaleDownStabilization: Duration("How long the recommendation must stay lower before pods are removed.", "5m"),
  },
  { description: "How the pool scales." },
);

export const PrefillPoolSpec = strictObject(
  { ...commonPoolFields("prefill"), autoscaling: Type.Optional(PrefillAutoscaling) },
  { description: "Engine pods that only prefill prompts and hand their KV state to a decode pool of the same Model." },
);
export type PrefillPoolSpec = Static<typeof PrefillPoolSpec>;

export const DecodePoolSpec = strictObject(
  { ...commonPoolFields("decode"), autoscaling: Type.Optional(DecodeAutoscaling) },
  { description: "Engine pods that only decode: they import KV state from prefill pods and generate tokens." },
);
export type DecodePoolSpec = Static<typeof DecodePoolSpec>;

const PoolMetrics = Type.Object(
  {
    ttftP90: Type.Optional(Type.String({ description: "Observed TTFT p90 (prefill pools), e.g. 412ms." })),
    itlP90: Type.Optional(Type.String({ description: "Observed inter-token latency p90 (decode pools), e.g. 31ms." })),
    queueDepth: Type.Optional(Type.Integer({ description: "Requests waiting across the pool's pods." })),
    runningSequences: Type.Optional(Type.Integer({ description: "Sequences being served across the pool's pods." })),
  },
  { description: "Load the autoscaler last observed." },
);

const AutoscalerDecision = Type.Object(
  {
    lastDecisionTime: Type.String({ format: "date-time", description: "When the autoscaler last decided." }),
    recommendedReplicas: Type.Integer({ description: "Replicas the autoscaler asked for through the scale subresource." }),
    reason: Type.String({ maxLength: 1024, description: "Why, e.g. 'scale up: queueing-delay needs 6'." }),
    inputs: Type.Unsafe<Record<string, number>>({
      type: "object",
      additionalProperties: { type: "number" },
      maxProperties: 64,
      description:
        "What the decision was computed from: arrival and forecast rate, queue, latency and SLO (seconds), learned capacity, lead time, and each signal's replicas (signal.<name>).",
    }),
    capacitySource: Type.Optional(
      Type.String({ description: "Where the per-replica capacity came from: prefill-busy-time (the engines' prefill busy counters), saturated, observed-lower-bound, prior, spec, itl-breach." }),
    ),
  },
  { description: "The autoscaler's last decision (mode slo)." },
);

export const PoolStatus = Type.Object(
  {
    ...statusBase(),
    replicas: Type.Optional(Type.Integer({ description: "Pods that exist (the scale subresource's status.replicas)." })),
    readyReplicas: Type.Optional(Type.Integer({ description: "Pods that are ready." })),
    desiredReplicas: Type.Optional(Type.Integer({ description: "Pods the operator is running toward." })),
    selector: Type.Optional(Type.String({ description: "Label selector of the pool's pods (for the scale subresource, HPA and KEDA)." })),
    serviceName: Type.Optional(Type.String({ description: "The pool's Service." })),
    metrics: Type.Optional(PoolMetrics),
    autoscaler: Type.Optional(AutoscalerDecision),
  },
  { description: "Observed state of the pool." },
);
export type PoolStatus = Static<typeof PoolStatus>;
