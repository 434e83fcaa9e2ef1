// Scale-down that removes the idlest pod: before the autoscaler lowers a pool's replicas, each of
// its running pods gets the annotation controller.kubernetes.io/pod-deletion-cost set to the
// requests it has in flight (running + waiting, from its own /metrics). The ReplicaSet controller
// deletes the pods of lowest cost first (after pods not yet scheduled, not running or not ready),
// so the pod that leaves is the one with the least work to drain; its engine then drains what it
// still has (engine/http/drain.ts) within the terminationGracePeriodSeconds the planner sets.
import type { V1Pod } from "@kubernetes/client-node";
import type { KubeClient } from "../../lib/kube/client.ts";
import { R } from "../../lib/kube/resources.ts";
import { scrapeEach, type MetricsSource, type PoolScrape } from "./scrape.ts";

export const DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost";

/** A pod's cost: its requests in flight. A pod that did not answer its scrape costs nothing to remove. */
export function deletionCost(scrape: PoolScrape | undefined): number {
  if (!scrape || scrape.pods === 0) return 0;
  return Math.max(0, Math.round(scrape.running + scrape.queueDepth));
}

export interface CostTarget {
  pod: V1Pod;
  /** The pod's /metrics URL; undefined when it has none yet (no IP). */
  url: string | undefined;
}

/**
 * Sets every target pod's deletion cost to its requests in flight, patching only pods whose
 * annotation differs. Returns the costs set, by pod name.
 */
export async function markDeletionCosts(client: KubeClient, targets: CostTarget[], source: MetricsSource): Promise<Map<string, number>> {
  // Each pod on its own; a pod without a URL, or whose scrape failed, reads as no answer.
  const scrapes = await scrapeEach(source, targets.flatMap((t) => (t.url ? [t.url] : [])));
  const costs = new Map<string, number>();
  await Promise.all(
    targets.map(async (t) => {
      const name = t.pod.metadata?.name ?? "";
      const cost = deletionCost(t.url === undefined ? undefined : scrapes.get(t.url));
      costs.set(name, cost);
      if (t.pod.metadata?.annotations?.[DELETION_COST_ANNOTATION] === String(cost)) return;
      await client.mergePatch(R.Pod, { namespace: t.pod.metadata?.namespace ?? "", name }, { metadata: { annotations: { [DELETION_COST_ANNOTATION]: String(cost) } } });
    }),
  );
  return costs;
}
