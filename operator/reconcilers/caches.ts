// The informer caches every reconciler reads from, and the event → key mappings that make each
// reconciler level-triggered on everything its plan depends on.
import type { V1Deployment, V1Job, V1Node, V1Pod, V1PodDisruptionBudget, V1Role, V1RoleBinding, V1Service, V1ServiceAccount, V1StatefulSet } from "@kubernetes/client-node";
import type { DecodePool, EnginePool, GPUNodeGroup, KVStore, Model, PrefillPool } from "../api.ts";
import { R } from "../../lib/kube/resources.ts";
import { namespaceOf, nameOf, type KubeObject } from "../../lib/kube/types.ts";
import { LABEL_MANAGED_BY, MANAGED_BY } from "../plan/labels.ts";
import { NODE_GROUP_LABEL } from "../../crds/schema/nodegroup.ts";
import type { Informer, InformerOptions } from "../../lib/kube/informer.ts";
import { key, parseKey, type Change, type KeyMapper, type Manager } from "../runtime/manager.ts";

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
  /** Models' fill Jobs (spec.cache): their completion is the ModelCacheFilled condition. */
  jobs: Informer<V1Job>;
  nodes: Informer<V1Node>;
  /** The engine pods of our Deployments (the autoscaler's scrape targets), without managedFields. */
  pods: Informer<V1Pod>;
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
    ...caches.jobs.list(),
  ];
  return all.filter((o) => o.metadata?.ownerReferences?.some((r) => r.controller && r.uid === uid));
}

function poolKeys(pools: EnginePool[], kind: string, match: (p: EnginePool) => boolean): string[] {
  return pools.filter(match).map((p) => key(kind, namespaceOf(p), nameOf(p)));
}

function ownerKeys(obj: KubeObject): string[] {
  return (obj.metadata?.ownerReferences ?? []).filter((r) => r.controller).map((r) => key(r.kind, namespaceOf(obj), r.name));
}

/**
 * Whether a change can matter to the objects that depend on `obj`: they read only its spec (and
 * whether it exists), so a change that leaves metadata.generation as it was (status, labels,
 * annotations) concerns the object itself alone. All our kinds have a status subresource, so
 * their generation moves with every spec change and only then.
 */
export function specChanged<T extends KubeObject>(obj: T, change: Change<T>): boolean {
  return change.type !== "MODIFIED" || change.other?.metadata?.generation !== obj.metadata?.generation;
}

/** The object's own key, plus its dependents' when its spec changed (or it came or went). */
function selfAndDependents<T extends KubeObject>(self: (o: T) => string[], dependents: (o: T) => string[]): KeyMapper<T> {
  return (o, change) => [...self(o), ...(specChanged(o, change) ? dependents(o) : [])];
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
  // Keys of objects gone from the caches are dropped: no reconciler has anything to do for an
  // object that no longer exists (children go by garbage collection), and a teardown would
  // otherwise reconcile every deleted pool once per child and sibling that goes after it.
  const informer = <T extends KubeObject>(r: Parameters<Manager["informer"]>[0], mapper: KeyMapper<T>, o: InformerOptions): Informer<T> =>
    m.informer<T>(r, (obj, change) => live(c, mapper(obj, change)), o);
  c.models = informer<Model>(
    R.Model,
    selfAndDependents(
      (o) => [key("Model", namespaceOf(o), nameOf(o))],
      (o) => [...poolsOfModel(namespaceOf(o), nameOf(o)), ...groupKeys(o.spec.placement?.nodeGroupRef?.name, namespaceOf(o))],
    ),
    opts,
  );
  // Every pool of a Model depends on its sibling pools: their GPUs decide the Model-wide runtime
  // defaults (operator/plan/runtime-args.ts), and prefill pods also know the decode Services. The
  // Model and the node group read the pools' specs (names, GPUs, replicas), not their status.
  c.prefillPools = informer<PrefillPool>(
    R.PrefillPool,
    selfAndDependents(
      (o) => [key("PrefillPool", namespaceOf(o), nameOf(o))],
      (o) => [...poolDependents(o), ...poolsOfModel(namespaceOf(o), o.spec.modelRef.name)],
    ),
    opts,
  );
  c.decodePools = informer<DecodePool>(
    R.DecodePool,
    selfAndDependents(
      (o) => [key("DecodePool", namespaceOf(o), nameOf(o))],
      (o) => [...poolDependents(o), ...poolsOfModel(namespaceOf(o), o.spec.modelRef.name)],
    ),
    opts,
  );
  c.kvStores = informer<KVStore>(
    R.KVStore,
    selfAndDependents(
      (o) => [key("KVStore", namespaceOf(o), nameOf(o))],
      (o) => poolsWith(namespaceOf(o), (p) => p.spec.kvStoreRef?.name === nameOf(o)),
    ),
    opts,
  );
  // Pools and Models read a group's spec (GPUs per node, placement); its status (demand, nodes,
  // actuation, written on every change of demand) is the group's own business.
  c.nodeGroups = informer<GPUNodeGroup>(
    R.GPUNodeGroup,
    selfAndDependents(
      (o) => [key("GPUNodeGroup", namespaceOf(o), nameOf(o))],
      (o) => [...poolsWith(namespaceOf(o), (p) => p.spec.nodeGroupRef?.name === nameOf(o)), ...modelsOnGroup(c, o)],
    ),
    opts,
  );
  c.deployments = informer<V1Deployment>(R.Deployment, ownerKeys, children);
  c.statefulSets = informer<V1StatefulSet>(R.StatefulSet, ownerKeys, children);
  c.services = informer<V1Service>(R.Service, ownerKeys, children);
  c.pdbs = informer<V1PodDisruptionBudget>(R.PodDisruptionBudget, ownerKeys, children);
  c.serviceAccounts = informer<V1ServiceAccount>(R.ServiceAccount, ownerKeys, children);
  c.roles = informer<V1Role>(R.Role, ownerKeys, children);
  c.roleBindings = informer<V1RoleBinding>(R.RoleBinding, ownerKeys, children);
  c.jobs = informer<V1Job>(R.Job, ownerKeys, children);
  // A group reads its nodes' status (Ready, allocatable GPUs).
  c.nodes = informer<V1Node>(R.Node, (n) => groupsNamed(c, n.metadata?.labels?.[NODE_GROUP_LABEL]), {});
  // Read by the autoscaler on its own timer: a pod change queues nothing.
  c.pods = informer<V1Pod>(R.Pod, () => [], { ...children, dropManagedFields: true });
  return c;
}

/** The keys whose object is in its kind's cache (kinds without a cache here are kept). */
function live(c: Caches, keys: string[]): string[] {
  const primary: Record<string, { get(key: string): unknown } | undefined> = {
    Model: c.models,
    PrefillPool: c.prefillPools,
    DecodePool: c.decodePools,
    KVStore: c.kvStores,
    GPUNodeGroup: c.nodeGroups,
  };
  return keys.filter((k) => {
    const { kind, namespace, name } = parseKey(k);
    const inf = primary[kind];
    return inf === undefined || inf.get(`${namespace}/${name}`) !== undefined;
  });
}

function groupKeys(name: string | undefined, namespace: string): string[] {
  return name ? [key("GPUNodeGroup", namespace, name)] : [];
}

/** A pool's spec affects its Model's router and its node group's demand. */
function poolDependents(p: EnginePool): string[] {
  const ns = namespaceOf(p);
  return [key("Model", ns, p.spec.modelRef.name), ...groupKeys(p.spec.nodeGroupRef?.name, ns)];
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
