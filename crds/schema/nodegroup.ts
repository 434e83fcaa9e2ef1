import { Type, type Static } from "@sinclair/typebox";
import { cel, CountRange, Duration, statusBase, StringMap, strictObject, StringEnum } from "./common.ts";

export const NODE_GROUP_LABEL = "serving.llmfleet.dev/node-group";

const Taint = strictObject(
  {
    key: Type.String({ minLength: 1, maxLength: 316, description: "Taint key." }),
    value: Type.Optional(Type.String({ maxLength: 63, description: "Taint value." })),
    effect: StringEnum(["NoSchedule", "PreferNoSchedule", "NoExecute"], { description: "Taint effect." }),
  },
  { description: "A taint on the group's nodes; pods placed on the group tolerate it." },
);

const Provider = strictObject(
  {
    kind: StringEnum(["kwok", "static", "karpenter", "pulumi"], {
      description:
        "kwok: fake nodes for tests and local runs. static: existing nodes, never scaled. karpenter: a Karpenter NodePool's limits. pulumi: a cloud node group through the Pulumi Automation API.",
    }),
    karpenter: Type.Optional(
      strictObject(
        { nodePool: Type.String({ minLength: 1, maxLength: 253, description: "Name of the Karpenter NodePool." }) },
        { description: "Settings of the karpenter provider." },
      ),
    ),
    pulumi: Type.Optional(
      strictObject(
        {
          cloud: StringEnum(["aws", "gcp"], { description: "aws: an EKS managed node group. gcp: a GKE node pool." }),
          stack: Type.String({ minLength: 1, maxLength: 253, description: "Pulumi stack name holding the node group." }),
          cluster: Type.String({ minLength: 1, maxLength: 253, description: "Name of the EKS or GKE cluster." }),
          nodeGroup: Type.String({ minLength: 1, maxLength: 253, description: "Name of the managed node group or node pool." }),
          region: Type.Optional(Type.String({ maxLength: 64, description: "Cloud region or zone." })),
          backendURL: Type.Optional(
            Type.String({ maxLength: 2048, description: "Pulumi state backend, e.g. s3://bucket or file:///state. Default: the operator's --pulumi-backend." }),
          ),
          secretRef: Type.Optional(
            strictObject(
              { name: Type.String({ minLength: 1, maxLength: 253, description: "Secret name." }) },
              { description: "Secret with cloud credentials and PULUMI_CONFIG_PASSPHRASE." },
            ),
          ),
        },
        { description: "Settings of the pulumi provider." },
      ),
    ),
  },
  {
    description: "Who adds and removes the group's nodes.",
    ...cel(
      {
        rule: "self.kind != 'karpenter' || has(self.karpenter)",
        message: "karpenter settings are required when kind is karpenter",
        fieldPath: ".karpenter",
        reason: "FieldValueRequired",
      },
      {
        rule: "self.kind != 'pulumi' || has(self.pulumi)",
        message: "pulumi settings are required when kind is pulumi",
        fieldPath: ".pulumi",
        reason: "FieldValueRequired",
      },
    ),
  },
);

export const GPUNodeGroupSpec = strictObject(
  {
    provider: Provider,
    gpusPerNode: Type.Integer({ minimum: 1, maximum: 64, description: "nvidia.com/gpu on each node." }),
    gpuType: Type.Optional(
      Type.String({ maxLength: 63, description: "GPU model label value (nvidia.com/gpu.product), e.g. NVIDIA-H100-80GB-HBM3; informational for placement." }),
    ),
    nodes: CountRange("nodes", 0),
    nodeLabels: Type.Optional(StringMap(`Labels the group's nodes carry and pods select on, besides ${NODE_GROUP_LABEL}=<name>.`)),
    taints: Type.Optional(Type.Array(Taint, { maxItems: 16, description: "Taints on the group's nodes; pools placed here tolerate them." })),
    scaleDownDelay: Duration("How long a node must stay unneeded before it is cordoned, drained and removed.", "10m"),
    provisioningTime: Duration("Lead time from asking for a node to its GPUs being schedulable; the autoscaler plans this far ahead.", "3m"),
  },
  { description: "A group of GPU nodes that llmfleet scales with the GPU demand of the pools placed on it." },
);
export type GPUNodeGroupSpec = Static<typeof GPUNodeGroupSpec>;

export const GPUNodeGroupStatus = Type.Object(
  {
    ...statusBase(),
    desiredNodes: Type.Optional(Type.Integer({ description: "Nodes the group should have." })),
    readyNodes: Type.Optional(Type.Integer({ description: "Nodes that are Ready." })),
    provisioningNodes: Type.Optional(Type.Integer({ description: "Nodes asked for and not Ready yet." })),
    gpuCapacity: Type.Optional(Type.Integer({ description: "nvidia.com/gpu allocatable across ready nodes." })),
    gpuDemand: Type.Optional(Type.Integer({ description: "nvidia.com/gpu the pools placed on the group want." })),
  },
  { description: "Observed state of the node group." },
);
export type GPUNodeGroupStatus = Static<typeof GPUNodeGroupStatus>;
