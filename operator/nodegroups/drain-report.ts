// What a drain means for the group, pure: which pods a drain evicts, how long it backs off, the
// DrainBlocked condition, and the provider change once some nodes could not be drained.
import type { V1Node, V1Pod } from "@kubernetes/client-node";
import type { Condition } from "../../crds/schema/common.ts";
import type { GPUNodeGroup } from "../api.ts";
import { durationSeconds } from "../autoscaler/duration.ts";
import { findCondition, setConditions, type ConditionInput } from "../plan/conditions.ts";
import type { NodeGroupChange } from "./provider.ts";
import type { RunOutcome } from "./runs.ts";

/** Condition type the actuator owns in the group's status.conditions (the status reconciler owns Ready). */
export const DRAIN_CONDITION = "DrainBlocked";

/** On nodes the actuator cordoned (value: its field manager), so it uncordons only those. */
export const CORDONED_BY_ANNOTATION = "serving.llmfleet.dev/cordoned-by";

export interface DrainPolicy {
  /** Seconds refused evictions are retried; evicted pods then get as long again to terminate. */
  timeoutSeconds: number;
  /** Delete the pods a budget still protects once the timeout has passed. */
  force: boolean;
}

export type DrainResult =
  { node: string; drained: true; message: string } | { node: string; drained: false; reason: "DisruptionBudget" | "PodsTerminating"; message: string };

/** A pod a budget would not let go, and the API server's words for it. */
export interface Refusal {
  pod: string;
  why: string;
}

export function drainPolicy(group: GPUNodeGroup): DrainPolicy {
  return { timeoutSeconds: durationSeconds(group.spec.drain?.timeout, 600), force: group.spec.drain?.force ?? false };
}

export function podRef(pod: V1Pod): string {
  return `${pod.metadata?.namespace ?? ""}/${pod.metadata?.name ?? ""}`;
}

/**
 * Pods a drain evicts: not DaemonSet pods (their controller ignores cordons and would put them
 * back; they go with the node), not mirror pods (the kubelet's static pods cannot be evicted).
 */
export function isEvictable(pod: V1Pod): boolean {
  if (pod.metadata?.annotations?.["kubernetes.io/config.mirror"] !== undefined) return false;
  return !(pod.metadata?.ownerReferences ?? []).some((o) => o.kind === "DaemonSet" && o.controller === true);
}

/** Wait before the next round of refused evictions: 1 s, doubling, at most 30 s. */
export function backoffMs(round: number): number {
  return Math.min(30_000, 1000 * 2 ** round);
}

export function blockedByBudget(node: string, refused: Refusal[], policy: DrainPolicy): DrainResult {
  const shown = refused.slice(0, 5).map((r) => `${r.pod} (${r.why})`);
  const more = refused.length > shown.length ? ` and ${refused.length - shown.length} more` : "";
  return {
    node,
    drained: false,
    reason: "DisruptionBudget",
    message: `${node} stays cordoned: eviction refused for ${policy.timeoutSeconds}s by a PodDisruptionBudget: ${shown.join(", ")}${more}; spec.drain.force deletes such pods after the timeout`,
  };
}

export function stillTerminating(node: string, pods: string[], policy: DrainPolicy): DrainResult {
  const shown = pods.slice(0, 5).join(", ") + (pods.length > 5 ? ` and ${pods.length - 5} more` : "");
  return {
    node,
    drained: false,
    reason: "PodsTerminating",
    message: `${node} stays cordoned: evicted pods still terminating after ${policy.timeoutSeconds}s: ${shown}`,
  };
}

export function drained(node: string, evicted: number, forced: number): DrainResult {
  const deleted = forced > 0 ? `, deleted ${forced} that a budget protected (spec.drain.force)` : "";
  return { node, drained: true, message: `${node}: evicted ${evicted} pods${deleted}` };
}

/** The condition after a run that drained nodes; undefined when it drained none (the condition stays as it was). */
export function drainCondition(results: DrainResult[]): ConditionInput | undefined {
  if (results.length === 0) return undefined;
  const blocked = results.filter((r) => !r.drained);
  const first = blocked[0];
  if (first && !first.drained) {
    return { type: DRAIN_CONDITION, status: "True", reason: first.reason, message: blocked.map((b) => b.message).join("\n") };
  }
  return { type: DRAIN_CONDITION, status: "False", reason: "Drained", message: `Drained ${results.map((r) => r.node).join(", ")} by eviction.` };
}

/** The condition once nodes left cordoned by a blocked drain are needed again and uncordoned. */
export function uncordonedCondition(nodes: string[]): ConditionInput {
  return { type: DRAIN_CONDITION, status: "False", reason: "NodesNeededAgain", message: `Uncordoned ${nodes.join(", ")}: the group needs them again.` };
}

/** The provider change for what was planned, keeping the nodes whose drain was blocked. */
export function changeAfterDrains(planned: NodeGroupChange, results: DrainResult[]): NodeGroupChange {
  const kept = results.filter((r) => !r.drained).map((r) => r.node);
  return {
    ...planned,
    target: planned.target + kept.length,
    nodes: [...planned.nodes, ...kept],
    remove: planned.remove.filter((n) => !kept.includes(n)),
  };
}

/** The run's end after the drains and the provider call: Failed while a node stays cordoned, so it is retried. */
export function runResult(drains: DrainResult[], applied: string): { outcome: RunOutcome; message: string; drain?: ConditionInput } {
  const blocked = drains.flatMap((d) => (d.drained ? [] : [d.message]));
  const message = blocked.length > 0 ? `${applied}; drain blocked: ${blocked.join("; ")}` : applied;
  return { outcome: blocked.length > 0 ? "Failed" : "Complete", message, drain: drainCondition(drains) };
}

/**
 * Nodes to uncordon: members the actuator cordoned (by the annotation) for a drain that was blocked
 * and that are no longer to be removed, because demand came back. Never a node being deleted.
 */
export function nodesToUncordon(members: V1Node[], remove: string[], manager: string): string[] {
  return members
    .filter((n) => n.spec?.unschedulable && !n.metadata?.deletionTimestamp && n.metadata?.annotations?.[CORDONED_BY_ANNOTATION] === manager)
    .map((n) => n.metadata?.name ?? "")
    .filter((name) => !remove.includes(name));
}

/** The actuator's share of status.conditions: the stored DrainBlocked condition, updated with `next` when given. */
export function actuatorConditions(
  stored: Condition[] | undefined,
  next: ConditionInput | undefined,
  generation: number | undefined,
  now: string,
): Condition[] {
  const mine = findCondition(stored, DRAIN_CONDITION);
  const current = mine ? [mine] : [];
  return next ? setConditions(current, [next], generation, now) : current;
}
