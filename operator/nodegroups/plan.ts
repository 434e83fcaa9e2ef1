// Which nodes a GPUNodeGroup adds or removes, pure. How many it should have is sizeNodeGroup's
// answer (operator/plan/nodegroup.ts), the same figure the group's status reports.
import type { V1Node } from "@kubernetes/client-node";
import type { GPUNodeGroup } from "../api.ts";
import { membersOf, type NodeGroupSize } from "../plan/nodegroup.ts";

export interface NodeGroupActions {
  desired: number;
  create: string[];
  /** Unneeded for the scale-down delay: cordon, drain, then delete. */
  remove: string[];
}

export interface NodeWorld {
  nodes: V1Node[];
  size: NodeGroupSize;
  /** Seconds the group has had more nodes than desired (0 when not). */
  surplusForSeconds: number;
  scaleDownDelaySeconds: number;
}

function freeNames(group: string, taken: Set<string>, count: number): string[] {
  const out: string[] = [];
  for (let i = 0; out.length < count; i++) if (!taken.has(`${group}-${i}`)) out.push(`${group}-${i}`);
  return out;
}

export function planNodeGroupActions(group: GPUNodeGroup, w: NodeWorld): NodeGroupActions {
  const name = group.metadata?.name ?? "";
  const members = membersOf(name, w.nodes);
  const desired = w.size.desired;
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
