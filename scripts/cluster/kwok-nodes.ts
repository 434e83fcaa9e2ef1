// Fake GPU nodes for the kwok-backed cluster. kwok manages nodes annotated
// kwok.x-k8s.io/node=fake: it makes them Ready, heartbeats their Lease, and moves pods bound to
// them to Running. The scheduler sees the capacity we declare here, nvidia.com/gpu included, so
// GPU requests are admitted and counted exactly as on a real node (no device plugin needed).
import { CoreV1Api, KubeConfig, type V1Node, type V1Taint } from "@kubernetes/client-node";
import { KWOK_NODE_ANNOTATION } from "./components.ts";

export interface KwokGpuNodeOptions {
  /** nvidia.com/gpu capacity; 0 makes a CPU-only node. Default 8. */
  gpus?: number;
  cpu?: string;
  memory?: string;
  pods?: number;
  /** GPU model, published as the nvidia.com/gpu.product label (as GPU feature discovery does). */
  gpuProduct?: string;
  labels?: Record<string, string>;
  taints?: V1Taint[];
}

function coreApi(kubeconfigPath: string): CoreV1Api {
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfigPath);
  return kc.makeApiClient(CoreV1Api);
}

/** The Node object, exported for tests that want to tweak it before creating. */
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

/** Creates a kwok-managed Node with `gpus` nvidia.com/gpu; returns the created object. */
export async function createKwokGpuNode(kubeconfigPath: string, name: string, opts: KwokGpuNodeOptions = {}): Promise<V1Node> {
  return coreApi(kubeconfigPath).createNode({ body: kwokGpuNode(name, opts) });
}

export async function deleteKwokNode(kubeconfigPath: string, name: string): Promise<void> {
  await coreApi(kubeconfigPath).deleteNode({ name });
}

/** True once kwok has marked the node Ready. */
export async function isNodeReady(kubeconfigPath: string, name: string): Promise<boolean> {
  const node = await coreApi(kubeconfigPath).readNode({ name });
  return (node.status?.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True");
}
