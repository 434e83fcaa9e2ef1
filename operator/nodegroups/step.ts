// The actuator's next step for one group, pure: run the provider, wait, or halt, with the reason
// that goes to status.actuation.decision.
import type { GPUNodeGroup } from "../api.ts";
import type { NodeGroupRun } from "../../crds/schema/nodegroup.ts";
import { explainSize, type NodeGroupSize } from "../plan/nodegroup.ts";
import type { NodeGroupActions } from "./plan.ts";
import { ACK_RUN_ANNOTATION } from "./provider.ts";
import { runState } from "./runs.ts";

export type Step = { kind: "run"; decision: string; create: string[]; remove: string[]; nodes: string[] } | { kind: "wait" | "halt"; decision: string };

export interface StepInput {
  group: GPUNodeGroup;
  actions: NodeGroupActions;
  members: string[];
  size: NodeGroupSize;
  lastRun?: NodeGroupRun;
  /** The provider leaves a cut-short run to a person (see NodeGroupProvider.resumable). */
  resumable: boolean;
  /** Value of the acknowledge-run annotation. */
  acknowledgedRun?: number;
  surplusForSeconds: number;
  scaleDownDelaySeconds: number;
  provisioningSeconds: number;
  retrySeconds: number;
  nowMs: number;
}

function sinceSeconds(at: string | undefined, nowMs: number): number {
  return at ? (nowMs - Date.parse(at)) / 1000 : Infinity;
}

function haltAfterAbort(i: StepInput, run: NodeGroupRun): Step | undefined {
  if (i.resumable || i.acknowledgedRun === run.id) return undefined;
  return { kind: "halt", decision: `halted: run ${run.id} was aborted by an operator restart; check the stack, then annotate ${ACK_RUN_ANNOTATION}=${run.id}` };
}

/** A reason to hold off before touching the provider again, or undefined. */
function holdOff(i: StepInput, current: number): Step | undefined {
  const run = i.lastRun;
  if (!run) return undefined;
  const state = runState(run);
  if (state === "Aborted") return haltAfterAbort(i, run);
  const age = sinceSeconds(run.finishedAt, i.nowMs);
  if (state === "Failed" && age < i.retrySeconds) return { kind: "wait", decision: `retrying at ${isoSeconds(i.nowMs + (i.retrySeconds - age) * 1000)}: run ${run.id} failed` };
  const provisioning = state === "Complete" && run.targetNodes === i.actions.desired && current !== run.targetNodes;
  if (provisioning && age < i.provisioningSeconds) {
    return { kind: "wait", decision: `provisioning: run ${run.id} asked for ${run.targetNodes} nodes, ${current} present` };
  }
  return undefined;
}

export function nextStep(i: StepInput): Step {
  const current = i.members.length;
  const why = explainSize(i.group, i.size);
  const held = holdOff(i, current);
  if (held) return held;
  const { create, remove, desired } = i.actions;
  if (create.length > 0)
    return { kind: "run", decision: `scale up ${current} → ${desired} nodes: ${why}`, create, remove: [], nodes: [...i.members, ...create] };
  if (remove.length > 0) {
    const nodes = i.members.filter((n) => !remove.includes(n));
    return { kind: "run", decision: `scale down ${current} → ${desired} nodes after the ${i.scaleDownDelaySeconds}s delay: ${why}`, create: [], remove, nodes };
  }
  if (current > desired) {
    const at = isoSeconds(i.nowMs + (i.scaleDownDelaySeconds - i.surplusForSeconds) * 1000);
    return { kind: "wait", decision: `surplus of ${current - desired} nodes, removed at ${at} unless demand returns: ${why}` };
  }
  return { kind: "wait", decision: `steady at ${current} nodes: ${why}` };
}

/**
 * A deadline as a time, not a countdown: the decision goes to status, and a countdown would change
 * it (and patch status, and re-queue the group) on every pass while nothing changes.
 */
function isoSeconds(ms: number): string {
  return new Date(Math.round(ms / 1000) * 1000).toISOString().replace(/\.\d+Z$/, "Z");
}
