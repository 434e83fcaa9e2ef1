// Node-group actuation on a timer (the GPUNodeGroup reconcile key is the status reconciler's):
// every interval, each group's desired nodes are ceil(GPU demand / gpusPerNode) + headroom within
// min/max (sizeNodeGroup in operator/plan/nodegroup.ts, the figure status reports); which nodes to
// add or remove is plan.ts's; the next step (step.ts) is explained in status.actuation.decision, and each
// provider run is recorded in status.actuation.lastRun with conditions (runs.ts). Surplus nodes go
// only after the scale-down delay, cordoned and drained first. A run found Progressing that this
// process did not start was cut short by a restart: it is marked Aborted, never re-run; for
// providers that leave such state to a person (pulumi), the group halts until acknowledged.
import { hostname } from "node:os";
import type { EnginePool, GPUNodeGroup, GPUNodeGroupStatus } from "../api.ts";
import type { NodeGroupActuation, NodeGroupRun } from "../../crds/schema/nodegroup.ts";
import { durationSeconds } from "../autoscaler/duration.ts";
import { R } from "../../lib/kube/resources.ts";
import type { KubeObject } from "../../lib/kube/types.ts";
import { findCondition, type ConditionInput } from "../plan/conditions.ts";
import { membersOf, sizeNodeGroup } from "../plan/nodegroup.ts";
import { cached, inNamespace, type Caches } from "../reconcilers/caches.ts";
import { applyStatus, canonical } from "../runtime/apply.ts";
import type { Manager } from "../runtime/manager.ts";
import { drainNodes, uncordon } from "./drain.ts";
import {
  actuatorConditions,
  changeAfterDrains,
  DRAIN_CONDITION,
  drainCondition,
  drainPolicy,
  nodesToUncordon,
  runResult,
  uncordonedCondition,
  type DrainResult,
} from "./drain-report.ts";
import { KarpenterProvider } from "./karpenter.ts";
import { KwokProvider } from "./kwok.ts";
import { planNodeGroupActions } from "./plan.ts";
import { ACK_RUN_ANNOTATION, ConcurrentUpdate, NODEGROUP_MANAGER, type NodeGroupProvider } from "./provider.ts";
import { PulumiProvider, type PulumiOptions } from "./pulumi.ts";
import { decide, endRun, runEvent, runState, startRun, type RunOutcome } from "./runs.ts";
import { nextStep, type Step } from "./step.ts";

export interface NodeGroupOptions {
  /** Seconds between passes over every group (scale-down delays expire on this clock). Default 15. */
  intervalSeconds?: number;
  /** Seconds before a failed run is tried again. Default 60. */
  retrySeconds?: number;
  /** Written on each run; a Progressing run with another identity was cut short. Default: host, pid and start time. */
  operatorId?: string;
  /** The pulumi provider's CLI and environment. Default root: $LLMFLEET_PULUMI_ROOT, else `pulumi` on PATH. */
  pulumi?: PulumiOptions;
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

/** The CLI's own `error:` lines when there are some (the Automation API wraps them in its command line and output twice). */
function errorMessage(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  const errors = [...new Set(text.split("\n").flatMap((l) => (/^\s*error: /.test(l) ? [l.trim()] : [])))];
  return (errors.length > 0 ? errors.join("\n") : text).slice(-2000);
}

function statusPatch(group: GPUNodeGroup, status: GPUNodeGroupStatus): KubeObject & { status: GPUNodeGroupStatus } {
  const { apiVersion, kind, metadata } = group;
  return { apiVersion, kind, metadata: { name: metadata?.name, namespace: metadata?.namespace }, status };
}

class Actuator {
  private readonly providers: Record<string, NodeGroupProvider>;
  private readonly surplusSince = new Map<string, number>();
  private readonly now: () => number;
  private readonly operatorId: string;

  constructor(
    private readonly manager: Manager,
    private readonly caches: Caches,
    private readonly opts: NodeGroupOptions,
  ) {
    const client = manager.client;
    const pulumiRoot = opts.pulumi?.pulumiRoot ?? process.env.LLMFLEET_PULUMI_ROOT;
    this.providers = { kwok: new KwokProvider(client), karpenter: new KarpenterProvider(client), pulumi: new PulumiProvider({ ...opts.pulumi, pulumiRoot }) };
    this.now = opts.now ?? Date.now;
    this.operatorId = opts.operatorId ?? `${hostname()}/${process.pid}/${new Date(this.now()).toISOString()}`;
  }

  private iso(): string {
    return new Date(this.now()).toISOString();
  }

  /**
   * Writes this manager's share of status, only when it changed: status.actuation and the
   * DrainBlocked condition. Every apply carries the condition, since server-side apply removes an
   * entry its owner leaves out.
   */
  private async write(group: GPUNodeGroup, actuation: NodeGroupActuation, drain?: ConditionInput): Promise<void> {
    const conditions = actuatorConditions(group.status?.conditions, drain, group.metadata?.generation, this.iso());
    // canonical: the stored status comes back from the API server with its keys in another order
    // than ours, and an absent field must equal an undefined one.
    const same = canonical([group.status?.actuation, findCondition(group.status?.conditions, DRAIN_CONDITION)]) === canonical([actuation, conditions[0]]);
    if (same) return;
    const status = { actuation, ...(conditions.length > 0 ? { conditions } : {}) };
    await applyStatus(this.manager.client, { r: R.GPUNodeGroup, patch: statusPatch(group, status), manager: NODEGROUP_MANAGER, stored: group });
    const before = group.status;
    const others = (before?.conditions ?? []).filter((c) => c.type !== DRAIN_CONDITION);
    group.status = { ...before, actuation, conditions: [...others, ...conditions] };
    await this.recordEvents(group, before);
  }

  /** Events: a drain blocked or cleared, a provider run started or ended. */
  private async recordEvents(group: GPUNodeGroup, before: GPUNodeGroupStatus | undefined): Promise<void> {
    await this.manager.events.recordFlips(group, before?.conditions, group.status?.conditions);
    const run = runEvent(before?.actuation?.lastRun, group.status?.actuation?.lastRun);
    if (run) await this.manager.events.record(group, run);
  }

  /** The last run as this pass sees it: Aborted if another process left it Progressing; undefined while ours runs. */
  private async settleLastRun(group: GPUNodeGroup): Promise<NodeGroupRun | undefined | "busy"> {
    const act = group.status?.actuation;
    const run = act?.lastRun;
    if (!act || !run || runState(run) !== "Progressing") return run;
    if (run.operator === this.operatorId) return "busy"; // ours: still running, or the cache lags our own write
    const aborted = endRun(
      run,
      "Aborted",
      `found Progressing by ${this.operatorId}; started by ${run.operator ?? "an earlier operator"}; not re-run`,
      this.iso(),
    );
    await this.write(group, { ...act, lastRun: aborted });
    return aborted;
  }

  async sync(ns: string, name: string): Promise<void> {
    const found = cached(this.caches.nodeGroups, ns, name);
    const provider = found && this.providers[found.spec.provider.kind];
    if (!found || !provider) return; // static groups are never scaled
    const group = structuredClone(found);
    const lastRun = await this.settleLastRun(group);
    if (lastRun === "busy") return;
    const planned = this.plan(group, provider, lastRun);
    const drain = await this.uncordon(planned.uncordon);
    const actuation = decide(group.status?.actuation, { ...planned.summary, decision: planned.step.decision }, this.iso());
    if (planned.step.kind !== "run") return this.write(group, actuation, drain);
    await this.execute(group, provider, { step: planned.step, actuation, drain });
  }

  /** Uncordons the nodes a blocked drain left cordoned that the group needs again. */
  private async uncordon(nodes: string[]): Promise<ConditionInput | undefined> {
    if (nodes.length === 0) return undefined;
    for (const node of nodes) await uncordon(this.manager.client, node);
    return uncordonedCondition(nodes);
  }

  private plan(
    group: GPUNodeGroup,
    provider: NodeGroupProvider,
    lastRun: NodeGroupRun | undefined,
  ): { step: Step; summary: { desiredNodes: number; currentNodes: number }; uncordon: string[] } {
    const ns = group.metadata?.namespace ?? "";
    const name = group.metadata?.name ?? "";
    const pools: EnginePool[] = [...inNamespace(this.caches.prefillPools, ns), ...inNamespace(this.caches.decodePools, ns)];
    const nodes = this.caches.nodes.list();
    const size = sizeNodeGroup(group, { pools, models: inNamespace(this.caches.models, ns) });
    const memberNodes = membersOf(name, nodes);
    const members = memberNodes.map((n) => n.metadata?.name ?? "");
    const surplusForSeconds = trackSurplus(this.surplusSince, `${ns}/${name}`, members.length > size.desired, this.now());
    const scaleDownDelaySeconds = durationSeconds(group.spec.scaleDownDelay, 600);
    const actions = planNodeGroupActions(group, { nodes, size, surplusForSeconds, scaleDownDelaySeconds });
    const ack = group.metadata?.annotations?.[ACK_RUN_ANNOTATION];
    const step = nextStep({
      group,
      actions,
      members,
      size,
      lastRun,
      resumable: provider.resumable,
      acknowledgedRun: ack === undefined ? undefined : Number(ack),
      surplusForSeconds,
      scaleDownDelaySeconds,
      provisioningSeconds: durationSeconds(group.spec.provisioningTime, 180),
      retrySeconds: this.opts.retrySeconds ?? 60,
      nowMs: this.now(),
    });
    const uncordon = nodesToUncordon(memberNodes, actions.remove, NODEGROUP_MANAGER);
    return { step, summary: { desiredNodes: actions.desired, currentNodes: members.length }, uncordon };
  }

  private async execute(group: GPUNodeGroup, provider: NodeGroupProvider, e: Execution): Promise<void> {
    const { step, actuation } = e;
    const run = startRun(actuation.lastRun, { provider: provider.name, targetNodes: actuation.desiredNodes, operator: this.operatorId, now: this.iso() });
    await this.write(group, { ...actuation, lastRun: run }, e.drain);
    const result = await this.drainAndApply(group, provider, e);
    await this.write(group, { ...actuation, lastRun: endRun(run, result.outcome, result.message, this.iso()) }, result.drain);
    if (step.remove.length > 0 && result.outcome === "Complete") this.surplusSince.delete(`${group.metadata?.namespace ?? ""}/${group.metadata?.name ?? ""}`);
  }

  /** Drains the nodes to remove, then asks the provider for the change, less the nodes whose drain was blocked. */
  private async drainAndApply(group: GPUNodeGroup, provider: NodeGroupProvider, e: Execution): Promise<RunResult> {
    const { step } = e;
    let drains: DrainResult[] = [];
    try {
      drains = await drainNodes({ client: this.manager.client, manager: NODEGROUP_MANAGER }, step.remove, drainPolicy(group));
      const planned = { group, target: e.actuation.desiredNodes, nodes: step.nodes, create: step.create, remove: step.remove };
      const change = changeAfterDrains(planned, drains);
      const applied = change.create.length + change.remove.length > 0 ? await provider.apply(change) : "no node to add or remove";
      return runResult(drains, applied);
    } catch (err) {
      return { outcome: err instanceof ConcurrentUpdate ? "ConcurrentUpdate" : "Failed", message: errorMessage(err), drain: drainCondition(drains) };
    }
  }
}

interface Execution {
  step: Step & { kind: "run" };
  actuation: NodeGroupActuation;
  /** A DrainBlocked condition to write with the run's start (nodes uncordoned this pass). */
  drain?: ConditionInput;
}

interface RunResult {
  outcome: RunOutcome;
  message: string;
  drain?: ConditionInput;
}

/** The `controller` label of the actuator's passes in the reconcile metrics. */
export const ACTUATION_CONTROLLER = "gpunodegroup-actuation";

export function registerNodeGroups(manager: Manager, caches: Caches, opts: NodeGroupOptions = {}): NodeGroupActuator {
  const actuator = new Actuator(manager, caches, opts);
  const inFlight = new Set<string>();
  const sync = async (ns: string, name: string): Promise<void> => {
    const key = `${ns}/${name}`;
    if (inFlight.has(key)) return; // a pass over this group is still running (a Pulumi run takes a while)
    inFlight.add(key);
    try {
      await manager.recordPass(ACTUATION_CONTROLLER, () => actuator.sync(ns, name));
    } finally {
      inFlight.delete(key);
    }
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
