// Whether a workload (Deployment, StatefulSet) has finished rolling out to what we asked of it, as
// `kubectl rollout status` judges it: its controller has seen the latest spec, every replica runs
// the latest template, no old replica is left, and the wanted number are ready. Counting ready
// replicas alone would call a pool Ready while old pods still serve in the middle of a rollout.
// Pure.

/** The fields of a Deployment or StatefulSet a rollout is judged by. */
export interface WorkloadView {
  metadata?: { generation?: number };
  status?: { observedGeneration?: number; replicas?: number; updatedReplicas?: number; readyReplicas?: number };
}

export interface Rollout {
  complete: boolean;
  /** Replicas asked for. */
  desired: number;
  /** Where the rollout stands, e.g. "2 of 3 replicas updated" (no capital, no full stop: callers compose it). */
  message: string;
}

interface Counts {
  generation: number;
  observed: number;
  replicas: number;
  updated: number;
  ready: number;
}

function countsOf(w: WorkloadView): Counts {
  const { observedGeneration = 0, replicas = 0, updatedReplicas = 0, readyReplicas = 0 } = w.status ?? {};
  return { generation: w.metadata?.generation ?? 0, observed: observedGeneration, replicas, updated: updatedReplicas, ready: readyReplicas };
}

const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? "" : "s"}`;

/** The first reason the rollout is not complete, in the order kubectl checks them; undefined when complete. */
function pending(c: Counts, desired: number, kind: string): string | undefined {
  if (c.observed < c.generation) return `waiting for the ${kind} controller to observe generation ${c.generation} (it has seen ${c.observed})`;
  if (c.updated < desired) return `${c.updated} of ${plural(desired, "replica")} updated`;
  if (c.replicas > c.updated) return `${plural(c.replicas - c.updated, "old replica")} pending termination`;
  if (c.replicas > desired) return `scaling down from ${c.replicas} to ${plural(desired, "replica")}`;
  if (c.ready < desired) return `${c.ready} of ${plural(desired, "updated replica")} ready`;
  return undefined;
}

/** How far the workload `w` (undefined: not created yet) is from `desired` replicas of its current spec. */
export function rolloutOf(w: WorkloadView | undefined, desired: number, kind: string): Rollout {
  if (!w) return { complete: false, desired, message: `the ${kind} is not created yet` };
  const c = countsOf(w);
  const wait = pending(c, desired, kind);
  if (wait) return { complete: false, desired, message: wait };
  return { complete: true, desired, message: desired === 0 ? "no replicas are wanted" : `${c.ready}/${desired} replicas ready` };
}
