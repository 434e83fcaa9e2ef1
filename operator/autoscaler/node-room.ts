// Idle GPUs already paid for. A node group is billed by the node, and its size follows the GPU
// demand of the pools placed on it (ceil(demand / gpusPerNode), at least nodes.min): the GPUs a
// pool's own recommendation leaves free on the nodes that recommendation needs anyway cost
// nothing more to use. A prefill pool takes them as headroom (bursts, and load that rises before a
// replica ordered now could arrive), and gives them back with the replicas it needs, so a node
// still empties when the recommendation no longer needs it. Pure: the caller says what the group
// holds.
import type { EnginePool, Model, PoolRole } from "../api.ts";
import { nameOf } from "../../lib/kube/types.ts";
import { gpuDemand } from "../plan/nodegroup.ts";
import { desiredReplicas } from "../plan/pools.ts";
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

/** The pools and aggregated Models of one namespace, as the caches hold them. */
export interface GroupWorld {
  prefillPools: EnginePool[];
  decodePools: EnginePool[];
  models: Model[];
}

/**
 * GPUs the pools on node group `group` want: every pool and aggregated Model placed there at its
 * desired replicas (the group's status.gpuDemand trails the scales made since it was written),
 * `pool` counted once at the desired count the recommender is given, plus `claimed`, what scales
 * of this pass have added that the caches may not show yet.
 */
export function demandOnGroup(group: string, self: { pool: EnginePool; role: PoolRole }, world: GroupWorld, claimed = 0): number {
  const notSelf = (role: PoolRole) => (p: EnginePool): boolean => self.role !== role || nameOf(p) !== nameOf(self.pool);
  const others = [...world.prefillPools.filter(notSelf("prefill")), ...world.decodePools.filter(notSelf("decode"))];
  const own = self.pool.spec.nodeGroupRef?.name === group ? desiredReplicas(self.pool.spec.replicas) * (self.pool.spec.gpusPerReplica ?? 1) : 0;
  return gpuDemand(group, others, world.models) + own + claimed;
}
