// Node-group actuation on a timer (the GPUNodeGroup reconcile key is the status reconciler's):
// every interval, each group's desired nodes are ceil(GPU demand / gpusPerNode) + headroom within
// min/max (sizeNodeGroup in operator/plan/nodegroup.ts, the figure status reports); which nodes to
// add or remove is plan.ts's; the next step (step.ts) is explained in status.actuation.decision, and each
// provider run is recorded in status.actuation.lastRun with conditions (runs.ts). Surplus nodes go
// only after the scale-down delay, cordoned and drained first. A run found Progressing that this
// process did not start was cut short by a restart: it is marked Aborted, never re-run; for
// providers that leave such state to a person (pulumi), the group halts until acknowledged.
import { hostname } from "node:os";
import type { EnginePool, GPUNodeGroup } from "../api.ts";
import type { NodeGroupActuation, NodeGroupRun } from "../../crds/schema/nodegroup.ts";
import { durationSeconds } from "../autoscaler/duration.ts";
import { R } from "../kube/resources.ts";
import { membersOf, sizeNodeGroup } from "../plan/nodegroup.ts";
import { cached, inNamespace, type Caches } from "../reconcilers/caches.ts";
import type { Manager } from "../runtime/manager.ts";
import { KarpenterProvider } from "./karpenter.ts";
import { cordonAndDrain, KwokProvider, NODEGROUP_MANAGER } from "./kwok.ts";
import { planNodeGroupActions } from "./plan.ts";
import { ACK_RUN_ANNOTATION, ConcurrentUpdate, type NodeGroupProvider } from "./provider.ts";
import { PulumiProvider, type PulumiOptions } from "./pulumi.ts";
import { decide, endRun, runState, startRun, type RunOutcome } from "./runs.ts";
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

  private async write(group: GPUNodeGroup, actuation: NodeGroupActuation): Promise<void> {
    if (JSON.stringify(group.status?.actuation) === JSON.stringify(actuation)) return;
    const { apiVersion, kind, metadata } = group;
    const patch = { apiVersion, kind, metadata: { name: metadata?.name, namespace: metadata?.namespace }, status: { actuation } };
    await this.manager.client.apply(R.GPUNodeGroup, patch, NODEGROUP_MANAGER, "status");
    group.status = { ...group.status, actuation };
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
    const step = this.plan(group, provider, lastRun);
    const actuation = decide(group.status?.actuation, { ...step.summary, decision: step.step.decision }, this.iso());
    if (step.step.kind !== "run") return this.write(group, actuation);
    await this.execute(group, provider, step.step, actuation);
  }

  private plan(
    group: GPUNodeGroup,
    provider: NodeGroupProvider,
    lastRun: NodeGroupRun | undefined,
  ): { step: Step; summary: { desiredNodes: number; currentNodes: number } } {
    const ns = group.metadata?.namespace ?? "";
    const name = group.metadata?.name ?? "";
    const pools: EnginePool[] = [...inNamespace(this.caches.prefillPools, ns), ...inNamespace(this.caches.decodePools, ns)];
    const nodes = this.caches.nodes.list();
    const size = sizeNodeGroup(group, { pools, models: inNamespace(this.caches.models, ns) });
    const members = membersOf(name, nodes).map((n) => n.metadata?.name ?? "");
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
    return { step, summary: { desiredNodes: actions.desired, currentNodes: members.length } };
  }

  private async execute(group: GPUNodeGroup, provider: NodeGroupProvider, step: Step & { kind: "run" }, actuation: NodeGroupActuation): Promise<void> {
    const run = startRun(actuation.lastRun, { provider: provider.name, targetNodes: actuation.desiredNodes, operator: this.operatorId, now: this.iso() });
    await this.write(group, { ...actuation, lastRun: run });
    let outcome: RunOutcome = "Complete";
    let message: string;
    try {
      for (const node of step.remove) await cordonAndDrain(this.manager.client, node);
      message = await provider.apply({ group, target: actuation.desiredNodes, nodes: step.nodes, create: step.create, remove: step.remove });
    } catch (err) {
      outcome = err instanceof ConcurrentUpdate ? "ConcurrentUpdate" : "Failed";
      message = errorMessage(err);
    }
    await this.write(group, { ...actuation, lastRun: endRun(run, outcome, message, this.iso()) });
    if (step.remove.length > 0 && outcome === "Complete") this.surplusSince.delete(`${group.metadata?.namespace ?? ""}/${group.metadata?.name ?? ""}`);
  }
}

export function registerNodeGroups(manager: Manager, caches: Caches, opts: NodeGroupOptions = {}): NodeGroupActuator {
  const actuator = new Actuator(manager, caches, opts);
  const inFlight = new Set<string>();
  const sync = async (ns: string, name: string): Promise<void> => {
    const key = `${ns}/${name}`;
    if (inFlight.has(key)) return; // a pass over this group is still running (a Pulumi run takes a while)
    inFlight.add(key);
    try {
      await actuator.sync(ns, name);
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
