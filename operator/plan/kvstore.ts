// planKVStore: the kvstore StatefulSet and Service from the KVStore's tiers. Tiers become engine
// flags in lookup order; the disk tier gets a volume claim template; object-store credentials
// come from the referenced Secret as environment variables, never as arguments.
import type { V1EnvVar, V1PersistentVolumeClaim, V1StatefulSet, V1VolumeMount } from "@kubernetes/client-node";
import type { KVStore, KVStoreStatus } from "../api.ts";
import type { KVTier } from "../../crds/schema/kvstore.ts";
import { nameOf, namespaceOf, workloadCounts, type KubeObject } from "../../lib/kube/types.ts";
import { ownerRef, service, statefulSet, type ChildMeta } from "./children.ts";
import { readyCondition, setConditions, type Plan } from "./conditions.ts";
import { enginePodTemplate } from "./engine-pod.ts";
import { SHORT_DRAIN } from "./runtime-args.ts";
import { kvStoreAccess } from "./access.ts";
import { childLabels, childName, KV_HANDOFF_PORT, selectorLabels, serviceURL } from "./labels.ts";
import { formatMi, parseQuantity } from "./quantity.ts";
import { rolloutOf } from "./rollout.ts";

export const KV_DATA_PATH = "/var/lib/llmfleet/kv";

export interface KVStoreWorld {
  statefulSet?: V1StatefulSet;
  engineImage: string;
  now: string;
}

export function kvStoreEndpoint(store: KVStore): string {
  return serviceURL(childName(nameOf(store), "kvstore"), namespaceOf(store));
}

export function tierArg(t: KVTier): string {
  const parts = [`name=${t.name}`, `medium=${t.medium}`];
  if (t.capacity !== undefined) parts.push(`capacity=${t.capacity}`);
  if (t.medium === "disk") parts.push(`path=${KV_DATA_PATH}/${t.name}`);
  if (t.endpoint) parts.push(`endpoint=${t.endpoint}`);
  if (t.bucket) parts.push(`bucket=${t.bucket}`);
  if (t.region) parts.push(`region=${t.region}`);
  if (t.ttl) parts.push(`ttl=${t.ttl}`);
  return parts.join(",");
}

function storeArgs(store: KVStore): string[] {
  const s = store.spec;
  const args = [
    "--block-tokens",
    String(s.blockTokens),
    "--codec",
    s.codec?.name ?? "default",
    "--tenant-salt",
    s.tenantSalt ?? store.metadata?.namespace ?? "",
  ];
  for (const t of s.tiers) args.push("--tier", tierArg(t));
  return args;
}

function credentialsEnv(tiers: KVTier[]): V1EnvVar[] {
  const tier = tiers.find((t) => t.medium === "objectStore" && t.secretRef);
  if (!tier?.secretRef) return [];
  const ref = (key: string): V1EnvVar => ({ name: key, valueFrom: { secretKeyRef: { name: tier.secretRef?.name ?? "", key } } });
  return [ref("AWS_ACCESS_KEY_ID"), ref("AWS_SECRET_ACCESS_KEY")];
}

function diskClaims(tiers: KVTier[]): { claims: V1PersistentVolumeClaim[]; mounts: V1VolumeMount[] } {
  const disk = tiers.filter((t) => t.medium === "disk");
  const claims = disk.map((t) => ({
    metadata: { name: `kv-${t.name}` },
    spec: {
      accessModes: ["ReadWriteOnce"],
      resources: { requests: { storage: String(t.capacity) } },
      ...(t.storageClassName ? { storageClassName: t.storageClassName } : {}),
    },
  }));
  const mounts = disk.map((t) => ({ name: `kv-${t.name}`, mountPath: `${KV_DATA_PATH}/${t.name}` }));
  return { claims, mounts };
}

/** Memory for a kvstore pod: what the memory tier holds plus 1Gi of working room. */
export function kvStoreMemory(store: KVStore): string | number {
  if (store.spec.resources?.memory !== undefined) return store.spec.resources.memory;
  const mem = store.spec.tiers.find((t) => t.medium === "memory");
  return formatMi((mem?.capacity === undefined ? 0 : parseQuantity(mem.capacity)) + 2 ** 30);
}

function kvStoreChildren(store: KVStore, engineImage: string): KubeObject[] {
  const name = nameOf(store);
  const selector = selectorLabels(name, "kvstore");
  const meta: ChildMeta = {
    name: childName(name, "kvstore"),
    namespace: namespaceOf(store),
    labels: childLabels(name, "kvstore"),
    selector,
    owner: ownerRef(store),
  };
  const { claims, mounts } = diskClaims(store.spec.tiers);
  const access = kvStoreAccess(store);
  const template = enginePodTemplate({
    labels: meta.labels,
    role: "kvstore",
    image: engineImage,
    args: [...storeArgs(store), ...access.args],
    volumes: access.volumes,
    gpus: 0,
    cpu: store.spec.resources?.cpu ?? "1",
    memory: kvStoreMemory(store),
    env: credentialsEnv(store.spec.tiers),
    mounts: [...mounts, ...access.mounts],
    drain: SHORT_DRAIN,
  });
  // Pods upload v2 entry blocks to the Service's kv port (engine --kv-port), over the native TCP stream.
  return [statefulSet(meta, store.spec.replicas, template, claims), service(meta, { extraPorts: [{ name: "kv", port: KV_HANDOFF_PORT }] })];
}

export function planKVStore(store: KVStore, world: KVStoreWorld): Plan<KVStoreStatus> {
  const counts = workloadCounts(world.statefulSet);
  const generation = store.metadata?.generation;
  const ready = [readyCondition(rolloutOf(world.statefulSet, store.spec.replicas, "StatefulSet"))];
  const status: KVStoreStatus = {
    observedGeneration: generation,
    ...counts,
    endpoint: kvStoreEndpoint(store),
    tiers: store.spec.tiers.map((t) => `${t.name}(${t.medium})`).join(","),
    conditions: setConditions(store.status?.conditions, ready, generation, world.now),
  };
  return { children: kvStoreChildren(store, world.engineImage), status };
}
