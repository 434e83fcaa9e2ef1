// Node-group actuation on a timer (the GPUNodeGroup reconcile key is the status reconciler's):
// every interval, bring each kwok group's node count to ceil(GPU demand / gpusPerNode) + headroom
// within min/max, removing surplus nodes only after the scale-down delay. Other providers are
// left alone for now (karpenter and pulumi are not implemented).
import type { EnginePool } from "../api.ts";
import { durationSeconds } from "../autoscaler/duration.ts";
import { cached, inNamespace, type Caches } from "../reconcilers/caches.ts";
import type { Manager } from "../runtime/manager.ts";
import { KwokProvider } from "./kwok.ts";
import { desiredNodes, membersOf, planNodeGroupActions } from "./plan.ts";

export interface NodeGroupOptions {
  /** Extra nodes per group kept for the provisioning lead time. Default 0. */
  headroom?: number;
  /** Seconds between passes over every group (scale-down delays expire on this clock). Default 15. */
  intervalSeconds?: number;
  now?: () => number;
}

export interface NodeGroupActuator {
  sync(namespace: string, name: string): Promise<void>;
  stop(): void;
}

/** Seconds the group has had a surplus, remembered in `since` (in memory: a restart waits the delay again). */
function trackSurplus(since: Map<string, number>, key: string, surplus: boolean, nowMs: number): number {
  if (!surplus) {
    since.delete(key);
    return 0;
  }
  if (!since.has(key)) since.set(key, nowMs);
  return (nowMs - (since.get(key) ?? nowMs)) / 1000;
}

export function registerNodeGroups(manager: Manager, caches: Caches, opts: NodeGroupOptions = {}): NodeGroupActuator {
  const provider = new KwokProvider(manager.client);
  const now = opts.now ?? Date.now;
  const surplusSince = new Map<string, number>();
  const sync = async (ns: string, name: string): Promise<void> => {
    const group = cached(caches.nodeGroups, ns, name);
    if (!group || group.spec.provider.kind !== "kwok") return;
    const pools: EnginePool[] = [...inNamespace(caches.prefillPools, ns), ...inNamespace(caches.decodePools, ns)];
    const key = `${ns}/${name}`;
    const world = { nodes: caches.nodes.list(), pools, models: inNamespace(caches.models, ns), headroom: opts.headroom ?? 0 };
    const surplus = membersOf(name, world.nodes).length > desiredNodes(group, world);
    const surplusForSeconds = trackSurplus(surplusSince, key, surplus, now());
    const actions = planNodeGroupActions(group, { ...world, surplusForSeconds, scaleDownDelaySeconds: durationSeconds(group.spec.scaleDownDelay, 600) });
    for (const node of actions.create) await provider.create(group, node);
    for (const node of actions.remove) await provider.remove(node);
    if (actions.remove.length > 0) surplusSince.delete(key);
  };
  const timer = setInterval(
    () => {
      for (const g of caches.nodeGroups.list())
        void sync(g.metadata?.namespace ?? "", g.metadata?.name ?? "").catch((err: unknown) => manager.log(`nodegroup: ${String(err)}`));
    },
    (opts.intervalSeconds ?? 15) * 1000,
  );
  return { sync, stop: () => clearInterval(timer) };
}
