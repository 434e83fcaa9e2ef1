// The engine pod template every component shares: one container running the bundled engine in a
// role, restricted security, probes on the engine's /health and /ready, a writable model cache.
// Deterministic: the same inputs give byte-identical templates, so re-applies cause no rollout.
import type { V1Container, V1PodTemplateSpec, V1Toleration, V1EnvVar, V1Volume, V1VolumeMount } from "@kubernetes/client-node";
import type { GPUNodeGroup, Model } from "../api.ts";
import { NODE_GROUP_LABEL } from "../../crds/schema/nodegroup.ts";
import { ENGINE_PORT, KV_HANDOFF_PORT, type Component } from "./labels.ts";
import { nameOf } from "../../lib/kube/types.ts";
import { parseQuantity } from "./quantity.ts";
import { runtimeArgs, runtimeSettings, type DrainPlan, type PodPlacement } from "./runtime-args.ts";

import { ENGINE_CONTAINER_SECURITY, ENGINE_POD_SECURITY, MODEL_CACHE_PATH, MODEL_CACHE_VOLUME, type EngineCache } from "./model-cache.ts";

export { MODEL_CACHE_PATH };
export const GPU_RESOURCE = "nvidia.com/gpu";

export interface EnginePodInput {
  labels: Record<string, string>;
  role: Component;
  image: string;
  args: string[];
  gpus: number;
  cpu: string | number;
  memory: string | number;
  nodeGroup?: GPUNodeGroup;
  env?: V1EnvVar[];
  volumes?: V1Volume[];
  mounts?: V1VolumeMount[];
  /** A ServiceAccount whose token the pod mounts (it reads the API); default none, no token. */
  serviceAccountName?: string;
  /** How the engine drains on SIGTERM; the pod's grace period follows. */
  drain: DrainPlan;
  /** The Model's spec.cache (model-cache.ts): a read-only filled cache instead of an emptyDir. */
  modelCache?: EngineCache;
}

/** What a model-loading pod's flags depend on besides the Model: its CPU and its placement. */
export interface ModelPod extends PodPlacement {
  cpu: string | number;
}

/**
 * Engine flags that describe the model: where it comes from and how it runs (runtime-args.ts).
 * llama.cpp threads default to the pod's CPU (rounded up): its own default, the node's core count,
 * oversubscribes.
 */
export function modelArgs(model: Model, pod: ModelPod): string[] {
  // Clients name the model by its resource's name, as `kubectl get models` shows it.
  const args = ["--model-uri", model.spec.source.uri, ...(model.metadata?.name ? ["--served-model-name", model.metadata.name] : [])];
  if (model.spec.source.checksum) args.push("--model-checksum", model.spec.source.checksum);
  args.push("--threads", String(model.spec.runtime?.threads ?? Math.max(1, Math.ceil(parseQuantity(pod.cpu)))));
  return [...args, ...runtimeArgs(runtimeSettings(model, pod))];
}

/** The image of an engine pod that names none: the GPU image when it has GPUs. */
export function defaultEngineImage(images: { engineImage: string; engineGPUImage: string }, gpus: number): string {
  return gpus > 0 ? images.engineGPUImage : images.engineImage;
}

export function modelExtraArgs(model: Model): string[] {
  return model.spec.runtime?.extraArgs ?? [];
}

const drainArgs = (d: DrainPlan): string[] => ["--drain-delay-seconds", String(d.delaySeconds), "--drain-timeout-seconds", String(d.timeoutSeconds)];

export function enginePodTemplate(input: EnginePodInput): V1PodTemplateSpec {
  const placement = nodePlacement(input.nodeGroup, input.gpus);
  return {
    metadata: { labels: input.labels },
    spec: {
      enableServiceLinks: false,
      ...(input.serviceAccountName ? { serviceAccountName: input.serviceAccountName } : {}),
      automountServiceAccountToken: input.serviceAccountName !== undefined,
      // The engine's drain (delay + timeout) and a margin to exit after it.
      terminationGracePeriodSeconds: input.drain.delaySeconds + input.drain.timeoutSeconds + 5,
      securityContext: ENGINE_POD_SECURITY,
      ...placement,
      ...(input.modelCache?.initContainer ? { initContainers: [input.modelCache.initContainer] } : {}),
      containers: [engineContainer(input)],
      // tmp: the root file system is read-only; pip (pypi:// models) and Node write under /tmp.
      volumes: [input.modelCache?.volume ?? { name: MODEL_CACHE_VOLUME, emptyDir: {} }, { name: "tmp", emptyDir: {} }, ...(input.volumes ?? [])],
    },
  };
}

/**
 * Decode pods receive KV hand-offs over TCP on their own port (engine/pd/kv-transport.ts), kvstore
 * pods receive v2 entry blocks there (engine/kvstore/block-client.ts), and prefill and aggregated
 * pods receive the blocks of a store load there (the store pushes them); the chart's
 * NetworkPolicies admit each of these flows on the named port "kv".
 */
const KV_PORT_ROLES: readonly Component[] = ["prefill", "decode", "aggregated", "kvstore"];
/** Prefill and aggregated pods listen on the engine's default, --port + 1 (8001): only the port is declared. */
function kvPortArgs(role: Component): string[] {
  return role === "decode" || role === "kvstore" ? ["--kv-port", String(KV_HANDOFF_PORT)] : [];
}

function engineContainer(input: EnginePodInput): V1Container {
  const limits: Record<string, string> = { cpu: String(input.cpu), memory: String(input.memory) };
  if (input.gpus > 0) limits[GPU_RESOURCE] = String(input.gpus);
  return {
    name: "engine",
    image: input.image,
    args: ["--role", input.role, "--port", String(ENGINE_PORT), ...kvPortArgs(input.role), ...drainArgs(input.drain), ...input.args, ...(input.modelCache?.args ?? [])],
    ports: [
      { name: "http", containerPort: ENGINE_PORT, protocol: "TCP" },
      ...(KV_PORT_ROLES.includes(input.role) ? [{ name: "kv", containerPort: KV_HANDOFF_PORT, protocol: "TCP" }] : []),
    ],
    env: [{ name: "LLMFLEET_CACHE", value: MODEL_CACHE_PATH }, ...(input.env ?? [])],
    resources: { requests: { cpu: String(input.cpu), memory: String(input.memory) }, limits },
    readinessProbe: { httpGet: { path: "/ready", port: "http" }, periodSeconds: 5, failureThreshold: 3 },
    livenessProbe: { httpGet: { path: "/health", port: "http" }, periodSeconds: 10, failureThreshold: 6 },
    // Model download and load can take minutes; liveness waits for the first successful probe.
    startupProbe: { httpGet: { path: "/health", port: "http" }, periodSeconds: 5, failureThreshold: 120 },
    securityContext: ENGINE_CONTAINER_SECURITY,
    volumeMounts: [
      { name: MODEL_CACHE_VOLUME, mountPath: MODEL_CACHE_PATH, ...(input.modelCache ? { readOnly: true } : {}) },
      { name: "tmp", mountPath: "/tmp" },
      ...(input.mounts ?? []),
    ],
  };
}

/** Node selector and tolerations from the GPUNodeGroup the pods are placed on. */
export function nodePlacement(group: GPUNodeGroup | undefined, gpus: number): { nodeSelector?: Record<string, string>; tolerations?: V1Toleration[] } {
  const tolerations: V1Toleration[] = gpus > 0 ? [{ key: GPU_RESOURCE, operator: "Exists", effect: "NoSchedule" }] : [];
  tolerations.push(...(group?.spec.taints ?? []).map(toleration));
  const nodeSelector = group ? { ...group.spec.nodeLabels, [NODE_GROUP_LABEL]: nameOf(group) } : undefined;
  return { ...(nodeSelector ? { nodeSelector } : {}), ...(tolerations.length > 0 ? { tolerations } : {}) };
}

function toleration(t: { key: string; value?: string; effect: string }): V1Toleration {
  return t.value === undefined ? { key: t.key, operator: "Exists", effect: t.effect } : { key: t.key, operator: "Equal", value: t.value, effect: t.effect };
}
