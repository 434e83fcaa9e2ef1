// metav1.Condition bookkeeping, pure: `now` is passed in, and lastTransitionTime moves only when a
// condition's status flips.
import type { Condition } from "../../crds/schema/common.ts";
import type { KubeObject } from "../../lib/kube/types.ts";
import type { Rollout } from "./rollout.ts";

/** What a planner returns: the children to apply and the status to write. */
export interface Plan<Status> {
  children: KubeObject[];
  status: Status;
  /** Set when the spec cannot be served (invalid-spec.ts): status says so, and the pass ends as a terminal error. */
  invalid?: string;
}

export interface ConditionInput {
  type: string;
  status: "True" | "False" | "Unknown";
  reason: string;
  message: string;
}

export function setConditions(existing: Condition[] | undefined, wanted: ConditionInput[], generation: number | undefined, now: string): Condition[] {
  const out = [...(existing ?? [])];
  for (const w of wanted) {
    const i = out.findIndex((c) => c.type === w.type);
    const prev = i >= 0 ? out[i] : undefined;
    const lastTransitionTime = prev && prev.status === w.status ? prev.lastTransitionTime : now;
    const next: Condition = { ...w, lastTransitionTime, ...(generation === undefined ? {} : { observedGeneration: generation }) };
    if (i >= 0) out[i] = next;
    else out.push(next);
  }
  return out;
}

/** A condition whose status changed (or that is new): what a status write records as an Event. */
export interface ConditionFlip {
  /** The status before; undefined when the condition is new. */
  from?: Condition["status"];
  to: Condition;
}

/** The conditions of `after` whose status differs from `before` — exactly those whose lastTransitionTime setConditions moved. */
export function conditionFlips(before: Condition[] | undefined, after: Condition[] | undefined): ConditionFlip[] {
  return (after ?? []).flatMap((to) => {
    const from = findCondition(before, to.type)?.status;
    return from === to.status ? [] : [{ from, to }];
  });
}

export function findCondition(conditions: Condition[] | undefined, type: string): Condition | undefined {
  return conditions?.find((c) => c.type === type);
}

export const RESOLVED: ConditionInput = { type: "ReferencesResolved", status: "True", reason: "Resolved", message: "All referenced objects exist." };

/** Ready follows the rollout: RollingOut until it is complete, then Available (or ScaledToZero). */
export function readyCondition(rollout: Rollout, message = `${capitalize(rollout.message)}.`): ConditionInput {
  if (!rollout.complete) return { type: "Ready", status: "False", reason: "RollingOut", message };
  return { type: "Ready", status: "True", reason: rollout.desired === 0 ? "ScaledToZero" : "Available", message };
}

/** ReferencesResolved (True: the caller found every reference) and Ready of one workload's rollout. */
export function readinessConditions(rollout: Rollout): ConditionInput[] {
  return [RESOLVED, readyCondition(rollout)];
}

export function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}
