// The operator entrypoint: the cluster first (exit non-zero, saying what was tried, when there is
// none or its API server does not answer), then health and metrics, then leader election, then
// informers and reconcile workers. Losing the lease exits the process (a restart re-enters the election), as
// controller-runtime does: two replicas must never reconcile at once.
import type { AddressInfo } from "node:net";
import { KubeClient } from "../lib/kube/client.ts";
import { parseOperatorOptions, USAGE, type OperatorOptions } from "./options.ts";
import { buildCaches } from "./reconcilers/caches.ts";
import { registerAutoscaler } from "./autoscaler/controller.ts";
import { registerNodeGroups } from "./nodegroups/controller.ts";
import { registerFleetGauges } from "./reconcilers/fleet-metrics.ts";
import { registerReconcilers } from "./reconcilers/reconcilers.ts";
import { ClusterConnectError, loadClusterConfig, waitForAPIServer } from "./runtime/connect.ts";
import { startHealthServer } from "./runtime/health.ts";
import { LeaderElector } from "./runtime/leader.ts";
import { Manager } from "./runtime/manager.ts";
import { createOperatorMetrics } from "./runtime/metrics.ts";

function log(msg: string): void {
  console.log(`${new Date().toISOString()} ${msg}`);
}

export async function runOperator(opts: OperatorOptions): Promise<void> {
  const cluster = loadClusterConfig();
  const version = await waitForAPIServer(cluster, { attempts: opts.connectAttempts });
  const client = KubeClient.fromKubeConfig(cluster.kc);
  const metrics = createOperatorMetrics();
  client.onRequest = (r): void => metrics.apiRequests.inc({ verb: r.verb, resource: r.resource, subresource: r.subresource });
  client.onStatusWrite = (w): void => metrics.statusWrites.inc({ resource: w.resource, changed: String(w.changed) });
  const manager = new Manager(client, metrics, opts.identity);
  manager.log = log;
  const elector = opts.leaderElect
    ? new LeaderElector(client, {
        namespace: opts.leaseNamespace,
        name: opts.leaseName,
        identity: opts.identity,
        leaseDurationSeconds: opts.leaseDurationSeconds,
        retryPeriodSeconds: opts.retryPeriodSeconds,
      })
    : undefined;
  const server = await startHealthServer(
    opts.healthPort,
    { live: () => true, ready: () => !elector || !elector.isLeader() || manager.hasSynced() },
    metrics.registry,
    opts.healthHost,
  );
  const port = (server.address() as AddressInfo).port;
  log(`llmfleet operator ${opts.identity}: health on ${opts.healthHost}:${port}, API server ${client.server} (${version}, from ${cluster.from})`);
  let stopLoops = (): void => undefined;
  const shutdown = async (): Promise<void> => {
    log("shutting down");
    stopLoops();
    manager.stop();
    await elector?.release();
    server.close();
    process.exit(0);
  };
  process.once("SIGTERM", () => void shutdown());
  process.once("SIGINT", () => void shutdown());
  if (elector) {
    log(`waiting for leadership of Lease ${opts.leaseNamespace}/${opts.leaseName}`);
    await elector.acquire();
    metrics.isLeader.set(1);
    log("became leader");
    void elector.holdLease(() => {
      log("lost leadership; exiting so a restart re-enters the election");
      process.exit(1);
    });
  }
  const caches = buildCaches(manager, opts.namespace);
  registerReconcilers(manager, caches, { engineImage: opts.engineImage, engineGPUImage: opts.engineGPUImage });
  registerFleetGauges(metrics.registry, caches);
  const autoscaler = registerAutoscaler(manager, caches, {
    registry: metrics.registry,
    intervalSeconds: opts.autoscaleIntervalSeconds,
    modelLoadSeconds: opts.modelLoadSeconds,
  });
  const nodeGroups = registerNodeGroups(manager, caches, { intervalSeconds: opts.autoscaleIntervalSeconds });
  stopLoops = (): void => {
    autoscaler.stop();
    nodeGroups.stop();
  };
  await manager.startInformers();
  log(`caches synced${opts.namespace ? ` (namespace ${opts.namespace})` : " (all namespaces)"}; reconciling`);
  await manager.runWorkers(opts.workers);
}

async function main(): Promise<void> {
  let opts: OperatorOptions;
  try {
    opts = parseOperatorOptions(process.argv.slice(2));
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`);
    process.exit(2);
  }
  await runOperator(opts);
}

if (process.argv.includes("--help")) {
  console.log(USAGE);
} else {
  main().catch((err: unknown) => {
    // No cluster is a configuration problem, not a crash: its message says it all, without a stack.
    const detail = err instanceof ClusterConnectError ? err.message : err instanceof Error ? err.stack : String(err);
    console.error(`operator failed: ${detail}`);
    process.exit(1);
  });
}
