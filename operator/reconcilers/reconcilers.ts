// One reconciler per kind: observe (caches) → plan (pure) → apply (children, then status).
import type { KubeClient } from "../../lib/kube/client.ts";
import { R } from "../../lib/kube/resources.ts";
import type { KubeObject } from "../../lib/kube/types.ts";
import type { Informer } from "../../lib/kube/informer.ts";
import type { DecodePool, EnginePool, PoolRole, PrefillPool } from "../api.ts";
import { childName } from "../plan/labels.ts";
import { planModel } from "../plan/model.ts";
import { fillImage, fillJobName } from "../plan/model-cache.ts";
import { planDecodePool, planPrefillPool, type PoolWorld } from "../plan/pools.ts";
import { planKVStore } from "../plan/kvstore.ts";
import { planGPUNodeGroup } from "../plan/nodegroup.ts";
import type { Plan } from "../plan/conditions.ts";
import { InvalidSpecError } from "../plan/invalid-spec.ts";
import { AppliedChildren, Applier } from "../runtime/apply.ts";
import type { EventRecorder } from "../runtime/events.ts";
import type { Manager } from "../runtime/manager.ts";
import type { Condition } from "../../crds/schema/common.ts";
import { cached, inNamespace, ownedBy, type Caches } from "./caches.ts";

export interface EngineImages {
  /** Engine pods without GPUs, the router and the KV store (--engine-image). */
  engineImage: string;
  /** Engine pods with GPUs (--engine-gpu-image). */
  engineGPUImage: string;
}

export interface ReconcilerOptions extends EngineImages {
  /** Clock for condition timestamps; injectable for tests. */
  now?: () => string;
}

export function registerReconcilers(m: Manager, c: Caches, opts: ReconcilerOptions): void {
  const now = opts.now ?? ((): string => new Date().toISOString().replace(/\.\d+Z$/, "Z"));
  const client = m.client;
  const images: EngineImages = { engineImage: opts.engineImage, engineGPUImage: opts.engineGPUImage };
  const applied = new AppliedChildren();
  // What was applied to a child that is gone is never read again (a new one is applied afresh):
  // without this a fleet's teardown left an entry per child it ever had.
  const forgetDeleted = <T extends KubeObject>(inf: Informer<T>): void => inf.on((type, obj) => type === "DELETED" && applied.forget(obj));
  for (const inf of [c.deployments, c.statefulSets, c.services, c.pdbs, c.serviceAccounts, c.roles, c.roleBindings]) forgetDeleted(inf as Informer<KubeObject>);
  const applier = (controller: string): Applier => new Applier(client, controller, applied);
  m.register("Model", async (ns, name) => {
    const model = cached(c.models, ns, name);
    if (!model) return;
    await initDesiredReplicas(client, R.Model, model);
    const world = {
      prefillPools: inNamespace(c.prefillPools, ns).filter((p) => p.spec.modelRef.name === name),
      decodePools: inNamespace(c.decodePools, ns).filter((p) => p.spec.modelRef.name === name),
      nodeGroup: cached(c.nodeGroups, ns, model.spec.placement?.nodeGroupRef?.name),
      router: cached(c.deployments, ns, childName(name, "router")),
      aggregated: cached(c.deployments, ns, childName(name, "aggregated")),
      fillJob: model.spec.cache ? cached(c.jobs, ns, fillJobName(model, fillImage(model, images.engineImage))) : undefined,
      ...images,
      now: now(),
    };
    await execute(applier("model"), m.events, { obj: model, r: R.Model, plan: planModel(model, world), owned: ownedBy(c, model.metadata?.uid) });
  });
  m.register("PrefillPool", (ns, name) => reconcilePool(m, c, { role: "prefill", ns, name, images, now: now(), applier: applier("prefillpool") }));
  m.register("DecodePool", (ns, name) => reconcilePool(m, c, { role: "decode", ns, name, images, now: now(), applier: applier("decodepool") }));
  m.register("KVStore", async (ns, name) => {
    const store = cached(c.kvStores, ns, name);
    if (!store) return;
    const plan = planKVStore(store, { statefulSet: cached(c.statefulSets, ns, childName(name, "kvstore")), engineImage: opts.engineImage, now: now() });
    await execute(applier("kvstore"), m.events, { obj: store, r: R.KVStore, plan, owned: ownedBy(c, store.metadata?.uid) });
  });
  m.register("GPUNodeGroup", async (ns, name) => {
    const group = cached(c.nodeGroups, ns, name);
    if (!group) return;
    const pools: EnginePool[] = [...inNamespace(c.prefillPools, ns), ...inNamespace(c.decodePools, ns)];
    const plan = planGPUNodeGroup(group, { nodes: c.nodes.list(), pools, models: inNamespace(c.models, ns), now: now() });
    await execute(applier("gpunodegroup"), m.events, { obj: group, r: R.GPUNodeGroup, plan, owned: [] });
  });
}

interface PoolRequest {
  role: PoolRole;
  ns: string;
  name: string;
  images: EngineImages;
  now: string;
  applier: Applier;
}

async function reconcilePool(m: Manager, c: Caches, req: PoolRequest): Promise<void> {
  const { role, ns, name } = req;
  const client = m.client;
  const pool: EnginePool | undefined = role === "prefill" ? cached(c.prefillPools, ns, name) : cached(c.decodePools, ns, name);
  if (!pool) return;
  await initDesiredReplicas(client, role === "prefill" ? R.PrefillPool : R.DecodePool, pool);
  const world: PoolWorld = {
    model: cached(c.models, ns, pool.spec.modelRef.name),
    kvStore: cached(c.kvStores, ns, pool.spec.kvStoreRef?.name),
    nodeGroup: cached(c.nodeGroups, ns, pool.spec.nodeGroupRef?.name),
    prefillPools: inNamespace(c.prefillPools, ns).filter((p) => p.spec.modelRef.name === pool.spec.modelRef.name),
    decodePools: inNamespace(c.decodePools, ns).filter((d) => d.spec.modelRef.name === pool.spec.modelRef.name),
    deployment: cached(c.deployments, ns, childName(name, role)),
    ...req.images,
    now: req.now,
  };
  const plan = role === "prefill" ? planPrefillPool(pool as PrefillPool, world) : planDecodePool(pool as DecodePool, world);
  const r = role === "prefill" ? R.PrefillPool : R.DecodePool;
  await execute(req.applier, m.events, {
    obj: pool,
    r,
    plan,
    owned: ownedBy(c, pool.metadata?.uid),
  });
}

/**
 * Sets spec.replicas.desired to min when it is unset. The API server's scale subresource cannot be
 * read or patched while the field it points at is missing (InternalError "the spec replicas field
 * does not exist"), so HPA, KEDA and our autoscaler need it there. It is owned by the autoscaler's
 * field manager, so a GitOps re-apply of manifests without it leaves it alone.
 */
async function initDesiredReplicas(
  client: KubeClient,
  r: (typeof R)[keyof typeof R],
  obj: KubeObject & { spec: { replicas?: { min: number; desired?: number } } },
): Promise<void> {
  const replicas = obj.spec.replicas;
  if (!replicas || replicas.desired !== undefined) return;
  const patch = {
    apiVersion: obj.apiVersion,
    kind: obj.kind,
    metadata: { name: obj.metadata?.name, namespace: obj.metadata?.namespace },
    spec: { replicas: { desired: replicas.min } },
  };
  await client.apply(r, patch, "llmfleet/autoscaler");
}

interface Execution<S> {
  obj: KubeObject & { status?: S };
  r: (typeof R)[keyof typeof R];
  plan: Plan<S>;
  owned: KubeObject[];
}

/**
 * Applies a plan. A plan without children means a reference is missing: the children that exist
 * keep serving (last known good) and only the status says what is wrong; a spec that cannot be
 * served ends the pass as an InvalidSpecError once its status is written. A status write that
 * flips a condition records an Event for it.
 */
async function execute<S extends { conditions?: Condition[] }>(applier: Applier, events: EventRecorder, e: Execution<S>): Promise<void> {
  if (e.plan.children.length > 0) {
    await applier.children(e.plan.children, e.owned);
    await applier.prune(e.owned, e.plan.children);
  }
  if (await applier.status(e.r, e.obj, e.plan.status)) await events.recordFlips(e.obj, e.obj.status?.conditions, e.plan.status.conditions);
  if (e.plan.invalid !== undefined) throw new InvalidSpecError(e.plan.invalid);
}
