// metav1.Condition bookkeeping, pure: `now` is passed in, and lastTransitionTime moves only when a
// condition's status flips.
import type { Condition } from "../../crds/schema/common.ts";
import type { KubeObject } from "../../lib/kube/types.ts";

/** What a planner returns: the children to apply and the status to write. */
export interface Plan<Status> {
  children: KubeObject[];
  status: Status;
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

export function findCondition(conditions: Condition[] | undefined, type: string): Condition | undefined {
  return conditions?.find((c) => c.type === type);
}

export function readinessConditions(ready: number, desired: number): ConditionInput[] {
  const resolved: ConditionInput = { type: "ReferencesResolved", status: "True", reason: "Resolved", message: "All referenced objects exist." };
  if (desired === 0) return [resolved, { type: "Ready", status: "True", reason: "ScaledToZero", message: "No replicas are wanted." }];
  const ok = ready >= desired;
  return [resolved, { type: "Ready", status: ok ? "True" : "False", reason: ok ? "Available" : "Progressing", message: `${ready}/${desired} replicas ready.` }];
}
