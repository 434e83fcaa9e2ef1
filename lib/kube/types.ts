// Minimal object shapes the runtime relies on; built-in kinds use @kubernetes/client-node's V1* types.
import type { V1ObjectMeta, V1OwnerReference } from "@kubernetes/client-node";

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: V1ObjectMeta;
}

export interface CustomObject<Spec, Status> extends KubeObject {
  spec: Spec;
  status?: Status;
}

export type { V1OwnerReference };

export function objectKey(obj: KubeObject): string {
  const ns = obj.metadata?.namespace;
  const name = obj.metadata?.name ?? "";
  return ns ? `${ns}/${name}` : name;
}

export function nameOf(obj: KubeObject): string {
  return obj.metadata?.name ?? "";
}

export function namespaceOf(obj: KubeObject): string {
  return obj.metadata?.namespace ?? "";
}

/** Replicas and ready replicas a workload (Deployment, StatefulSet) reports; 0 when absent. */
export function workloadCounts(w: { status?: { replicas?: number; readyReplicas?: number } } | undefined): { replicas: number; readyReplicas: number } {
  return { replicas: w?.status?.replicas ?? 0, readyReplicas: w?.status?.readyReplicas ?? 0 };
}
