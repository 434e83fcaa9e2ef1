import { test } from "node:test";
import assert from "node:assert/strict";
import type { V1Node } from "@kubernetes/client-node";
import { aDecodePool, aModel, aNodeGroup, aPrefillPool, NOW } from "../testing/builders.ts";
import { gpuDemand, planGPUNodeGroup } from "./nodegroup.ts";

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
