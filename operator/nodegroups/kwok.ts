// The kwok provider: GPU nodes are Node objects kwok manages (annotation kwok.x-k8s.io/node=fake),
// shaped by kwok-node.ts, labelled with the group. Removal: the
// actuator has cordoned and drained the node (drain.ts); here it is deleted.
import type { V1Node, V1Pod } from "@kubernetes/client-node";
import type { GPUNodeGroup } from "../api.ts";
import { NODE_GROUP_LABEL } from "../../crds/schema/nodegroup.ts";
import { isNotFound, type KubeClient } from "../kube/client.ts";
import { R } from "../kube/resources.ts";
import { fieldManager } from "../runtime/apply.ts";
import { kwokGpuNode } from "./kwok-node.ts";
import type { NodeGroupChange, NodeGroupProvider } from "./provider.ts";

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

export function ignoreNotFound(err: unknown): void {
  if (!isNotFound(err)) throw err;
}

/** Cordons the node and deletes its pods (their controllers recreate them elsewhere). */
export async function cordonAndDrain(client: KubeClient, name: string): Promise<void> {
  await client.mergePatch(R.Node, { name }, { spec: { unschedulable: true } }).catch(ignoreNotFound);
  const pods = await client.list<V1Pod>(R.Pod, {});
  for (const p of pods.items.filter((pod) => pod.spec?.nodeName === name)) {
    await client.delete(R.Pod, p.metadata?.namespace, p.metadata?.name ?? "").catch(ignoreNotFound);
  }
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
