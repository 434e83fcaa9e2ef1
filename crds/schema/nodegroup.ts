import { Type, type Static } from "@sinclair/typebox";
import { cel, Condition, CountRange, Duration, statusBase, StringMap, strictObject, StringEnum } from "./common.ts";

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
          cloud: StringEnum(["aws", "gcp", "kwok"], {
            description:
              "The program run: aws: an EKS managed node group (desired size). gcp: a GKE node pool (node count). kwok: kwok Nodes through the apiserver, for tests and local runs.",
          }),
          stack: Type.Optional(
            Type.String({ minLength: 1, maxLength: 253, description: "Pulumi stack holding the node group. Default: <namespace>-<name> of the GPUNodeGroup." }),
          ),
          cluster: Type.Optional(Type.String({ minLength: 1, maxLength: 253, description: "Name of the EKS or GKE cluster (aws and gcp)." })),
          nodeGroup: Type.Optional(Type.String({ minLength: 1, maxLength: 253, description: "Name of the managed node group or node pool (aws and gcp)." })),
          region: Type.Optional(Type.String({ maxLength: 64, description: "Cloud region or zone." })),
          config: Type.Optional(
            StringMap(
              "Settings of the program: aws: nodeRoleArn, subnetIds (comma-separated), instanceType. gcp: machineType, acceleratorType. Non-secret values only.",
            ),
          ),
          backendURL: Type.Optional(
            Type.String({
              maxLength: 2048,
              description: "Pulumi state backend, e.g. s3://bucket or file:///state. Default: the operator's PULUMI_BACKEND_URL.",
            }),
          ),
        },
        {
          description: "Settings of the pulumi provider. Cloud credentials and PULUMI_CONFIG_PASSPHRASE come from the operator's environment.",
          ...cel({
            rule: "self.cloud == 'kwok' || (has(self.cluster) && has(self.nodeGroup))",
            message: "cluster and nodeGroup are required for aws and gcp",
            fieldPath: ".cluster",
            reason: "FieldValueRequired",
          }),
        },
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

const Drain = strictObject(
  {
    // Optional, with defaults: the API server checks the object's own default ({}) against the
    // schema before it fills in the fields' defaults, so required fields would refuse it.
    timeout: Type.Optional(
      Duration(
        "How long evictions that a PodDisruptionBudget refuses are retried (with backoff) before the drain gives up; evicted pods then get as long again to terminate. When it gives up, the node stays cordoned and the DrainBlocked condition says why.",
        "10m",
      ),
    ),
    force: Type.Optional(
      Type.Boolean({
        default: false,
        description:
          "Once the timeout has passed, delete the pods a budget still protects so the node goes anyway. Default false: budgets are never overridden.",
      }),
    ),
  },
  {
    description:
      "How a node is drained before it is removed: it is cordoned and each of its pods, except DaemonSet and mirror pods, evicted through the Eviction API, so the PodDisruptionBudgets of the pools hold.",
    default: {},
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
    headroom: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 10000,
        default: 0,
        description:
          "Spare nodes kept beyond what the GPU demand fills (still within nodes.max), so a pool that scales up finds GPUs at once instead of waiting provisioningTime for a new node. Default 0.",
      }),
    ),
    scaleDownDelay: Duration("How long a node must stay unneeded before it is cordoned, drained and removed.", "10m"),
    drain: Type.Optional(Drain),
    provisioningTime: Duration("Lead time from asking for a node to its GPUs being schedulable; the autoscaler plans this far ahead.", "3m"),
  },
  { description: "A group of GPU nodes that llmfleet scales with the GPU demand of the pools placed on it." },
);
export type GPUNodeGroupSpec = Static<typeof GPUNodeGroupSpec>;

const Run = Type.Object(
  {
    id: Type.Integer({ minimum: 1, description: "Run number, counting up per group." }),
    provider: Type.String({ description: "Provider that ran it (kwok, karpenter, pulumi)." }),
    targetNodes: Type.Integer({ minimum: 0, description: "Node count the run brings the group to." }),
    startedAt: Type.String({ format: "date-time", description: "When the run started." }),
    finishedAt: Type.Optional(Type.String({ format: "date-time", description: "When the run ended (absent while Progressing)." })),
    operator: Type.Optional(Type.String({ maxLength: 253, description: "Identity of the operator process that started the run." })),
    message: Type.String({ maxLength: 32768, description: "What the run did or why it failed." }),
    conditions: Type.Unsafe<Condition[]>({
      type: "array",
      items: Condition,
      "x-kubernetes-list-type": "map",
      "x-kubernetes-list-map-keys": ["type"],
      description:
        "Progressing (True while it runs), Complete (True when it succeeded), Failed (True when it failed), Aborted (True when an operator restart found it Progressing; it is never re-run).",
    }),
  },
  { description: "One actuation of the provider." },
);

const Actuation = Type.Object(
  {
    desiredNodes: Type.Integer({ minimum: 0, description: "Nodes the actuator wants: the same figure as status.desiredNodes when it decided." }),
    currentNodes: Type.Integer({ minimum: 0, description: "Nodes the group had when the decision was made." }),
    decision: Type.String({ maxLength: 4096, description: "The last decision and its reason, e.g. scale up, waiting for the scale-down delay, halted." }),
    decidedAt: Type.String({ format: "date-time", description: "When the decision changed last." }),
    lastRun: Type.Optional(Run),
  },
  { description: "Node-group actuation: the decision and the last provider run, written by the actuator (field manager llmfleet/nodegroups)." },
);

export type NodeGroupRun = Static<typeof Run>;
export type NodeGroupActuation = Static<typeof Actuation>;

export const GPUNodeGroupStatus = Type.Object(
  {
    ...statusBase(),
    desiredNodes: Type.Optional(Type.Integer({ description: "Nodes the group should have: ceil(gpuDemand / gpusPerNode) + headroom, within nodes.min..max." })),
    readyNodes: Type.Optional(Type.Integer({ description: "Nodes that are Ready." })),
    provisioningNodes: Type.Optional(Type.Integer({ description: "Nodes asked for and not Ready yet." })),
    gpuCapacity: Type.Optional(Type.Integer({ description: "nvidia.com/gpu allocatable across ready nodes." })),
    gpuDemand: Type.Optional(Type.Integer({ description: "nvidia.com/gpu the pools placed on the group want." })),
    actuation: Type.Optional(Actuation),
  },
  { description: "Observed state of the node group." },
);
export type GPUNodeGroupStatus = Static<typeof GPUNodeGroupStatus>;
