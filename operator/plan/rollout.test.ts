import { test } from "node:test";
import assert from "node:assert/strict";
import type { V1Deployment, V1StatefulSet } from "@kubernetes/client-node";
import { aKVStore, aPrefillPool, aModel, NOW } from "../../testing/builders.ts";
import { findCondition } from "./conditions.ts";
import { planKVStore } from "./kvstore.ts";
import { planModel } from "./model.ts";
import { planPrefillPool } from "./pools.ts";
import { rolloutOf, type WorkloadView } from "./rollout.ts";

/** A workload at `generation` whose controller has seen `observed`, with replicas / updated / ready. */
function workload(generation: number, observed: number, [replicas, updated, ready]: [number, number, number]): V1Deployment & V1StatefulSet {
  return { metadata: { generation }, status: { observedGeneration: observed, replicas, updatedReplicas: updated, readyReplicas: ready } };
}

test("a rollout is complete only as kubectl rollout status judges it", () => {
  const cases: Array<[string, WorkloadView | undefined, number, boolean, string]> = [
    ["fresh: not created yet", undefined, 3, false, "the Deployment is not created yet"],
    [
      "fresh: created, its controller not yet run",
      { metadata: { generation: 1 } },
      3,
      false,
      "waiting for the Deployment controller to observe generation 1 (it has seen 0)",
    ],
    ["fresh: pods created, none ready", workload(1, 1, [3, 3, 0]), 3, false, "0 of 3 updated replicas ready"],
    [
      "stale observedGeneration: a new template not yet seen, old pods all ready",
      workload(2, 1, [3, 3, 3]),
      3,
      false,
      "waiting for the Deployment controller to observe generation 2 (it has seen 1)",
    ],
    ["mid-rollout: 2 of 3 new pods, every pod ready", workload(2, 2, [4, 2, 4]), 3, false, "2 of 3 replicas updated"],
    ["mid-rollout: all new pods up, an old one still running", workload(2, 2, [4, 3, 4]), 3, false, "1 old replica pending termination"],
    ["scaling down: the new pods outnumber what is wanted", workload(3, 3, [3, 3, 3]), 2, false, "scaling down from 3 to 2 replicas"],
    ["scaling up: wanted more than the workload has", workload(3, 3, [2, 2, 2]), 3, false, "2 of 3 replicas updated"],
    ["done", workload(2, 2, [3, 3, 3]), 3, true, "3/3 replicas ready"],
    ["done, one replica", workload(5, 5, [1, 1, 1]), 1, true, "1/1 replicas ready"],
    ["scaled to zero", workload(4, 4, [0, 0, 0]), 0, true, "no replicas are wanted"],
    ["scaling to zero, a pod left", workload(4, 4, [1, 1, 1]), 0, false, "scaling down from 1 to 0 replicas"],
  ];
  for (const [what, w, desired, complete, message] of cases) {
    assert.deepEqual(rolloutOf(w, desired, "Deployment"), { complete, desired, message }, what);
  }
});

test("pools, the KV store and the Model say RollingOut mid-rollout and Ready once it is done", () => {
  const pool = aPrefillPool();
  pool.spec.replicas = { min: 1, max: 4, desired: 3 };
  const world = { model: aModel(), prefillPools: [], decodePools: [], engineImage: "e", engineGPUImage: "g", now: NOW };
  const mid = findCondition(planPrefillPool(pool, { ...world, deployment: workload(2, 2, [4, 2, 4]) }).status.conditions, "Ready");
  assert.deepEqual([mid?.status, mid?.reason, mid?.message], ["False", "RollingOut", "2 of 3 replicas updated."]);
  const done = findCondition(planPrefillPool(pool, { ...world, deployment: workload(2, 2, [3, 3, 3]) }).status.conditions, "Ready");
  assert.deepEqual([done?.status, done?.reason, done?.message], ["True", "Available", "3/3 replicas ready."]);

  const store = aKVStore();
  const sts = (w: V1StatefulSet): string | undefined =>
    findCondition(planKVStore(store, { statefulSet: w, engineImage: "e", now: NOW }).status.conditions, "Ready")?.reason;
  assert.equal(sts(workload(2, 1, [1, 1, 1])), "RollingOut", "a StatefulSet whose controller has not seen the new spec");
  assert.equal(sts(workload(2, 2, [1, 1, 1])), "Available");

  const model = aModel();
  model.spec.replicas = { min: 2, max: 4 };
  const mw = { prefillPools: [], decodePools: [], engineImage: "e", engineGPUImage: "g", now: NOW, router: workload(1, 1, [1, 1, 1]) };
  const rolling = findCondition(planModel(model, { ...mw, aggregated: workload(3, 3, [3, 1, 3]) }).status.conditions, "Ready");
  assert.deepEqual([rolling?.status, rolling?.reason], ["False", "RollingOut"]);
  assert.equal(rolling?.message, "Router: 1/1 replicas ready; aggregated: 1 of 2 replicas updated; 0 prefill and 0 decode pools.");
  const ready = findCondition(planModel(model, { ...mw, aggregated: workload(3, 3, [2, 2, 2]) }).status.conditions, "Ready");
  assert.deepEqual([ready?.status, ready?.reason], ["True", "Available"]);
});
