// Run records, pure: each provider actuation is an object with conditions, as the Pulumi
// Kubernetes operator records its updates. Progressing while it runs; Complete or Failed when it
// ends; Aborted when an operator (re)start finds it Progressing, since nobody is left to finish it.
// A ConcurrentUpdate (another update holds the stack) is neither: it ends the run and requeues.
import type { NodeGroupActuation, NodeGroupRun } from "../../crds/schema/nodegroup.ts";
import { setConditions, type ConditionInput } from "../plan/conditions.ts";
import type { EventInput } from "../runtime/events.ts";

export type RunOutcome = "Complete" | "Failed" | "Aborted" | "ConcurrentUpdate";

export interface RunStart {
  provider: string;
  targetNodes: number;
  operator: string;
  now: string;
}

export function startRun(previous: NodeGroupRun | undefined, s: RunStart): NodeGroupRun {
  const message = `${s.provider}: bringing the group to ${s.targetNodes} nodes.`;
  const conditions: ConditionInput[] = [
    { type: "Progressing", status: "True", reason: "Running", message },
    { type: "Complete", status: "False", reason: "Running", message: "The run has not ended." },
    { type: "Failed", status: "False", reason: "Running", message: "The run has not ended." },
  ];
  return {
    id: (previous?.id ?? 0) + 1,
    provider: s.provider,
    targetNodes: s.targetNodes,
    startedAt: s.now,
    operator: s.operator,
    message,
    conditions: setConditions([], conditions, undefined, s.now),
  };
}

function outcomeConditions(outcome: RunOutcome, message: string): ConditionInput[] {
  const ended = (type: string, ok: boolean): ConditionInput => ({ type, status: ok ? "True" : "False", reason: outcome, message });
  const progressing: ConditionInput = { type: "Progressing", status: "False", reason: outcome, message };
  if (outcome === "Complete") return [progressing, ended("Complete", true), ended("Failed", false)];
  if (outcome === "Aborted") return [progressing, ended("Complete", false), ended("Failed", true), ended("Aborted", true)];
  return [progressing, ended("Complete", false), ended("Failed", outcome === "Failed")];
}

export function endRun(run: NodeGroupRun, outcome: RunOutcome, message: string, now: string): NodeGroupRun {
  return { ...run, finishedAt: now, message, conditions: setConditions(run.conditions, outcomeConditions(outcome, message), undefined, now) };
}

export function runState(run: NodeGroupRun | undefined): RunOutcome | "Progressing" | "None" {
  if (!run) return "None";
  const on = (type: string): boolean => run.conditions.some((c) => c.type === type && c.status === "True");
  if (on("Progressing")) return "Progressing";
  if (on("Aborted")) return "Aborted";
  if (on("Complete")) return "Complete";
  if (on("Failed")) return "Failed";
  return "ConcurrentUpdate";
}

/** The actuation status with a new decision; decidedAt moves only when the decision text changes. */
export function decide(prev: NodeGroupActuation | undefined, d: Omit<NodeGroupActuation, "decidedAt" | "lastRun">, now: string): NodeGroupActuation {
  const decidedAt = prev && prev.decision === d.decision ? prev.decidedAt : now;
  return { ...d, decidedAt, ...(prev?.lastRun ? { lastRun: prev.lastRun } : {}) };
}

/**
 * The Event a change of the last run calls for: a run started (a new id), or the run ended (its
 * state left Progressing). None when nothing about the run changed.
 */
export function runEvent(before: NodeGroupRun | undefined, after: NodeGroupRun | undefined): EventInput | undefined {
  if (!after) return undefined;
  const state = runState(after);
  if (before?.id !== after.id && state === "Progressing") return { type: "Normal", reason: "NodeGroupRunStarted", action: "Scale", note: after.message };
  if (runState(before) === state || state === "Progressing") return undefined;
  const failed = state === "Failed" || state === "Aborted";
  return { type: failed ? "Warning" : "Normal", reason: `NodeGroupRun${state}`, action: "Scale", note: `Run ${after.id}: ${after.message}` };
}
