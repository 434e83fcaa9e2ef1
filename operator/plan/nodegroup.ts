// planGPUNodeGroup: status only for now: the group's nodes (by label), their GPUs, and the GPU
// demand of the pools placed on it. Actuation (adding and removing nodes) is the autoscaler's.
import type { V1Node } from "@kubernetes/client-node";
import type { EnginePool, GPUNodeGroup, GPUNodeGroupStatus, Model } from "../api.ts";
import { NODE_GROUP_LABEL } from "../../crds/schema/nodegroup.ts";
import { setConditions, type ConditionInput, type Plan } from "./conditions.ts";
import { GPU_RESOURCE } from "./engine-pod.ts";
import { desiredReplicas } from "./pools.ts";

export interface NodeGroupWorld {
  nodes: V1Node[];
  pools: EnginePool[];
  models: Model[];
  now: string;
}

function isReady(node: V1Node): boolean {
  return node.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") === true && !node.spec?.unschedulable;
}

/** GPUs the pools and aggregated models placed on the group want at their desired replicas. */
export function gpuDemand(groupName: string, pools: EnginePool[], models: Model[]): number {
  let demand = 0;
  for (const p of pools) {
    if (p.spec.nodeGroupRef?.name === groupName) demand += desiredReplicas(p.spec.replicas) * p.spec.gpusPerReplica;
  }
  for (const m of models) {
    const placement = m.spec.placement;
    if (m.spec.replicas && placement?.nodeGroupRef?.name === groupName) demand += desiredReplicas(m.spec.replicas) * placement.gpusPerReplica;
  }
  return demand;
}

export function planGPUNodeGroup(group: GPUNodeGroup, world: NodeGroupWorld): Plan<GPUNodeGroupStatus> {
  const name = group.metadata?.name ?? "";
  const members = world.nodes.filter((n) => n.metadata?.labels?.[NODE_GROUP_LABEL] === name);
  const ready = members.filter(isReady);
  const gpuCapacity = ready.reduce((sum, n) => sum + Number(n.status?.allocatable?.[GPU_RESOURCE] ?? 0), 0);
  const demand = gpuDemand(name, world.pools, world.models);
  const { min, max } = group.spec.nodes;
  const desiredNodes = Math.min(max, Math.max(min, Math.ceil(demand / group.spec.gpusPerNode)));
  const enough = ready.length >= desiredNodes;
  const conditions: ConditionInput[] = [
    {
      type: "Ready",
      status: enough ? "True" : "False",
      reason: enough ? "NodesReady" : "WaitingForNodes",
      message: `${ready.length}/${desiredNodes} nodes ready; ${gpuCapacity} GPUs for a demand of ${demand}.`,
    },
  ];
  const generation = group.metadata?.generation;
  return {
    children: [],
    status: {
      observedGeneration: generation,
      desiredNodes,
      readyNodes: ready.length,
      provisioningNodes: members.length - ready.length,
      gpuCapacity,
      gpuDemand: demand,
      conditions: setConditions(group.status?.conditions, conditions, generation, world.now),
    },
  };
}
