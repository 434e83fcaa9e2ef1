import { test } from "node:test";
import assert from "node:assert/strict";
import type { EnginePool, GPUNodeGroup } from "../api.ts";
import { demandOnGroup, replicasOnPaidNodes } from "./node-room.ts";
import { recommenderSpec } from "./observe.ts";
import { recommendReplicas } from "./recommender.ts";
import type { NodeGroupRoom, PoolObservation } from "./types.ts";

const group = (over: Partial<NodeGroupRoom> = {}): NodeGroupRoom => ({ gpusPerNode: 8, readyGpus: 24, otherDemand: 0, minNodes: 1, gpusPerReplica: 1, ...over });

const cases: Array<{ name: string; desired: number; max?: number; g: NodeGroupRoom; want: number }> = [
  { name: "17 replicas need 3 nodes: the 7 GPUs they leave idle are taken", desired: 17, g: group(), want: 24 },
  { name: "16 fill 2 nodes exactly: nothing more, the third node can go", desired: 16, g: group(), want: 16 },
  { name: "only ready GPUs: 17 on 2 ready nodes (a third provisioning) stay 17", desired: 17, g: group({ readyGpus: 16 }), want: 17 },
  { name: "the group's minimum nodes are paid for anyway", desired: 2, g: group({ readyGpus: 8, minNodes: 1 }), want: 8 },
  { name: "other pools' GPUs are theirs", desired: 5, g: group({ otherDemand: 10 }), want: 6 },
  { name: "two GPUs a replica", desired: 3, g: group({ gpusPerReplica: 2, readyGpus: 8 }), want: 4 },
  { name: "within max", desired: 17, max: 20, g: group(), want: 20 },
  { name: "a pool going to zero stays at zero", desired: 0, g: group({ minNodes: 1, readyGpus: 8 }), want: 0 },
];

for (const c of cases) {
  test(`replicasOnPaidNodes: ${c.name}`, () => {
    assert.equal(replicasOnPaidNodes(c.desired, c.max ?? 128, c.g), c.want);
  });
}

const pool = (desired: number): EnginePool =>
  ({
    metadata: { name: "p", namespace: "ns" },
    spec: { modelRef: { name: "m" }, nodeGroupRef: { name: "g" }, gpusPerReplica: 1, replicas: { min: 1, max: 64, desired }, autoscaling: { mode: "slo" } },
  }) as unknown as EnginePool;
const nodeGroup = (status?: GPUNodeGroup["status"]): GPUNodeGroup =>
  ({ metadata: { name: "g", namespace: "ns" }, spec: { gpusPerNode: 8, nodes: { min: 1, max: 10 }, provisioningTime: "3m" }, status }) as unknown as GPUNodeGroup;

test("recommenderSpec: the node group's room once its status says what is ready; the caller's demand over the status'", () => {
  assert.equal(recommenderSpec({ pool: pool(10), role: "prefill", nodeGroup: nodeGroup(), modelLoadSeconds: 60 }).nodeGroup, undefined);
  const fromStatus = recommenderSpec({ pool: pool(10), role: "prefill", nodeGroup: nodeGroup({ gpuCapacity: 16, gpuDemand: 13 }), modelLoadSeconds: 60 });
  assert.deepEqual(fromStatus.nodeGroup, { gpusPerNode: 8, readyGpus: 16, otherDemand: 3, minNodes: 1, gpusPerReplica: 1 });
  const fresher = recommenderSpec({ pool: pool(10), role: "prefill", nodeGroup: nodeGroup({ gpuCapacity: 16, gpuDemand: 13 }), modelLoadSeconds: 60, groupDemand: 15 });
  assert.equal(fresher.nodeGroup?.otherDemand, 5);
});

test("recommendReplicas: a prefill pool takes the idle GPUs of the nodes it needs, and says so; the raw recommendation stays its own", () => {
  // 45k tokens/s at 15k a replica, steady for 7.5 minutes: a few replicas, one node's worth.
  const history: PoolObservation[] = Array.from({ length: 30 }, (_, i) => ({ at: i * 15, readyReplicas: 10, arrivalRate: 45000, throughput: 45000, queueDepth: 0, prefillBusySeconds: 45, prefillBusyTokens: 675000 }));
  const spec = { ...recommenderSpec({ pool: pool(10), role: "prefill", nodeGroup: nodeGroup({ gpuCapacity: 16, gpuDemand: 10 }), modelLoadSeconds: 60 }), leadTimeSeconds: 0 };
  const without = recommendReplicas(history, { ...spec, nodeGroup: undefined });
  assert.ok(without.desired < 8, String(without.desired));
  const d = recommendReplicas(history, spec);
  // Down to the one node those replicas need, all of its GPUs used: the second node can go.
  assert.equal(d.desired, 8);
  assert.match(d.reason, /more on GPUs idle on the node group's ready nodes/);
  assert.equal(d.inputs.raw, without.inputs.raw);
  assert.equal(recommendReplicas(history, { ...spec, role: "decode" }).reason.includes("idle on the node group"), false, "prefill pools only");
});

test("recommendReplicas: a pool whose load asks for nothing (no traffic, engines not yet scraped) is not raised", () => {
  // Two intervals with nothing seen: too short a history to be idle for the window, and no load either.
  const history: PoolObservation[] = [0, 15].map((at) => ({ at, readyReplicas: 2, arrivalRate: 0, throughput: 0, queueDepth: 0 }));
  const spec = { ...recommenderSpec({ pool: pool(2), role: "prefill", nodeGroup: nodeGroup({ gpuCapacity: 16, gpuDemand: 12 }), modelLoadSeconds: 60 }), leadTimeSeconds: 0 };
  const d = recommendReplicas(history, spec);
  assert.equal(d.inputs.raw, 0);
  assert.equal(d.desired, 2);
});

test("demandOnGroup: every pool on the group at its desired replicas, the pool itself once, plus what this pass claimed", () => {
  const on = (name: string, desired: number, groupName = "g", gpus = 1): EnginePool =>
    ({ metadata: { name, namespace: "ns" }, spec: { nodeGroupRef: { name: groupName }, gpusPerReplica: gpus, replicas: { min: 0, max: 64, desired } } }) as unknown as EnginePool;
  const self = on("p", 5);
  const world = { prefillPools: [on("p", 4), on("q", 3)], decodePools: [on("p", 2, "g", 2), on("elsewhere", 9, "h")], models: [] };
  // p (prefill) at the 5 the recommender is given, not the cache's 4; q 3; decode p 2 × 2 GPUs; h is another group.
  assert.equal(demandOnGroup("g", { pool: self, role: "prefill" }, world), 5 + 3 + 4);
  assert.equal(demandOnGroup("g", { pool: self, role: "prefill" }, world, 6), 18);
});
