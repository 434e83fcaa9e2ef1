// Builders for the child objects every planner emits, each with its owner reference.
import type {
  V1Deployment,
  V1OwnerReference,
  V1PodDisruptionBudget,
  V1PodTemplateSpec,
  V1Role,
  V1RoleBinding,
  V1Service,
  V1ServiceAccount,
  V1StatefulSet,
} from "@kubernetes/client-node";
import type { KubeObject } from "../../lib/kube/types.ts";
import { ENGINE_PORT } from "./labels.ts";

export interface ChildMeta {
  name: string;
  namespace: string;
  labels: Record<string, string>;
  selector: Record<string, string>;
  owner: V1OwnerReference;
}

/** The controller owner reference of a child: deleting the owner garbage-collects the child. */
export function ownerRef(owner: KubeObject): V1OwnerReference {
  const m = owner.metadata;
  if (!owner.apiVersion || !owner.kind || !m?.name || !m.uid) throw new Error("owner needs apiVersion, kind, name and uid");
  return { apiVersion: owner.apiVersion, kind: owner.kind, name: m.name, uid: m.uid, controller: true, blockOwnerDeletion: true };
}

function meta(c: ChildMeta): V1Deployment["metadata"] {
  return { name: c.name, namespace: c.namespace, labels: c.labels, ownerReferences: [c.owner] };
}

export function deployment(c: ChildMeta, replicas: number, template: V1PodTemplateSpec): V1Deployment {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: meta(c),
    spec: {
      replicas,
      selector: { matchLabels: c.selector },
      strategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } },
      revisionHistoryLimit: 3,
      template,
    },
  };
}

export function service(c: ChildMeta, opts: { port?: number; headless?: boolean; extraPorts?: { name: string; port: number }[] } = {}): V1Service {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: meta(c),
    spec: {
      ...(opts.headless ? { clusterIP: "None", publishNotReadyAddresses: true } : {}),
      selector: c.selector,
      ports: [
        { name: "http", port: opts.port ?? ENGINE_PORT, targetPort: "http", protocol: "TCP" },
        ...(opts.extraPorts ?? []).map((p) => ({ name: p.name, port: p.port, targetPort: p.name, protocol: "TCP" })),
      ],
    },
  };
}

export function disruptionBudget(c: ChildMeta): V1PodDisruptionBudget {
  return {
    apiVersion: "policy/v1",
    kind: "PodDisruptionBudget",
    metadata: meta(c),
    spec: { maxUnavailable: 1, selector: { matchLabels: c.selector } },
  };
}

export function statefulSet(
  c: ChildMeta,
  replicas: number,
  template: V1PodTemplateSpec,
  claims: NonNullable<V1StatefulSet["spec"]>["volumeClaimTemplates"],
): V1StatefulSet {
  return {
    apiVersion: "apps/v1",
    kind: "StatefulSet",
    metadata: meta(c),
    spec: {
      replicas,
      serviceName: c.name,
      selector: { matchLabels: c.selector },
      podManagementPolicy: "Parallel",
      template,
      ...(claims && claims.length > 0 ? { volumeClaimTemplates: claims } : {}),
    },
  };
}

/**
 * The identity of pods that read the API: a ServiceAccount, a Role with exactly `rules`, and the
 * binding between them, all named c.name.
 */
export function podIdentity(c: ChildMeta, rules: NonNullable<V1Role["rules"]>): [V1ServiceAccount, V1Role, V1RoleBinding] {
  return [
    { apiVersion: "v1", kind: "ServiceAccount", metadata: meta(c), automountServiceAccountToken: false },
    { apiVersion: "rbac.authorization.k8s.io/v1", kind: "Role", metadata: meta(c), rules },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "RoleBinding",
      metadata: meta(c),
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: c.name },
      subjects: [{ kind: "ServiceAccount", name: c.name, namespace: c.namespace }],
    },
  ];
}
