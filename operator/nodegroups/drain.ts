// Drain by eviction, run by the actuator before any provider removes a node: cordon it, then evict
// its pods through the Eviction API so the PodDisruptionBudgets the pool planners create hold. A
// refused eviction (429) is asked again with backoff until the drain timeout; then the node stays
// cordoned and the result says why, unless the group's spec.drain.force allows deleting what is
// left. Evicted pods are waited for (graceful termination) before the node may go.
import { setTimeout as sleep } from "node:timers/promises";
import type { V1Node, V1Pod } from "@kubernetes/client-node";
import { ignoreNotFound, isConflict, isNotFound, isTooManyRequests, KubeApiError, type KubeClient } from "../../lib/kube/client.ts";
import { R } from "../../lib/kube/resources.ts";
import {
  backoffMs,
  blockedByBudget,
  CORDONED_BY_ANNOTATION,
  drained,
  isEvictable,
  podRef,
  stillTerminating,
  type DrainPolicy,
  type DrainResult,
  type Refusal,
} from "./drain-report.ts";

export interface Drainer {
  client: KubeClient;
  /** Field manager recorded in the cordon annotation. */
  manager: string;
}

/** Cordons the node (marking it ours unless someone else cordoned it first); false when it is gone. */
async function cordon(d: Drainer, name: string): Promise<boolean> {
  const node = await d.client.get<V1Node>(R.Node, undefined, name).catch((err: unknown) => ignoreNotFound(err));
  if (!node) return false;
  if (node.spec?.unschedulable) return true;
  await d.client.mergePatch(R.Node, { name }, { metadata: { annotations: { [CORDONED_BY_ANNOTATION]: d.manager } }, spec: { unschedulable: true } });
  return true;
}

export async function uncordon(client: KubeClient, name: string): Promise<void> {
  const patch = { metadata: { annotations: { [CORDONED_BY_ANNOTATION]: null } }, spec: { unschedulable: false } };
  await client.mergePatch(R.Node, { name }, patch).catch(ignoreNotFound);
}

/** The node's pods that a drain evicts and waits for, listed by field selector (not the whole cluster). */
async function podsOn(client: KubeClient, node: string): Promise<V1Pod[]> {
  const pods = await client.list<V1Pod>(R.Pod, { fieldSelector: `spec.nodeName=${node}` });
  return pods.items.filter(isEvictable);
}

/** One eviction: undefined when the pod is going or gone, a Refusal when a budget says no. */
async function evictPod(client: KubeClient, pod: V1Pod): Promise<Refusal | undefined> {
  try {
    await client.evict(pod.metadata?.namespace ?? "", pod.metadata?.name ?? "", pod.metadata?.uid);
    return undefined;
  } catch (err) {
    if (isNotFound(err) || isConflict(err)) return undefined; // gone, or the name now holds another pod
    if (isTooManyRequests(err)) return { pod: podRef(pod), why: (err as KubeApiError).detail };
    throw err;
  }
}

/** Evicts until every pod is going or the deadline has passed (one last try at it); the pods still refused, and why. */
async function evictAll(d: Drainer, pods: V1Pod[], deadline: number): Promise<Array<{ pod: V1Pod; refusal: Refusal }>> {
  let pending = pods;
  for (let round = 0; ; round++) {
    const refused: Array<{ pod: V1Pod; refusal: Refusal }> = [];
    for (const pod of pending) {
      const refusal = await evictPod(d.client, pod);
      if (refusal) refused.push({ pod, refusal });
    }
    const left = deadline - Date.now();
    if (refused.length === 0 || left <= 0) return refused;
    await sleep(Math.min(backoffMs(round), left));
    pending = refused.map((r) => r.pod);
  }
}

/** Polls until the node has no evictable pods or the deadline has passed; the pods left. */
async function waitGone(d: Drainer, node: string, deadline: number): Promise<string[]> {
  for (let round = 0; ; round++) {
    const pods = (await podsOn(d.client, node)).map(podRef);
    const left = deadline - Date.now();
    if (pods.length === 0 || left <= 0) return pods;
    await sleep(Math.min(backoffMs(round), 5000, left));
  }
}

export async function drainNode(d: Drainer, node: string, policy: DrainPolicy): Promise<DrainResult> {
  if (!(await cordon(d, node))) return { node, drained: true, message: `${node} is gone` };
  const pods = (await podsOn(d.client, node)).filter((p) => !p.metadata?.deletionTimestamp);
  const refused = await evictAll(d, pods, Date.now() + policy.timeoutSeconds * 1000);
  const refusals = refused.map((r) => r.refusal);
  if (refusals.length > 0 && !policy.force) return blockedByBudget(node, refusals, policy);
  for (const { pod } of refused) await d.client.delete(R.Pod, pod.metadata?.namespace, pod.metadata?.name ?? "").catch(ignoreNotFound);
  const left = await waitGone(d, node, Date.now() + policy.timeoutSeconds * 1000);
  if (left.length > 0) return stillTerminating(node, left, policy);
  return drained(node, pods.length - refused.length, refused.length);
}

/** Drains each node in turn; a blocked one does not stop the others. */
export async function drainNodes(d: Drainer, nodes: string[], policy: DrainPolicy): Promise<DrainResult[]> {
  const results: DrainResult[] = [];
  for (const node of nodes) results.push(await drainNode(d, node, policy));
  return results;
}
