// Inline Pulumi programs, one per spec.provider.pulumi.cloud: pure factories over ProgramInputs
// (no clock, no cluster reads), so the same inputs give the same resources. The cloud SDKs are
// imported lazily: an operator without cloud groups never loads them.
import { all } from "@pulumi/pulumi";
import type { PulumiFn } from "@pulumi/pulumi/automation/index.js";
import type { V1Node } from "@kubernetes/client-node";
import type { Region } from "@pulumi/aws";

export interface ProgramTaint {
  key: string;
  value?: string;
  effect: "NoSchedule" | "PreferNoSchedule" | "NoExecute";
}

export interface ProgramInputs {
  cloud: "aws" | "gcp" | "kwok";
  /** Node count wanted. */
  desired: number;
  min: number;
  max: number;
  cluster?: string;
  nodeGroup?: string;
  region?: string;
  gpusPerNode: number;
  gpuType?: string;
  /** Labels every node carries (the group label included). */
  labels: Record<string, string>;
  taints: ProgramTaint[];
  config: Record<string, string>;
  /** kwok: the Node objects to exist, by name. */
  kwokNodes: V1Node[];
}

/** EKS and GKE spell taint effects alike. */
const TAINT_EFFECT = { NoSchedule: "NO_SCHEDULE", PreferNoSchedule: "PREFER_NO_SCHEDULE", NoExecute: "NO_EXECUTE" } as const;

function required(inputs: ProgramInputs, key: "cluster" | "nodeGroup"): string {
  const v = inputs[key];
  if (!v) throw new Error(`spec.provider.pulumi.${key} is required for ${inputs.cloud}`);
  return v;
}

/** aws: an EKS managed node group whose scalingConfig.desiredSize is the group's desired nodes. */
export function awsEksProgram(inputs: ProgramInputs): PulumiFn {
  return async () => {
    const aws = await import("@pulumi/aws");
    const provider = new aws.Provider("aws", { region: inputs.region as Region | undefined });
    const ng = new aws.eks.NodeGroup(
      required(inputs, "nodeGroup"),
      {
        clusterName: required(inputs, "cluster"),
        nodeGroupName: required(inputs, "nodeGroup"),
        nodeRoleArn: inputs.config.nodeRoleArn ?? "",
        subnetIds: (inputs.config.subnetIds ?? "").split(",").filter(Boolean),
        instanceTypes: inputs.config.instanceType ? [inputs.config.instanceType] : undefined,
        amiType: inputs.config.amiType ?? "AL2023_x86_64_NVIDIA",
        scalingConfig: { desiredSize: inputs.desired, minSize: inputs.min, maxSize: Math.max(inputs.max, 1) },
        labels: inputs.labels,
        taints: inputs.taints.map((t) => ({ key: t.key, value: t.value, effect: TAINT_EFFECT[t.effect] })),
      },
      { provider },
    );
    return { desiredSize: ng.scalingConfig.desiredSize };
  };
}

/** gcp: a GKE node pool whose nodeCount is the group's desired nodes. */
export function gcpGkeProgram(inputs: ProgramInputs): PulumiFn {
  return async () => {
    const gcp = await import("@pulumi/gcp");
    const pool = new gcp.container.NodePool(required(inputs, "nodeGroup"), {
      name: required(inputs, "nodeGroup"),
      cluster: required(inputs, "cluster"),
      location: inputs.region,
      nodeCount: inputs.desired,
      nodeConfig: {
        machineType: inputs.config.machineType,
        labels: inputs.labels,
        guestAccelerators: [{ type: inputs.config.acceleratorType ?? inputs.gpuType ?? "nvidia-h100-80gb", count: inputs.gpusPerNode }],
        taints: inputs.taints.map((t) => ({ key: t.key, value: t.value ?? "", effect: TAINT_EFFECT[t.effect] })),
      },
    });
    return { nodeCount: pool.nodeCount };
  };
}

/** kwok: one KwokNode (our dynamic provider) per wanted node; a name dropped from the list is deleted. */
export function kwokProgram(inputs: ProgramInputs): PulumiFn {
  return async () => {
    const { KwokNode } = await import("./kwok-dynamic.ts");
    const nodes = inputs.kwokNodes.map((node) => new KwokNode(node.metadata?.name ?? "", { node }));
    return { nodes: all(nodes.map((n) => n.id)) };
  };
}

export function programFor(inputs: ProgramInputs): PulumiFn {
  if (inputs.cloud === "aws") return awsEksProgram(inputs);
  if (inputs.cloud === "gcp") return gcpGkeProgram(inputs);
  return kwokProgram(inputs);
}
