// Plans a local fleet with the operator's own planners (planModel, planPrefillPool,
// planDecodePool) and turns the planned Deployments into engine process specs.
import type { V1Deployment } from "@kubernetes/client-node";
import type { EnginePool, Model } from "../api.ts";
import { findCondition } from "../plan/conditions.ts";
import { planModel } from "../plan/model.ts";
import { planPool, type PoolWorld } from "../plan/pools.ts";
import { KV_DATA_PATH, planKVStore } from "../plan/kvstore.ts";
import { join } from "node:path";
import { cacheRoot } from "../../engine/model/fetch.ts";
import type { KubeObject } from "../../lib/kube/types.ts";
import { nameOf } from "../../lib/kube/types.ts";
import type { LocalFleetSpec } from "./manifests.ts";
import { rewriteServiceURLs, withFlag, type EngineProcessSpec } from "./processes.ts";

export interface PlannedDeployment {
  name: string;
  role: string;
  replicas: number;
  args: string[];
  /**
   * The container's environment as planned, literal values only (e.g. the router's NODE_OPTIONS heap
   * cap); a value from a Secret or field has no local source and is left out.
   */
  env?: Record<string, string>;
}

const NOW = "1970-01-01T00:00:00Z";
/** Processes have no image: every pod, with GPUs or not, runs this checkout's engine. */
const LOCAL_IMAGES = { engineImage: "local", engineGPUImage: "local" };

/**
 * Variables that name a path inside the pod: its model cache is a volume mounted at
 * /var/cache/llmfleet. A local process keeps this machine's cache (LLMFLEET_CACHE, else
 * ~/.cache/llmfleet): given the pod's path, it fetched the model and built the native addon again
 * under /var/cache (a cold machine's CI timed out waiting for that build; without root it cannot
 * write there at all).
 */
const POD_PATHS = new Set(["LLMFLEET_CACHE"]);

/** A container's environment with literal values; one from a Secret or field has no local source. */
function literalEnv(env: { name: string; value?: string }[] | undefined): Record<string, string> {
  return Object.fromEntries((env ?? []).flatMap((e) => (e.value === undefined || POD_PATHS.has(e.name) ? [] : [[e.name, e.value]])));
}

/** Deployments and StatefulSets (the KV store) become processes; Services and PDBs have no local form. */
function deployments(children: KubeObject[]): PlannedDeployment[] {
  return children
    .filter((c): c is V1Deployment => c.kind === "Deployment" || c.kind === "StatefulSet")
    .map(plannedDeployment);
}

function plannedDeployment(d: V1Deployment): PlannedDeployment {
  const { args = [], env } = d.spec?.template.spec?.containers[0] ?? {};
  return { name: d.metadata?.name ?? "", role: args[args.indexOf("--role") + 1] ?? "", replicas: d.spec?.replicas ?? 1, args, env: literalEnv(env) };
}

function poolWorld(fleet: LocalFleetSpec, pool: EnginePool): PoolWorld {
  const byName = <T extends KubeObject>(list: T[], name: string | undefined): T | undefined => list.find((o) => nameOf(o) === name);
  return {
    model: byName(fleet.models, pool.spec.modelRef.name),
    kvStore: byName(fleet.kvStores, pool.spec.kvStoreRef?.name),
    nodeGroup: byName(fleet.nodeGroups, pool.spec.nodeGroupRef?.name),
    prefillPools: fleet.prefillPools.filter((p) => p.spec.modelRef.name === pool.spec.modelRef.name),
    decodePools: fleet.decodePools.filter((d) => d.spec.modelRef.name === pool.spec.modelRef.name),
    ...LOCAL_IMAGES,
    now: NOW,
  };
}

/** The Deployments the operator would create for this fleet; unresolved references are errors here. */
export function planLocalFleet(fleet: LocalFleetSpec): PlannedDeployment[] {
  const planned: PlannedDeployment[] = [];
  const pools: Array<[EnginePool, "prefill" | "decode"]> = [
    ...fleet.prefillPools.map((p) => [p, "prefill"] as [EnginePool, "prefill"]),
    ...fleet.decodePools.map((p) => [p, "decode"] as [EnginePool, "decode"]),
  ];
  for (const [pool, role] of pools) {
    const world = poolWorld(fleet, pool);
    const plan = planPool(pool, role, world);
    const unresolved = findCondition(plan.status.conditions, "ReferencesResolved");
    if (unresolved?.status === "False") throw new Error(`${role} pool ${nameOf(pool)}: ${unresolved.message}`);
    if (plan.invalid) throw new Error(`${role} pool ${nameOf(pool)}: ${plan.invalid}`);
    planned.push(...deployments(plan.children));
  }
  for (const model of fleet.models) planned.push(...deployments(planModelLocally(fleet, model)));
  for (const store of fleet.kvStores) planned.unshift(...deployments(planKVStore(store, { engineImage: "local", now: NOW }).children));
  return planned;
}

function planModelLocally(fleet: LocalFleetSpec, model: Model): KubeObject[] {
  const mine = (p: EnginePool): boolean => p.spec.modelRef.name === nameOf(model);
  const nodeGroup = fleet.nodeGroups.find((g) => nameOf(g) === model.spec.placement?.nodeGroupRef?.name);
  const plan = planModel(model, {
    prefillPools: fleet.prefillPools.filter(mine),
    decodePools: fleet.decodePools.filter(mine),
    nodeGroup,
    ...LOCAL_IMAGES,
    now: NOW,
  });
  if (plan.invalid) throw new Error(`Model ${nameOf(model)}: ${plan.invalid}`);
  return plan.children;
}

export interface LocalLayout {
  routerPort: number;
  basePort: number;
  /** llama.cpp threads per model process. */
  threads: number;
}

/**
 * Arguments of one process of `d` on `port`, with Service URLs resolved to their processes'
 * loopback URLs. Every engine but the router also listens on a TCP port of its own for KV
 * transfers (`--kv-port`: hand-offs to decode, blocks to and from the KV store): in a pod it is
 * 8001 or --port + 1, which on one loopback address would collide with another process's ports.
 */
export function replicaArgs(d: PlannedDeployment, ports: { port: number; kvPort: number }, urls: Map<string, string[]>, threads: number): string[] {
  const { port, kvPort } = ports;
  // A disk tier's volume is a folder under the local cache.
  const args = d.args.map((a) => a.replace(`path=${KV_DATA_PATH}/`, `path=${join(cacheRoot(), "local-kv", d.name)}/`));
  const resolved = withFlag(withFlag(rewriteServiceURLs(args, urls), "--port", String(port)), "--host", "127.0.0.1");
  if (d.role === "router") return resolved;
  const engine = withFlag(resolved, "--threads", String(threads));
  return withFlag(engine, "--kv-port", String(kvPort));
}

/** Loopback ports for every replica, then arguments with Service URLs resolved to them. */
export function processSpecs(planned: PlannedDeployment[], layout: LocalLayout): EngineProcessSpec[] {
  let next = layout.basePort;
  let routerPort = layout.routerPort;
  const ports = new Map<string, number[]>();
  for (const d of planned) {
    ports.set(
      d.name,
      Array.from({ length: d.replicas }, () => (d.role === "router" ? routerPort++ : next++)),
    );
  }
  // KV ports follow the HTTP ports, one per engine process.
  const kvPorts = new Map<string, number[]>([...ports].map(([name, ps]) => [name, ps.map(() => next++)]));
  const urls = new Map([...ports].map(([svc, ps]) => [svc, ps.map((p) => `http://127.0.0.1:${p}`)]));
  return planned.flatMap((d) =>
    (ports.get(d.name) ?? []).map((port, replica) => ({
      name: d.name,
      replica,
      port,
      args: replicaArgs(d, { port, kvPort: kvPorts.get(d.name)?.[replica] ?? 0 }, urls, layout.threads),
      env: d.env ?? {},
    })),
  );
}
