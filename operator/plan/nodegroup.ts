// GPUNodeGroup planning, pure. sizeNodeGroup is the one answer to "how many nodes should this group
// have": the status reconciler reports it (planGPUNodeGroup) and the actuator acts on it
// (operator/nodegroups/plan.ts), so the two never disagree. DESIGN: sum the GPU demand of the
// pools placed on the group, add headroom for the provisioning lead time, stay within min/max.
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

/**
 * Condition types the status reconciler writes. It applies only these: others in the list (the
 * actuator's DrainBlocked) belong to another field manager, and copying them would take them over.
 */
export const STATUS_CONDITIONS = ["Ready"];

/** How many nodes a group should have, and the figures that make it up. */
export interface NodeGroupSize {
  /** nvidia.com/gpu the pools and aggregated models placed on the group want. */
  demand: number;
  /** Nodes that demand fills: ceil(demand / gpusPerNode). */
  need: number;
  /** Spare nodes for the provisioning lead time (spec.headroom). */
  headroom: number;
  /** need + headroom, within nodes.min..max. */
  desired: number;
}

function isReady(node: V1Node): boolean {
  return node.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") === true && !node.spec?.unschedulable;
}

export function membersOf(group: string, nodes: V1Node[]): V1Node[] {
  return nodes.filter((n) => n.metadata?.labels?.[NODE_GROUP_LABEL] === group);
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

export function sizeNodeGroup(group: GPUNodeGroup, w: Pick<NodeGroupWorld, "pools" | "models">): NodeGroupSize {
  const demand = gpuDemand(group.metadata?.name ?? "", w.pools, w.models);
  const need = Math.ceil(demand / group.spec.gpusPerNode);
  const headroom = group.spec.headroom ?? 0;
  const { min, max } = group.spec.nodes;
  return { demand, need, headroom, desired: Math.min(max, Math.max(min, need + headroom)) };
}

/** The size as a sentence, e.g. "GPU demand 5 / 2 per node = 3 + headroom 1, within [1, 4] = 4". */
export function explainSize(group: GPUNodeGroup, s: NodeGroupSize): string {
  const { min, max } = group.spec.nodes;
  return `GPU demand ${s.demand} / ${group.spec.gpusPerNode} per node = ${s.need} + headroom ${s.headroom}, within [${min}, ${max}] = ${s.desired}`;
}

export function planGPUNodeGroup(group: GPUNodeGroup, world: NodeGroupWorld): Plan<GPUNodeGroupStatus> {
  const members = membersOf(group.metadata?.name ?? "", world.nodes);
  const ready = members.filter(isReady);
  const gpuCapacity = ready.reduce((sum, n) => sum + Number(n.status?.allocatable?.[GPU_RESOURCE] ?? 0), 0);
  const size = sizeNodeGroup(group, world);
  const enough = ready.length >= size.desired;
  const conditions: ConditionInput[] = [
    {
      type: "Ready",
      status: enough ? "True" : "False",
      reason: enough ? "NodesReady" : "WaitingForNodes",
      message: `${ready.length}/${size.desired} nodes ready; ${gpuCapacity} GPUs. ${explainSize(group, size)}.`,
    },
  ];
  const generation = group.metadata?.generation;
  const own = group.status?.conditions?.filter((c) => STATUS_CONDITIONS.includes(c.type));
  return {
    children: [],
    status: {
      observedGeneration: generation,
      desiredNodes: size.desired,
      readyNodes: ready.length,
      provisioningNodes: members.length - ready.length,
      gpuCapacity,
      gpuDemand: size.demand,
      conditions: setConditions(own, conditions, generation, world.now),
    },
  };
}
