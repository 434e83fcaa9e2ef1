// The shape of a fake GPU node. kwok manages nodes annotated kwok.x-k8s.io/node=fake: it makes
// them Ready, heartbeats their Lease, and moves pods bound to them to Running. The scheduler sees
// the capacity declared here, nvidia.com/gpu included, so GPU requests are admitted and counted
// exactly as on a real node (no device plugin needed). The kwok provider (kwok.ts) creates these;
// the local control plane (scripts/cluster) starts kwok with the same annotation selector.
import type { V1Node, V1Taint } from "@kubernetes/client-node";

/** The annotation (value "fake") that marks a Node as kwok-managed. */
export const KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node";

export interface KwokGpuNodeOptions {
  /** nvidia.com/gpu capacity; 0 makes a CPU-only node. Default 8. */
  gpus?: number;
  /** Default "32". */
  cpu?: string;
  /** Default "256Gi". */
  memory?: string;
  /** Default 110. */
  pods?: number;
  /** GPU model, published as the nvidia.com/gpu.product label (as GPU feature discovery does). Default: none. */
  gpuProduct?: string;
  /** Extra labels, applied last. Default: none. */
  labels?: Record<string, string>;
  /** Default: none. */
  taints?: V1Taint[];
}

export function kwokGpuNode(name: string, opts: KwokGpuNodeOptions = {}): V1Node {
  const gpus = opts.gpus ?? 8;
  const resources: Record<string, string> = {
    cpu: opts.cpu ?? "32",
    memory: opts.memory ?? "256Gi",
    pods: String(opts.pods ?? 110),
    "nvidia.com/gpu": String(gpus),
  };
  const gpuLabels: Record<string, string> = gpus > 0 ? { "nvidia.com/gpu.present": "true", "nvidia.com/gpu.count": String(gpus) } : {};
  if (gpus > 0 && opts.gpuProduct) gpuLabels["nvidia.com/gpu.product"] = opts.gpuProduct;
  return {
    apiVersion: "v1",
    kind: "Node",
    metadata: {
      name,
      annotations: { [KWOK_NODE_ANNOTATION]: "fake", "node.alpha.kubernetes.io/ttl": "0" },
      labels: {
        type: "kwok",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        ...gpuLabels,
        ...opts.labels,
      },
    },
    spec: { taints: opts.taints ?? [] },
    // Node status is accepted on create; kwok's node-initialize stage fills in conditions.
    status: { capacity: resources, allocatable: resources, nodeInfo: fakeNodeInfo() },
  };
}

function fakeNodeInfo(): NonNullable<V1Node["status"]>["nodeInfo"] {
  return {
    architecture: "amd64",
    operatingSystem: "linux",
    kubeletVersion: "fake",
    kubeProxyVersion: "fake",
    bootID: "",
    containerRuntimeVersion: "",
    kernelVersion: "",
    machineID: "",
    osImage: "",
    systemUUID: "",
  };
}
