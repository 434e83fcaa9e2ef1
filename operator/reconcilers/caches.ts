// The informer caches every reconciler reads from, and the event → key mappings that make each
// reconciler level-triggered on everything its plan depends on.
import type { V1Deployment, V1Node, V1PodDisruptionBudget, V1Role, V1RoleBinding, V1Service, V1ServiceAccount, V1StatefulSet } from "@kubernetes/client-node";
import type { DecodePool, EnginePool, GPUNodeGroup, KVStore, Model, PrefillPool } from "../api.ts";
import { R } from "../../lib/kube/resources.ts";
import { namespaceOf, nameOf, type KubeObject } from "../../lib/kube/types.ts";
import { LABEL_MANAGED_BY, MANAGED_BY } from "../plan/labels.ts";
import { NODE_GROUP_LABEL } from "../../crds/schema/nodegroup.ts";
import type { Informer } from "../../lib/kube/informer.ts";
import { key, type Manager } from "../runtime/manager.ts";

export interface Caches {
  models: Informer<Model>;
  prefillPools: Informer<PrefillPool>;
  decodePools: Informer<DecodePool>;
  kvStores: Informer<KVStore>;
  nodeGroups: Informer<GPUNodeGroup>;
  deployments: Informer<V1Deployment>;
  statefulSets: Informer<V1StatefulSet>;
  services: Informer<V1Service>;
  pdbs: Informer<V1PodDisruptionBudget>;
  serviceAccounts: Informer<V1ServiceAccount>;
  roles: Informer<V1Role>;
  roleBindings: Informer<V1RoleBinding>;
  nodes: Informer<V1Node>;
}

export function inNamespace<T extends KubeObject>(inf: Informer<T>, namespace: string): T[] {
  return inf.list().filter((o) => namespaceOf(o) === namespace);
}

export function cached<T extends KubeObject>(inf: Informer<T>, namespace: string, name: string | undefined): T | undefined {
  return name === undefined ? undefined : inf.get(`${namespace}/${name}`);
}

/** Children owned (as controller) by the object with this uid. */
export function ownedBy(caches: Caches, uid: string | undefined): KubeObject[] {
  const all: KubeObject[] = [
    ...caches.deployments.list(),
    ...caches.statefulSets.list(),
    ...caches.services.list(),
    ...caches.pdbs.list(),
    ...caches.serviceAccounts.list(),
    ...caches.roles.list(),
    ...caches.roleBindings.list(),
  ];
  return all.filter((o) => o.metadata?.ownerReferences?.some((r) => r.controller && r.uid === uid));
}

function poolKeys(pools: EnginePool[], kind: string, match: (p: EnginePool) => boolean): string[] {
  return pools.filter(match).map((p) => key(kind, namespaceOf(p), nameOf(p)));
}

function ownerKeys(obj: KubeObject): string[] {
  return (obj.metadata?.ownerReferences ?? []).filter((r) => r.controller).map((r) => key(r.kind, namespaceOf(obj), r.name));
}

export function buildCaches(m: Manager, namespace?: string): Caches {
  const opts = { namespace };
  const children = { namespace, labelSelector: `${LABEL_MANAGED_BY}=${MANAGED_BY}` };
  // Mappers read the caches lazily (through `c`), so declaration order does not matter.
  const c = {} as Caches;
  const poolsOfModel = (ns: string, model: string): string[] => [
    ...poolKeys(inNamespace(c.prefillPools, ns), "PrefillPool", (p) => p.spec.modelRef.name === model),
    ...poolKeys(inNamespace(c.decodePools, ns), "DecodePool", (p) => p.spec.modelRef.name === model),
  ];
  const poolsWith = (ns: string, match: (p: EnginePool) => boolean): string[] => [
    ...poolKeys(inNamespace(c.prefillPools, ns), "PrefillPool", match),
    ...poolKeys(inNamespace(c.decodePools, ns), "DecodePool", match),
  ];
  c.models = m.informer<Model>(
    R.Model,
    (o) => [
      key("Model", namespaceOf(o), nameOf(o)),
      ...poolsOfModel(namespaceOf(o), nameOf(o)),
      ...groupKeys(o.spec.placement?.nodeGroupRef?.name, namespaceOf(o)),
    ],
    opts,
  );
  // Every pool of a Model depends on its sibling pools: their GPUs decide the Model-wide runtime
  // defaults (operator/plan/runtime-args.ts), and prefill pods also know the decode Services.
  c.prefillPools = m.informer<PrefillPool>(
    R.PrefillPool,
    (o) => [...poolDependents("PrefillPool", o), ...poolsOfModel(namespaceOf(o), o.spec.modelRef.name)],
    opts,
  );
  c.decodePools = m.informer<DecodePool>(
    R.DecodePool,
    (o) => [...poolDependents("DecodePool", o), ...poolsOfModel(namespaceOf(o), o.spec.modelRef.name)],
    opts,
  );
  c.kvStores = m.informer<KVStore>(
    R.KVStore,
    (o) => [key("KVStore", namespaceOf(o), nameOf(o)), ...poolsWith(namespaceOf(o), (p) => p.spec.kvStoreRef?.name === nameOf(o))],
    opts,
  );
  c.nodeGroups = m.informer<GPUNodeGroup>(
    R.GPUNodeGroup,
    (o) => [
      key("GPUNodeGroup", namespaceOf(o), nameOf(o)),
      ...poolsWith(namespaceOf(o), (p) => p.spec.nodeGroupRef?.name === nameOf(o)),
      ...modelsOnGroup(c, o),
    ],
    opts,
  );
  c.deployments = m.informer<V1Deployment>(R.Deployment, ownerKeys, children);
  c.statefulSets = m.informer<V1StatefulSet>(R.StatefulSet, ownerKeys, children);
  c.services = m.informer<V1Service>(R.Service, ownerKeys, children);
  c.pdbs = m.informer<V1PodDisruptionBudget>(R.PodDisruptionBudget, ownerKeys, children);
  c.serviceAccounts = m.informer<V1ServiceAccount>(R.ServiceAccount, ownerKeys, children);
  c.roles = m.informer<V1Role>(R.Role, ownerKeys, children);
  c.roleBindings = m.informer<V1RoleBinding>(R.RoleBinding, ownerKeys, children);
  c.nodes = m.informer<V1Node>(R.Node, (n) => groupsNamed(c, n.metadata?.labels?.[NODE_GROUP_LABEL]), {});
  return c;
}

function groupKeys(name: string | undefined, namespace: string): string[] {
  return name ? [key("GPUNodeGroup", namespace, name)] : [];
}

/** A pool change affects the pool, its Model's router and its node group's demand. */
function poolDependents(kind: string, p: EnginePool): string[] {
  const ns = namespaceOf(p);
  return [key(kind, ns, nameOf(p)), key("Model", ns, p.spec.modelRef.name), ...groupKeys(p.spec.nodeGroupRef?.name, ns)];
}

function modelsOnGroup(c: Caches, g: GPUNodeGroup): string[] {
  return inNamespace(c.models, namespaceOf(g))
    .filter((mdl) => mdl.spec.placement?.nodeGroupRef?.name === nameOf(g))
    .map((mdl) => key("Model", namespaceOf(mdl), nameOf(mdl)));
}

/** Nodes carry only the group's name: every namespace's group of that name is affected. */
function groupsNamed(c: Caches, name: string | undefined): string[] {
  if (!name) return [];
  return c.nodeGroups
    .list()
    .filter((g) => nameOf(g) === name)
    .map((g) => key("GPUNodeGroup", namespaceOf(g), name));
}
