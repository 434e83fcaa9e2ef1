// The API resources the operator reads and writes, as REST coordinates.
import { GROUP, VERSION } from "../../crds/schema/common.ts";

export interface ResourceType {
  group: string; // "" for the core group
  version: string;
  plural: string;
  kind: string;
  namespaced: boolean;
}

function res(apiVersion: string, kind: string, plural: string, namespaced = true): ResourceType {
  const [group, version] = apiVersion.includes("/") ? (apiVersion.split("/") as [string, string]) : ["", apiVersion];
  return { group, version, kind, plural, namespaced };
}

export const R = {
  Model: res(`${GROUP}/${VERSION}`, "Model", "models"),
  PrefillPool: res(`${GROUP}/${VERSION}`, "PrefillPool", "prefillpools"),
  DecodePool: res(`${GROUP}/${VERSION}`, "DecodePool", "decodepools"),
  KVStore: res(`${GROUP}/${VERSION}`, "KVStore", "kvstores"),
  GPUNodeGroup: res(`${GROUP}/${VERSION}`, "GPUNodeGroup", "gpunodegroups"),
  Deployment: res("apps/v1", "Deployment", "deployments"),
  StatefulSet: res("apps/v1", "StatefulSet", "statefulsets"),
  Service: res("v1", "Service", "services"),
  Secret: res("v1", "Secret", "secrets"),
  EndpointSlice: res("discovery.k8s.io/v1", "EndpointSlice", "endpointslices"),
  ServiceAccount: res("v1", "ServiceAccount", "serviceaccounts"),
  Role: res("rbac.authorization.k8s.io/v1", "Role", "roles"),
  RoleBinding: res("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings"),
  PodDisruptionBudget: res("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
  Job: res("batch/v1", "Job", "jobs"),
  PersistentVolumeClaim: res("v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
  Node: res("v1", "Node", "nodes", false),
  Pod: res("v1", "Pod", "pods"),
  Lease: res("coordination.k8s.io/v1", "Lease", "leases"),
  Event: res("events.k8s.io/v1", "Event", "events"),
} as const;

export function apiVersionOf(r: ResourceType): string {
  return r.group === "" ? r.version : `${r.group}/${r.version}`;
}

/** Collection path, e.g. /apis/apps/v1/namespaces/ns/deployments (all namespaces when ns is undefined). */
export function collectionPath(r: ResourceType, namespace?: string): string {
  const base = r.group === "" ? `/api/${r.version}` : `/apis/${r.group}/${r.version}`;
  const ns = r.namespaced && namespace ? `/namespaces/${encodeURIComponent(namespace)}` : "";
  return `${base}${ns}/${r.plural}`;
}

export function objectPath(r: ResourceType, namespace: string | undefined, name: string, subresource?: string): string {
  const sub = subresource ? `/${subresource}` : "";
  return `${collectionPath(r, namespace)}/${encodeURIComponent(name)}${sub}`;
}
