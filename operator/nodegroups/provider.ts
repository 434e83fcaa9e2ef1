// What a node-group provider does, whatever adds the nodes: kwok (Node objects), karpenter (a
// NodePool's limits) or pulumi (a stack per group). The actuator has already cordoned and drained
// the nodes in `remove` when `apply` is called (drain.ts).
import type { GPUNodeGroup } from "../api.ts";
import { fieldManager } from "../runtime/apply.ts";

/** The actuator's field manager: nodes it creates, the group's status.actuation and DrainBlocked condition. */
export const NODEGROUP_MANAGER = fieldManager("nodegroups");

export interface NodeGroupChange {
  group: GPUNodeGroup;
  /** Node count after the change. */
  target: number;
  /** Names of the group's nodes after the change (providers that name nodes use them). */
  nodes: string[];
  create: string[];
  remove: string[];
}

export interface NodeGroupProvider {
  readonly name: string;
  /**
   * False when a run cut short can leave state behind that a person must look at (a Pulumi stack
   * with pending operations): an aborted run then halts the group until it is acknowledged.
   */
  readonly resumable: boolean;
  /** Resolves with what was done; throws on failure (ConcurrentUpdate for a held stack). */
  apply(change: NodeGroupChange): Promise<string>;
}

/** Another update holds the stack: not a failure, the next pass retries. */
export class ConcurrentUpdate extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ConcurrentUpdate";
  }
}

/** Annotation that resumes a group halted by an aborted run: its value is the aborted run's id. */
export const ACK_RUN_ANNOTATION = "serving.llmfleet.dev/acknowledge-run";
