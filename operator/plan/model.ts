// planModel: the router Deployment + Service (the fleet's OpenAI endpoint) wired to the Model's
// prefill and decode pools, and the aggregated Deployment + Service when spec.replicas is set.
import type { V1Deployment, V1Job } from "@kubernetes/client-node";
import type { DecodePool, GPUNodeGroup, Model, ModelStatus, PrefillPool } from "../api.ts";
import { nameOf, namespaceOf, workloadCounts, type KubeObject } from "../../lib/kube/types.ts";
import { deployment, disruptionBudget, ownerRef, podIdentity, service, type ChildMeta } from "./children.ts";
import { capitalize, readyCondition, RESOLVED, setConditions, type ConditionInput, type Plan } from "./conditions.ts";
import { defaultEngineImage, enginePodTemplate, modelArgs, modelExtraArgs } from "./engine-pod.ts";
import { aggregatedGPUs, modelDrain, modelOnGPUs } from "./runtime-args.ts";
import { childLabels, childName, ROUTER_SERVICE_PORT, selectorLabels, selectorString, serviceURL } from "./labels.ts";
import { decodeServiceURLs, desiredReplicas } from "./pools.ts";
import { rolloutOf } from "./rollout.ts";
import { invalidSpecConditions, modelSpecProblem } from "./invalid-spec.ts";
import { engineAccess, routerAccess, routerAccessRules } from "./access.ts";
import { cacheChildren, cacheCondition, engineCache, fillImage } from "./model-cache.ts";

export interface ModelWorld {
  prefillPools: PrefillPool[];
  decodePools: DecodePool[];
  nodeGroup?: GPUNodeGroup;
  router?: V1Deployment;
  aggregated?: V1Deployment;
  /** The fill Job of spec.cache's claim (model-cache.ts fillJobName), when it exists. */
  fillJob?: V1Job;
  /** Image of pods without GPUs (the operator's --engine-image): the router, CPU aggregated replicas. */
  engineImage: string;
  /** Image of aggregated replicas with GPUs (the operator's --engine-gpu-image). */
  engineGPUImage: string;
  now: string;
}

function meta(model: Model, component: "router" | "aggregated"): ChildMeta {
  const name = model.metadata?.name ?? "";
  return {
    name: childName(name, component),
    namespace: model.metadata?.namespace ?? "",
    labels: childLabels(name, component, name),
    selector: selectorLabels(name, component),
    owner: ownerRef(model),
  };
}

function routerArgs(model: Model, world: ModelWorld): string[] {
  const ns = model.metadata?.namespace ?? "";
  // --discover-endpoints: the router resolves the pools' Services to their pods (EndpointSlices),
  // so its policy picks a pod, not a Service behind which kube-proxy picks one per connection.
  const args = ["--policy", model.spec.routing?.policy ?? "prefix-aware", "--discover-endpoints"];
  const prefill = world.prefillPools
    .map((p) => p.metadata?.name ?? "")
    .sort()
    .map((n) => serviceURL(childName(n, "prefill"), ns));
  const decode = decodeServiceURLs(world.decodePools, ns);
  if (prefill.length > 0) args.push("--prefill", prefill.join(","));
  if (decode.length > 0) args.push("--decode", decode.join(","));
  if (model.spec.replicas) args.push("--aggregated", serviceURL(childName(model.metadata?.name ?? "", "aggregated"), ns));
  return args;
}

/**
 * The router's V8 heap cap. Its live heap holds ~50-60 MB at 1,000 client streams (256 admitted,
 * the rest answered 429); uncapped, V8 let garbage grow the heap to ~185 MB between major
 * collections and the process's RSS stayed near 300 MB (bench:scale-router). Capped, it collects
 * earlier and RSS stays within the pod's 512Mi with room for bursts.
 */
export const ROUTER_NODE_OPTIONS = "--max-old-space-size=128";

function routerChildren(model: Model, world: ModelWorld): KubeObject[] {
  const m = meta(model, "router");
  const access = routerAccess(model);
  const template = enginePodTemplate({
    labels: m.labels,
    role: "router",
    image: model.spec.runtime?.image ?? world.engineImage,
    args: [...routerArgs(model, world), "--model-uri", model.spec.source.uri, ...access.args],
    volumes: access.volumes,
    mounts: access.mounts,
    gpus: 0,
    cpu: "500m",
    memory: "512Mi",
    env: [{ name: "NODE_OPTIONS", value: ROUTER_NODE_OPTIONS }],
    serviceAccountName: m.name,
    // The router relays the streams: it waits as long as the pods behind it.
    drain: modelDrain(model, modelOnGPUs(model, [...world.prefillPools, ...world.decodePools])),
  });
  const readEndpoints = [{ apiGroups: ["discovery.k8s.io"], resources: ["endpointslices"], verbs: ["get", "list", "watch"] }, ...routerAccessRules(model)];
  return [deployment(m, routerReplicas(model), template), service(m, { port: ROUTER_SERVICE_PORT }), ...podIdentity(m, readEndpoints)];
}

function aggregatedChildren(model: Model, world: ModelWorld, replicas: number): KubeObject[] {
  const m = meta(model, "aggregated");
  const { cpu, memory } = { cpu: "2", memory: "8Gi", ...model.spec.placement };
  const gpus = aggregatedGPUs(model);
  const onGPUs = modelOnGPUs(model, [...world.prefillPools, ...world.decodePools]);
  const access = engineAccess(model, "aggregated");
  const image = model.spec.runtime?.image ?? defaultEngineImage(world, gpus);
  const template = enginePodTemplate({
    labels: m.labels,
    role: "aggregated",
    image,
    modelCache: engineCache(model, image),
    args: [...modelArgs(model, { cpu, gpus, modelOnGPUs: onGPUs }), ...access.args, ...modelExtraArgs(model)],
    volumes: access.volumes,
    mounts: access.mounts,
    gpus,
    cpu,
    memory,
    nodeGroup: world.nodeGroup,
    drain: modelDrain(model, onGPUs),
  });
  return [deployment(m, replicas, template), service(m), disruptionBudget(m)];
}

function missingNodeGroup(model: Model, world: ModelWorld): ConditionInput[] | undefined {
  const groupRef = model.spec.placement?.nodeGroupRef;
  if (!model.spec.replicas || !groupRef || world.nodeGroup) return undefined;
  const message = `GPUNodeGroup "${groupRef.name}" not found in namespace ${namespaceOf(model)}; the model is reconciled as soon as it exists.`;
  return [
    { type: "ReferencesResolved", status: "False", reason: "ReferenceNotFound", message },
    { type: "Ready", status: "False", reason: "ReferenceNotFound", message },
  ];
}

/** The router's rollout and, when the Model has aggregated replicas, theirs: Ready when both are complete. */
function modelConditions(model: Model, world: ModelWorld, desired: number): ConditionInput[] {
  const router = rolloutOf(world.router, routerReplicas(model), "Deployment");
  const aggregated = model.spec.replicas ? rolloutOf(world.aggregated, desired, "Deployment") : undefined;
  const parts = [`router: ${router.message}`, ...(aggregated ? [`aggregated: ${aggregated.message}`] : [])];
  const message = `${[...parts, `${world.prefillPools.length} prefill and ${world.decodePools.length} decode pools`].join("; ")}.`;
  const complete = router.complete && (aggregated?.complete ?? true);
  const cache = cacheCondition(model, world.fillJob);
  return [RESOLVED, readyCondition({ complete, desired: router.desired + desired, message }, capitalize(message)), ...(cache ? [cache] : [])];
}

function routerReplicas(model: Model): number {
  return model.spec.routing?.replicas ?? 1;
}

function modelStatus(model: Model, world: ModelWorld, desired: number, conditions: ConditionInput[]): ModelStatus {
  const name = nameOf(model);
  const aggregated = workloadCounts(world.aggregated);
  const generation = model.metadata?.generation;
  return {
    observedGeneration: generation,
    endpoint: serviceURL(childName(name, "router"), namespaceOf(model), ROUTER_SERVICE_PORT),
    ...aggregated,
    desiredReplicas: desired,
    routerReadyReplicas: workloadCounts(world.router).readyReplicas,
    selector: selectorString(selectorLabels(name, "aggregated")),
    ...(model.status?.ttftP90 ? { ttftP90: model.status.ttftP90 } : {}),
    conditions: setConditions(model.status?.conditions, conditions, generation, world.now),
  };
}

export function planModel(model: Model, world: ModelWorld): Plan<ModelStatus> {
  const desired = model.spec.replicas ? desiredReplicas(model.spec.replicas) : 0;
  const unresolved = missingNodeGroup(model, world);
  if (unresolved) return { children: [], status: modelStatus(model, world, desired, unresolved) };
  const invalid = modelSpecProblem(model, world.nodeGroup);
  if (invalid) return { children: [], status: modelStatus(model, world, desired, invalidSpecConditions(invalid)), invalid };
  const aggregated = model.spec.replicas ? aggregatedChildren(model, world, desired) : [];
  const cache = cacheChildren(model, fillImage(model, world.engineImage));
  return { children: [...cache, ...routerChildren(model, world), ...aggregated], status: modelStatus(model, world, desired, modelConditions(model, world, desired)) };
}
