// Idle GPUs already paid for. A node group is billed by the node, and its size follows the GPU
// demand of the pools placed on it (ceil(demand / gpusPerNode), at least nodes.min): the GPUs a
// pool's own recommendation leaves free on the nodes that recommendation needs anyway cost
// nothing more to use. A prefill pool takes them as headroom (bursts, and load that rises before a
// replica ordered now could arrive), and gives them back with the replicas it needs, so a node
// still empties when the recommendation no longer needs it. Pure: the caller says what the group
// holds.
import type { NodeGroupRoom } from "./types.ts";

/** Replicas the pool can hold at no more node cost than `desired` needs: `desired` raised to the GPUs free on those nodes, within `max`. */
export function replicasOnPaidNodes(desired: number, max: number, g: NodeGroupRoom): number {
  if (desired < 1 || g.gpusPerReplica <= 0 || g.gpusPerNode <= 0) return desired;
  const nodes = Math.max(g.minNodes, Math.ceil((g.otherDemand + desired * g.gpusPerReplica) / g.gpusPerNode));
  // Only ready GPUs: a replica placed on a node still provisioning would order nothing, but would
  // wait there beside the ones the recommendation itself needs.
  const room = Math.min(nodes * g.gpusPerNode, g.readyGpus) - g.otherDemand;
  return Math.max(desired, Math.min(max, Math.floor(room / g.gpusPerReplica)));
}
