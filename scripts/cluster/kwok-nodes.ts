// Fake GPU nodes for the kwok-backed cluster, created through the apiserver. Their shape is the
// product's (operator/nodegroups/kwok-node.ts), so test nodes and the kwok provider's nodes agree.
import { CoreV1Api, KubeConfig, type V1Node } from "@kubernetes/client-node";
import { kwokGpuNode, type KwokGpuNodeOptions } from "../../operator/nodegroups/kwok-node.ts";

export type { KwokGpuNodeOptions };

function coreApi(kubeconfigPath: string): CoreV1Api {
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfigPath);
  return kc.makeApiClient(CoreV1Api);
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
