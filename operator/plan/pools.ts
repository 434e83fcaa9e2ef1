// planPrefillPool / planDecodePool: pure functions from the observed world to the pool's children
// (Deployment, Service, PodDisruptionBudget) and its status. No client, no clock (now is an input).
import type { V1Deployment } from "@kubernetes/client-node";
import type { DecodePool, EnginePool, GPUNodeGroup, KVStore, Model, PoolRole, PoolStatus, PrefillPool } from "../api.ts";
import { nameOf, namespaceOf, workloadCounts, type KubeObject } from "../../lib/kube/types.ts";
import { deployment, disruptionBudget, ownerRef, service, type ChildMeta } from "./children.ts";
import { readinessConditions, setConditions, type ConditionInput, type Plan } from "./conditions.ts";
import { defaultEngineImage, enginePodTemplate, modelArgs, modelExtraArgs } from "./engine-pod.ts";
import { engineCache } from "./model-cache.ts";
import { modelDrain, modelOnGPUs } from "./runtime-args.ts";
import { childLabels, childName, KV_HANDOFF_PORT, selectorLabels, selectorString, serviceURL } from "./labels.ts";
import { kvStoreEndpoint } from "./kvstore.ts";
import { engineAccess, kvStoreClientAccess } from "./access.ts";
import { rolloutOf } from "./rollout.ts";
import { invalidSpecConditions, poolSpecProblem } from "./invalid-spec.ts";

export interface PoolWorld {
  model?: Model;
  kvStore?: KVStore;
  nodeGroup?: GPUNodeGroup;
  /** Prefill pools of the same Model (with the decode pools, they decide whether the Model is on GPUs). */
  prefillPools: PrefillPool[];
  /** Decode pools of the same Model (prefill pods hand KV state to their Services). */
  decodePools: DecodePool[];
  deployment?: V1Deployment;
  /** Image of pods without GPUs (the operator's --engine-image). */
  engineImage: string;
  /** Image of pods with GPUs (the operator's --engine-gpu-image). */
  engineGPUImage: string;
  now: string;
}

/** Replicas the pool runs: spec.replicas.desired (set through /scale), else min, within bounds. */
export function desiredReplicas(range: { min: number; max: number; desired?: number }): number {
  return Math.min(range.max, Math.max(range.min, range.desired ?? range.min));
}

export function planPrefillPool(pool: PrefillPool, world: PoolWorld): Plan<PoolStatus> {
  return planPool(pool, "prefill", world);
}

export function planDecodePool(pool: DecodePool, world: PoolWorld): Plan<PoolStatus> {
  return planPool(pool, "decode", world);
}

function missingRefs(pool: EnginePool, world: PoolWorld): string[] {
  const missing: string[] = [];
  if (!world.model) missing.push(`Model "${pool.spec.modelRef.name}"`);
  if (pool.spec.kvStoreRef && !world.kvStore) missing.push(`KVStore "${pool.spec.kvStoreRef.name}"`);
  if (pool.spec.nodeGroupRef && !world.nodeGroup) missing.push(`GPUNodeGroup "${pool.spec.nodeGroupRef.name}"`);
  return missing;
}

export function planPool(pool: EnginePool, role: PoolRole, world: PoolWorld): Plan<PoolStatus> {
  const name = nameOf(pool);
  const desired = desiredReplicas(pool.spec.replicas);
  const base: PoolStatus = { selector: selectorString(selectorLabels(name, role)), desiredReplicas: desired, serviceName: childName(name, role) };
  const missing = missingRefs(pool, world);
  if (missing.length > 0 || !world.model) {
    const message = `${missing.join(", ")} not found in namespace ${namespaceOf(pool)}; the pool is reconciled as soon as it exists.`;
    const reason = world.model ? "ReferenceNotFound" : "ModelNotFound";
    return { children: [], status: poolStatus(pool, { ...base, replicas: 0, readyReplicas: 0 }, refConditions(reason, message), world.now) };
  }
  const fields = { ...base, ...workloadCounts(world.deployment) };
  const invalid = poolSpecProblem(pool, world.model, world.nodeGroup);
  if (invalid) return { children: [], status: poolStatus(pool, fields, invalidSpecConditions(invalid), world.now), invalid };
  const conditions = readinessConditions(rolloutOf(world.deployment, desired, "Deployment"));
  return { children: poolChildren(pool, role, world.model, world), status: poolStatus(pool, fields, conditions, world.now) };
}

function poolChildren(pool: EnginePool, role: PoolRole, model: Model, world: PoolWorld): KubeObject[] {
  const name = nameOf(pool);
  const meta: ChildMeta = {
    name: childName(name, role),
    namespace: namespaceOf(pool),
    labels: childLabels(name, role, nameOf(model)),
    selector: selectorLabels(name, role),
    owner: ownerRef(pool),
  };
  const cpu = pool.spec.resources?.cpu ?? "2";
  const gpus = pool.spec.gpusPerReplica;
  const onGPUs = modelOnGPUs(model, [pool, ...world.prefillPools, ...world.decodePools]);
  const fleet = engineAccess(model, role);
  const store = kvStoreClientAccess(model, world.kvStore, role);
  const access = { args: [...fleet.args, ...store.args], volumes: [...fleet.volumes, ...store.volumes], mounts: [...fleet.mounts, ...store.mounts] };
  const image = pool.spec.image ?? model.spec.runtime?.image ?? defaultEngineImage(world, gpus);
  const template = enginePodTemplate({
    labels: meta.labels,
    role,
    image,
    modelCache: engineCache(model, image),
    args: [...modelArgs(model, { cpu, gpus, modelOnGPUs: onGPUs }), ...wiringArgs(role, world, namespaceOf(pool)), ...access.args, ...modelExtraArgs(model)],
    volumes: access.volumes,
    mounts: access.mounts,
    gpus,
    cpu,
    memory: pool.spec.resources?.memory ?? "8Gi",
    nodeGroup: world.nodeGroup,
    drain: modelDrain(model, onGPUs),
  });
  // Decode pools: prefill pods stream KV states to the Service's kv port (engine --kv-port).
  const extraPorts = role === "decode" ? [{ name: "kv", port: KV_HANDOFF_PORT }] : [];
  return [deployment(meta, desiredReplicas(pool.spec.replicas), template), service(meta, { extraPorts }), disruptionBudget(meta)];
}

/** Prefill pods know the decode Services and the KV store; decode pods know the KV store. */
function wiringArgs(role: PoolRole, world: PoolWorld, namespace: string): string[] {
  const args: string[] = [];
  if (role === "prefill") {
    const decode = decodeServiceURLs(world.decodePools, namespace);
    if (decode.length > 0) args.push("--decode", decode.join(","));
  }
  if (world.kvStore) args.push("--kv-store", kvStoreEndpoint(world.kvStore));
  return args;
}

export function decodeServiceURLs(pools: DecodePool[], namespace: string): string[] {
  return pools
    .map((p) => p.metadata?.name ?? "")
    .sort()
    .map((n) => serviceURL(childName(n, "decode"), namespace));
}

function refConditions(reason: string, message: string): ConditionInput[] {
  return [
    { type: "ReferencesResolved", status: "False", reason, message },
    { type: "Ready", status: "False", reason, message },
  ];
}

function poolStatus(pool: EnginePool, fields: PoolStatus, conditions: ConditionInput[], now: string): PoolStatus {
  const generation = pool.metadata?.generation;
  return {
    ...fields,
    ...(pool.status?.metrics ? { metrics: pool.status.metrics } : {}),
    observedGeneration: generation,
    conditions: setConditions(pool.status?.conditions, conditions, generation, now),
  };
}
