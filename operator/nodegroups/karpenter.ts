// The karpenter provider: Karpenter adds nodes on its own for pending pods, up to the NodePool's
// limits; we set spec.limits["nvidia.com/gpu"] to the desired nodes' GPUs so the group cannot grow
// past what the pools placed on it want (+ headroom). Scale-down: the actuator has cordoned and
// drained the chosen nodes; deleting the Node hands it to Karpenter's termination finalizer, which
// terminates the instance. The NodePool's template must label its nodes with the group
// (serving.llmfleet.dev/node-group=<name>) so the actuator counts them.
import type { GPUNodeGroup } from "../api.ts";
import { ignoreNotFound, type KubeClient } from "../../lib/kube/client.ts";
import { R, type ResourceType } from "../../lib/kube/resources.ts";
import { GPU_RESOURCE } from "../plan/engine-pod.ts";
import type { NodeGroupChange, NodeGroupProvider } from "./provider.ts";

export const NODEPOOL: ResourceType = { group: "karpenter.sh", version: "v1", kind: "NodePool", plural: "nodepools", namespaced: false };

/** The merge patch that caps the NodePool at `target` nodes' GPUs; other limits (cpu, memory) are kept. */
export function nodePoolLimitsPatch(group: GPUNodeGroup, target: number): { spec: { limits: Record<string, string> } } {
  return { spec: { limits: { [GPU_RESOURCE]: String(target * group.spec.gpusPerNode) } } };
}

export class KarpenterProvider implements NodeGroupProvider {
  readonly name = "karpenter";
  readonly resumable = true;
  constructor(private readonly client: KubeClient) {}

  async apply(change: NodeGroupChange): Promise<string> {
    const pool = change.group.spec.provider.karpenter?.nodePool;
    if (!pool) throw new Error("spec.provider.karpenter.nodePool is not set");
    const patch = nodePoolLimitsPatch(change.group, change.target);
    await this.client.mergePatch(NODEPOOL, { name: pool }, patch);
    for (const name of change.remove) await this.client.delete(R.Node, undefined, name).catch(ignoreNotFound);
    const removed = change.remove.length > 0 ? `; deleted ${change.remove.join(", ")} (Karpenter terminates them)` : "";
    return `NodePool ${pool}: limits.${GPU_RESOURCE}=${patch.spec.limits[GPU_RESOURCE]}${removed}`;
  }
}
