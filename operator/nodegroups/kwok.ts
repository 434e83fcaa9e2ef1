// The kwok provider: GPU nodes are Node objects kwok manages (annotation kwok.x-k8s.io/node=fake),
// shaped as scripts/cluster/kwok-nodes.ts makes them, labelled with the group. Removal cordons the
// node, deletes its pods (their controllers recreate them elsewhere), then deletes the node.
import type { V1Node, V1Pod } from "@kubernetes/client-node";
import type { GPUNodeGroup } from "../api.ts";
import { NODE_GROUP_LABEL } from "../../crds/schema/nodegroup.ts";
import { isNotFound, type KubeClient } from "../kube/client.ts";
import { R } from "../kube/resources.ts";
import { kwokGpuNode } from "../../scripts/cluster/kwok-nodes.ts";
import { fieldManager } from "../runtime/apply.ts";

export const NODEGROUP_MANAGER = fieldManager("nodegroups");

export function kwokNodeFor(group: GPUNodeGroup, name: string): V1Node {
  const taints = (group.spec.taints ?? []).map((t) => ({ key: t.key, value: t.value, effect: t.effect }));
  return kwokGpuNode(name, {
    gpus: group.spec.gpusPerNode,
    gpuProduct: group.spec.gpuType,
    labels: { ...group.spec.nodeLabels, [NODE_GROUP_LABEL]: group.metadata?.name ?? "" },
    taints,
  });
}

export class KwokProvider {
  constructor(private readonly client: KubeClient) {}

  async create(group: GPUNodeGroup, name: string): Promise<void> {
    await this.client.create(R.Node, kwokNodeFor(group, name), NODEGROUP_MANAGER);
  }

  /** Cordon, drain, delete. Returns once the node is gone. */
  async remove(name: string): Promise<void> {
    await this.client.mergePatch(R.Node, { name }, { spec: { unschedulable: true } });
    const pods = await this.client.list<V1Pod>(R.Pod, {});
    for (const p of pods.items.filter((pod) => pod.spec?.nodeName === name)) {
      await this.client.delete(R.Pod, p.metadata?.namespace, p.metadata?.name ?? "").catch(ignoreNotFound);
    }
    await this.client.delete(R.Node, undefined, name).catch(ignoreNotFound);
  }
}

function ignoreNotFound(err: unknown): void {
  if (!isNotFound(err)) throw err;
}
