import { test } from "node:test";
import assert from "node:assert/strict";
import type { V1Node } from "@kubernetes/client-node";
import type { EnginePool, GPUNodeGroup } from "../api.ts";
import { planNodeGroupActions } from "./plan.ts";

const group = { metadata: { name: "h100" }, spec: { provider: { kind: "kwok" }, gpusPerNode: 2, nodes: { min: 1, max: 4 } } } as unknown as GPUNodeGroup;
const pool = (desired: number): EnginePool =>
  ({ spec: { nodeGroupRef: { name: "h100" }, gpusPerReplica: 1, replicas: { min: 0, max: 10, desired } } }) as unknown as EnginePool;
const node = (name: string): V1Node => ({ metadata: { name, labels: { "serving.llmfleet.dev/node-group": "h100" } } });
const world = { models: [], headroom: 0, surplusForSeconds: 0, scaleDownDelaySeconds: 600 };

test("planNodeGroupActions: ceil(demand / gpusPerNode) + headroom within min/max; removal only after the delay", () => {
  assert.deepEqual(planNodeGroupActions(group, { ...world, nodes: [node("h100-0")], pools: [pool(5)] }), {
    desired: 3,
    create: ["h100-1", "h100-2"],
    remove: [],
  });
  assert.equal(planNodeGroupActions(group, { ...world, nodes: [], pools: [pool(50)] }).desired, 4, "max");
  assert.equal(planNodeGroupActions(group, { ...world, nodes: [], pools: [], headroom: 2 }).desired, 2, "headroom over min");
  const three = [node("h100-0"), node("h100-1"), node("h100-2")];
  assert.deepEqual(planNodeGroupActions(group, { ...world, nodes: three, pools: [pool(1)] }).remove, [], "inside the delay");
  assert.deepEqual(planNodeGroupActions(group, { ...world, nodes: three, pools: [pool(1)], surplusForSeconds: 600 }).remove, ["h100-2", "h100-1"]);
});
