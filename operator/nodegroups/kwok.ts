// The kwok provider: GPU nodes are Node objects kwok manages (annotation kwok.x-k8s.io/node=fake),
// shaped by kwok-node.ts, labelled with the group. Removal: the actuator has cordoned and drained
// the node (drain.ts); here it is deleted.
import type { V1Node } from "@kubernetes/client-node";
import type { GPUNodeGroup } from "../api.ts";
import { NODE_GROUP_LABEL } from "../../crds/schema/nodegroup.ts";
import { ignoreNotFound, type KubeClient } from "../../lib/kube/client.ts";
import { R } from "../../lib/kube/resources.ts";
import { kwokGpuNode } from "./kwok-node.ts";
import { NODEGROUP_MANAGER, type NodeGroupChange, type NodeGroupProvider } from "./provider.ts";

export function kwokNodeFor(group: GPUNodeGroup, name: string): V1Node {
  const taints = (group.spec.taints ?? []).map((t) => ({ key: t.key, value: t.value, effect: t.effect }));
  return kwokGpuNode(name, {
    gpus: group.spec.gpusPerNode,
    gpuProduct: group.spec.gpuType,
    labels: { ...group.spec.nodeLabels, [NODE_GROUP_LABEL]: group.metadata?.name ?? "" },
    taints,
  });
}

export class KwokProvider implements NodeGroupProvider {
  readonly name = "kwok";
  readonly resumable = true;
  constructor(private readonly client: KubeClient) {}

  async apply(change: NodeGroupChange): Promise<string> {
    for (const name of change.create) await this.client.create(R.Node, kwokNodeFor(change.group, name), NODEGROUP_MANAGER);
    for (const name of change.remove) await this.client.delete(R.Node, undefined, name).catch(ignoreNotFound);
    return `created ${change.create.length} and deleted ${change.remove.length} kwok nodes`;
  }
}
