import { test } from "node:test";
import assert from "node:assert/strict";
import type { V1Node } from "@kubernetes/client-node";
import { aNodeGroup, aPrefillPool, NOW } from "../../testing/builders.ts";
import { planGPUNodeGroup, sizeNodeGroup, type NodeGroupSize } from "../plan/nodegroup.ts";
import { planNodeGroupActions } from "./plan.ts";

const group = aNodeGroup("h100");
group.spec.gpusPerNode = 2;
group.spec.nodes = { min: 1, max: 4 };
const node = (name: string, cordoned = false): V1Node => ({
  metadata: { name, labels: { "serving.llmfleet.dev/node-group": "h100" } },
  spec: { unschedulable: cordoned },
});
const size = (desired: number): NodeGroupSize => ({ demand: 0, need: desired, headroom: 0, desired });
const world = { surplusForSeconds: 0, scaleDownDelaySeconds: 600 };

test("planNodeGroupActions: free names up to the desired size; surplus removed only after the delay, cordoned nodes first", () => {
  const cases: Array<{ name: string; nodes: V1Node[]; desired: number; surplusFor?: number; create: string[]; remove: string[] }> = [
    { name: "grows into free names", nodes: [node("h100-1")], desired: 3, create: ["h100-0", "h100-2"], remove: [] },
    { name: "steady", nodes: [node("h100-0")], desired: 1, create: [], remove: [] },
    { name: "surplus inside the delay", nodes: [node("h100-0"), node("h100-1"), node("h100-2")], desired: 1, create: [], remove: [] },
    { name: "newest go first", nodes: [node("h100-0"), node("h100-1"), node("h100-2")], desired: 1, surplusFor: 600, create: [], remove: ["h100-2", "h100-1"] },
    {
      name: "a cordoned node goes first",
      nodes: [node("h100-0", true), node("h100-1"), node("h100-2")],
      desired: 2,
      surplusFor: 600,
      create: [],
      remove: ["h100-0"],
    },
  ];
  for (const c of cases) {
    const actions = planNodeGroupActions(group, { ...world, nodes: c.nodes, size: size(c.desired), surplusForSeconds: c.surplusFor ?? 0 });
    assert.deepEqual(actions, { desired: c.desired, create: c.create, remove: c.remove }, c.name);
  }
});

test("status and actuation agree on desired nodes, headroom included", () => {
  for (const headroom of [0, 1, 5]) {
    const g = structuredClone(group);
    g.spec.headroom = headroom;
    const pool = aPrefillPool();
    pool.spec.nodeGroupRef = { name: "h100" };
    pool.spec.gpusPerReplica = 1;
    pool.spec.replicas = { min: 0, max: 10, desired: 3 };
    const w = { nodes: [node("h100-0")], pools: [pool], models: [] };
    const status = planGPUNodeGroup(g, { ...w, now: NOW }).status;
    const actions = planNodeGroupActions(g, { ...world, nodes: w.nodes, size: sizeNodeGroup(g, w) });
    assert.equal(status.desiredNodes, actions.desired, `headroom ${headroom}`);
    assert.equal(actions.desired, Math.min(4, 2 + headroom), `headroom ${headroom}`);
  }
});
