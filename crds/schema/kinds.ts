// The five kinds: names, printer columns and subresources, with their spec and status schemas.
import { Type, type TSchema } from "@sinclair/typebox";
import { GROUP, VERSION } from "./common.ts";
import { ModelSpec, ModelStatus } from "./model.ts";
import { DecodePoolSpec, PoolStatus, PrefillPoolSpec } from "./pools.ts";
import { KVStoreSpec, KVStoreStatus } from "./kvstore.ts";
import { GPUNodeGroupSpec, GPUNodeGroupStatus } from "./nodegroup.ts";

export interface PrinterColumn {
  name: string;
  type: "string" | "integer" | "number" | "boolean" | "date";
  jsonPath: string;
  description: string;
  priority?: number;
}

export interface KindDefinition {
  kind: string;
  plural: string;
  singular: string;
  shortNames: string[];
  description: string;
  spec: TSchema;
  status: TSchema;
  columns: PrinterColumn[];
  /** Paths for the scale subresource, when the kind has one. */
  scale?: { specReplicasPath: string; statusReplicasPath: string; labelSelectorPath: string };
}

const READY_CONDITION: PrinterColumn = {
  name: "Status",
  type: "string",
  jsonPath: '.status.conditions[?(@.type=="Ready")].reason',
  description: "Reason of the Ready condition.",
};
const AGE: PrinterColumn = { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp", description: "Time since creation." };
const POOL_SCALE = { specReplicasPath: ".spec.replicas.desired", statusReplicasPath: ".status.replicas", labelSelectorPath: ".status.selector" };

function poolColumns(latency: "TTFT-P90" | "ITL-P90"): PrinterColumn[] {
  const field = latency === "TTFT-P90" ? "ttftP90" : "itlP90";
  return [
    { name: "Ready", type: "integer", jsonPath: ".status.readyReplicas", description: "Ready pods." },
    { name: "Desired", type: "integer", jsonPath: ".status.desiredReplicas", description: "Pods the operator is running toward." },
    { name: latency, type: "string", jsonPath: `.status.metrics.${field}`, description: `Observed ${latency}.` },
    { name: "Queue", type: "integer", jsonPath: ".status.metrics.queueDepth", description: "Waiting requests." },
    READY_CONDITION,
    AGE,
  ];
}

export const KINDS: KindDefinition[] = [
  {
    kind: "Model",
    plural: "models",
    singular: "model",
    shortNames: ["mdl"],
    description:
      "A model served by an llmfleet fleet: its artifact, runtime, SLOs, routing, and optional aggregated replicas. Becomes the router Deployment and Service (the fleet's OpenAI endpoint).",
    spec: ModelSpec,
    status: ModelStatus,
    columns: [
      { name: "Ready", type: "integer", jsonPath: ".status.readyReplicas", description: "Ready aggregated replicas." },
      { name: "Desired", type: "integer", jsonPath: ".status.desiredReplicas", description: "Aggregated replicas wanted." },
      { name: "TTFT-P90", type: "string", jsonPath: ".status.ttftP90", description: "Observed fleet TTFT p90." },
      { name: "Endpoint", type: "string", jsonPath: ".status.endpoint", description: "OpenAI endpoint of the fleet.", priority: 1 },
      READY_CONDITION,
      AGE,
    ],
    scale: { specReplicasPath: ".spec.replicas.desired", statusReplicasPath: ".status.replicas", labelSelectorPath: ".status.selector" },
  },
  {
    kind: "PrefillPool",
    plural: "prefillpools",
    singular: "prefillpool",
    shortNames: ["pfp"],
    description: "A pool of engine pods that only prefill, scaled on TTFT and queue depth.",
    spec: PrefillPoolSpec,
    status: PoolStatus,
    columns: poolColumns("TTFT-P90"),
    scale: POOL_SCALE,
  },
  {
    kind: "DecodePool",
    plural: "decodepools",
    singular: "decodepool",
    shortNames: ["dcp"],
    description: "A pool of engine pods that only decode, scaled on inter-token latency, running sequences and KV memory.",
    spec: DecodePoolSpec,
    status: PoolStatus,
    columns: poolColumns("ITL-P90"),
    scale: POOL_SCALE,
  },
  {
    kind: "KVStore",
    plural: "kvstores",
    singular: "kvstore",
    shortNames: ["kvs"],
    description: "A tiered KV-cache store (memory, local disk, S3-compatible object store) shared by the pools that reference it.",
    spec: KVStoreSpec,
    status: KVStoreStatus,
    columns: [
      { name: "Ready", type: "integer", jsonPath: ".status.readyReplicas", description: "Ready kvstore pods." },
      { name: "Tiers", type: "string", jsonPath: ".status.tiers", description: "Tiers in lookup order." },
      READY_CONDITION,
      AGE,
    ],
  },
  {
    kind: "GPUNodeGroup",
    plural: "gpunodegroups",
    singular: "gpunodegroup",
    shortNames: ["gng"],
    description: "A group of GPU nodes scaled with the GPU demand of the pools placed on it.",
    spec: GPUNodeGroupSpec,
    status: GPUNodeGroupStatus,
    columns: [
      { name: "Provider", type: "string", jsonPath: ".spec.provider.kind", description: "Node provider." },
      { name: "Ready", type: "integer", jsonPath: ".status.readyNodes", description: "Ready nodes." },
      { name: "Desired", type: "integer", jsonPath: ".status.desiredNodes", description: "Nodes wanted." },
      { name: "GPUs", type: "integer", jsonPath: ".status.gpuCapacity", description: "Allocatable GPUs." },
      READY_CONDITION,
      AGE,
    ],
  },
];

export function kindByName(kind: string): KindDefinition {
  const found = KINDS.find((k) => k.kind === kind);
  if (!found) throw new Error(`unknown llmfleet kind ${kind}`);
  return found;
}

export { GROUP, VERSION, Type };
