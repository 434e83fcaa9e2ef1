// Operator command-line options. Every option documents its default.
import { hostname } from "node:os";
import { parseArgs } from "node:util";

export interface OperatorOptions {
  /** Namespace to watch; all namespaces when empty. Default: all. */
  namespace?: string;
  /** Engine image for pods without GPUs (and the router and KV store) whose Model and pool name none. Default llmfleet/engine:0.1.0. */
  engineImage: string;
  /** Engine image for pods with GPUs whose Model and pool name none. Default llmfleet/engine:0.1.0-cuda. */
  engineGPUImage: string;
  /** Port of /healthz, /readyz and /metrics. Default 8081. */
  healthPort: number;
  /** Address the health server binds. Default 0.0.0.0. */
  healthHost: string;
  /** Elect a leader among replicas through a Lease. Default true. */
  leaderElect: boolean;
  /** Namespace of the leader Lease. Default $POD_NAMESPACE, else llmfleet-system. */
  leaseNamespace: string;
  /** Name of the leader Lease. Default llmfleet-operator. */
  leaseName: string;
  /** This replica's identity in the Lease. Default <hostname>-<pid>. */
  identity: string;
  /** Seconds a lease lasts without renewal. Default 15. */
  leaseDurationSeconds: number;
  /** Seconds between renewals. Default 2. */
  retryPeriodSeconds: number;
  /** Concurrent reconcile workers. Default 2. */
  workers: number;
  /** Seconds between autoscaler and node-group passes. Default 15. */
  autoscaleIntervalSeconds: number;
  /**
   * Seconds a new engine pod takes from start to Ready (model fetch and load), added to a node
   * group's provisioningTime as the autoscaler's lead time. Default 60. `npm run bench:pod-start`
   * measures it for a model: with a warm model cache it is the load alone.
   */
  modelLoadSeconds: number;
  /** Attempts to reach the API server at start-up (backing off from 0.5 s) before exiting non-zero. Default 5. */
  connectAttempts: number;
}

export const USAGE = `usage: npm run operator -- [options]
  --namespace NS            watch only NS (default: all namespaces)
  --engine-image IMAGE      engine image of pods without GPUs, the router and the KV store,
                            unless the Model or pool names one (default llmfleet/engine:0.1.0)
  --engine-gpu-image IMAGE  engine image of pods with GPUs (gpusPerReplica > 0), unless the
                            Model or pool names one (default llmfleet/engine:0.1.0-cuda)
  --health-port N           /healthz, /readyz, /metrics port (default 8081; 0 picks a free port)
  --health-host ADDR        bind address of that port (default 0.0.0.0)
  --leader-elect BOOL       elect a leader through a Lease (default true)
  --lease-namespace NS      namespace of the Lease (default $POD_NAMESPACE or llmfleet-system)
  --lease-name NAME         name of the Lease (default llmfleet-operator)
  --id ID                   identity in the Lease (default <hostname>-<pid>)
  --lease-duration S        lease validity in seconds (default 15)
  --retry-period S          renew period in seconds (default 2)
  --workers N               concurrent reconcile workers (default 2)
  --autoscale-interval S    seconds between autoscaler and node-group passes (default 15)
  --model-load-seconds S    seconds a new engine pod takes to become Ready (model fetch and load),
                            part of the autoscaler's lead time (default 60)
  --connect-attempts N      attempts to reach the API server at start-up, backing off from
                            0.5 s, before exiting non-zero (default 5)
The cluster comes from $KUBECONFIG, else ~/.kube/config, else the in-cluster service account;
with none of them the operator exits non-zero, saying what it tried.`;

function int(v: string | undefined, name: string, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`--${name} must be a non-negative integer, got ${JSON.stringify(v)}`);
  return n;
}

function bool(v: string | undefined, name: string, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (v === "true" || v === "false") return v === "true";
  throw new Error(`--${name} must be true or false, got ${JSON.stringify(v)}`);
}

export function parseOperatorOptions(argv: string[], env: NodeJS.ProcessEnv = process.env): OperatorOptions {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: Object.fromEntries(
      [
        "namespace",
        "engine-image",
        "engine-gpu-image",
        "health-port",
        "health-host",
        "leader-elect",
        "lease-namespace",
        "lease-name",
        "id",
        "lease-duration",
        "retry-period",
        "workers",
        "autoscale-interval",
        "model-load-seconds",
        "connect-attempts",
      ].map((n) => [n, { type: "string" as const }]),
    ),
  });
  const v = values as Record<string, string | undefined>;
  return {
    namespace: v.namespace || undefined,
    engineImage: v["engine-image"] ?? "llmfleet/engine:0.1.0",
    engineGPUImage: v["engine-gpu-image"] ?? "llmfleet/engine:0.1.0-cuda",
    healthPort: int(v["health-port"], "health-port", 8081),
    healthHost: v["health-host"] ?? "0.0.0.0",
    leaderElect: bool(v["leader-elect"], "leader-elect", true),
    leaseNamespace: v["lease-namespace"] ?? env.POD_NAMESPACE ?? "llmfleet-system",
    leaseName: v["lease-name"] ?? "llmfleet-operator",
    identity: v.id ?? `${hostname()}-${process.pid}`,
    leaseDurationSeconds: int(v["lease-duration"], "lease-duration", 15),
    retryPeriodSeconds: int(v["retry-period"], "retry-period", 2),
    workers: int(v.workers, "workers", 2),
    autoscaleIntervalSeconds: Math.max(1, int(v["autoscale-interval"], "autoscale-interval", 15)),
    modelLoadSeconds: int(v["model-load-seconds"], "model-load-seconds", 60),
    connectAttempts: Math.max(1, int(v["connect-attempts"], "connect-attempts", 5)),
  };
}
