// How many nodes a GPUNodeGroup should have and which to add or remove: pure. Demand comes from
// operator/plan/nodegroup.ts (gpuDemand), the same figure the group's status reports.
import type { V1Node } from "@kubernetes/client-node";
import type { EnginePool, GPUNodeGroup, Model } from "../api.ts";
import { NODE_GROUP_LABEL } from "../../crds/schema/nodegroup.ts";
import { gpuDemand } from "../plan/nodegroup.ts";

export interface NodeGroupActions {
  desired: number;
  create: string[];
  /** Unneeded for the scale-down delay: cordon, drain, then delete. */
  remove: string[];
}

export interface NodeWorld {
  nodes: V1Node[];
  pools: EnginePool[];
  models: Model[];
  /** Extra nodes kept for the provisioning lead time. */
  headroom: number;
  /** Seconds the group has had more nodes than desired (0 when not). */
  surplusForSeconds: number;
  scaleDownDelaySeconds: number;
}

export function membersOf(group: string, nodes: V1Node[]): V1Node[] {
  return nodes.filter((n) => n.metadata?.labels?.[NODE_GROUP_LABEL] === group);
}

export function desiredNodes(group: GPUNodeGroup, w: Pick<NodeWorld, "pools" | "models" | "headroom">): number {
  const name = group.metadata?.name ?? "";
  const need = Math.ceil(gpuDemand(name, w.pools, w.models) / group.spec.gpusPerNode) + w.headroom;
  return Math.min(group.spec.nodes.max, Math.max(group.spec.nodes.min, need));
}

function freeNames(group: string, taken: Set<string>, count: number): string[] {
  const out: string[] = [];
  for (let i = 0; out.length < count; i++) if (!taken.has(`${group}-${i}`)) out.push(`${group}-${i}`);
  return out;
}

export function planNodeGroupActions(group: GPUNodeGroup, w: NodeWorld): NodeGroupActions {
  const name = group.metadata?.name ?? "";
  const members = membersOf(name, w.nodes);
  const desired = desiredNodes(group, w);
  if (members.length < desired) {
    return { desired, create: freeNames(name, new Set(members.map((n) => n.metadata?.name ?? "")), desired - members.length), remove: [] };
  }
  if (members.length === desired || w.surplusForSeconds < w.scaleDownDelaySeconds) return { desired, create: [], remove: [] };
  // Cordoned nodes first (a drain already under way), then the newest.
  const order = [...members].sort(
    (a, b) => Number(Boolean(b.spec?.unschedulable)) - Number(Boolean(a.spec?.unschedulable)) || (b.metadata?.name ?? "").localeCompare(a.metadata?.name ?? ""),
  );
  return { desired, create: [], remove: order.slice(0, members.length - desired).map((n) => n.metadata?.name ?? "") };
}
