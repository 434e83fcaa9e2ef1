import { test } from "node:test";
import assert from "node:assert/strict";
import type { V1Node } from "@kubernetes/client-node";
import { aDecodePool, aModel, aNodeGroup, aPrefillPool, NOW } from "../../testing/builders.ts";
import { explainSize, gpuDemand, planGPUNodeGroup, sizeNodeGroup } from "./nodegroup.ts";

function node(name: string, group: string, ready: boolean, gpus = 8): V1Node {
  return {
    metadata: { name, labels: { "serving.llmfleet.dev/node-group": group } },
    status: { allocatable: { "nvidia.com/gpu": String(gpus) }, conditions: [{ type: "Ready", status: ready ? "True" : "False" }] },
  };
}

test("GPU demand sums desired replicas × GPUs of the pools and aggregated models on the group", () => {
  const pf = aPrefillPool();
  pf.spec.nodeGroupRef = { name: "h100" };
  pf.spec.replicas = { min: 1, max: 8, desired: 3 };
  pf.spec.gpusPerReplica = 2;
  const dc = aDecodePool();
  dc.spec.nodeGroupRef = { name: "h100" };
  const elsewhere = aDecodePool("x");
  elsewhere.spec.nodeGroupRef = { name: "a100" };
  const model = aModel();
  model.spec.replicas = { min: 2, max: 2 };
  model.spec.placement = { gpusPerReplica: 1, nodeGroupRef: { name: "h100" } };
  assert.equal(gpuDemand("h100", [pf, dc, elsewhere], [model]), 3 * 2 + 1 + 2);
});

test("desired nodes cover the demand within min and max; status counts ready nodes and GPUs", () => {
  const cases: Array<{ demand: number; min: number; max: number; want: number }> = [
    { demand: 0, min: 0, max: 4, want: 0 },
    { demand: 0, min: 1, max: 4, want: 1 },
    { demand: 9, min: 0, max: 4, want: 2 },
    { demand: 100, min: 0, max: 4, want: 4 },
  ];
  for (const c of cases) {
    const group = aNodeGroup("h100");
    group.spec.nodes = { min: c.min, max: c.max };
    const pool = aPrefillPool();
    pool.spec.nodeGroupRef = { name: "h100" };
    pool.spec.replicas = { min: 0, max: 1000, desired: c.demand };
    const plan = planGPUNodeGroup(group, {
      nodes: [node("a", "h100", true), node("b", "h100", false), node("c", "other", true)],
      pools: [pool],
      models: [],
      now: NOW,
    });
    assert.equal(plan.status.desiredNodes, c.want, JSON.stringify(c));
    assert.equal(plan.status.readyNodes, 1);
    assert.equal(plan.status.provisioningNodes, 1);
    assert.equal(plan.status.gpuCapacity, 8);
    assert.equal(plan.status.gpuDemand, c.demand);
  }
});

test("sizeNodeGroup: ceil(demand / gpusPerNode) + headroom, within min and max", () => {
  const cases: Array<{ name: string; demand: number; perNode: number; min: number; max: number; headroom?: number; need: number; want: number }> = [
    { name: "no demand, no floor", demand: 0, perNode: 8, min: 0, max: 4, need: 0, want: 0 },
    { name: "no demand, min floor", demand: 0, perNode: 8, min: 1, max: 4, need: 0, want: 1 },
    { name: "partial node rounds up", demand: 9, perNode: 8, min: 0, max: 4, need: 2, want: 2 },
    { name: "exact fit", demand: 16, perNode: 8, min: 0, max: 4, need: 2, want: 2 },
    { name: "headroom on top of the need", demand: 9, perNode: 8, min: 0, max: 4, headroom: 1, need: 2, want: 3 },
    { name: "headroom alone above min", demand: 0, perNode: 8, min: 1, max: 4, headroom: 2, need: 0, want: 2 },
    { name: "headroom inside min", demand: 0, perNode: 8, min: 3, max: 4, headroom: 1, need: 0, want: 3 },
    { name: "headroom capped by max", demand: 32, perNode: 8, min: 0, max: 4, headroom: 2, need: 4, want: 4 },
    { name: "demand capped by max", demand: 100, perNode: 8, min: 0, max: 4, need: 13, want: 4 },
  ];
  for (const c of cases) {
    const group = aNodeGroup("h100");
    group.spec.gpusPerNode = c.perNode;
    group.spec.nodes = { min: c.min, max: c.max };
    if (c.headroom !== undefined) group.spec.headroom = c.headroom;
    const pool = aPrefillPool();
    pool.spec.nodeGroupRef = { name: "h100" };
    pool.spec.gpusPerReplica = 1;
    pool.spec.replicas = { min: 0, max: 1000, desired: c.demand };
    const size = sizeNodeGroup(group, { pools: [pool], models: [] });
    assert.deepEqual(size, { demand: c.demand, need: c.need, headroom: c.headroom ?? 0, desired: c.want }, c.name);
    assert.equal(planGPUNodeGroup(group, { nodes: [], pools: [pool], models: [], now: NOW }).status.desiredNodes, c.want, c.name);
  }
});

test("explainSize spells out the figure", () => {
  const group = aNodeGroup("h100");
  group.spec.gpusPerNode = 2;
  group.spec.nodes = { min: 1, max: 4 };
  assert.equal(explainSize(group, { demand: 5, need: 3, headroom: 1, desired: 4 }), "GPU demand 5 / 2 per node = 3 + headroom 1, within [1, 4] = 4");
});
