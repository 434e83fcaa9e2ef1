// Operator metrics (prom-client): reconcile duration, queue depth, errors, informer restarts, dropped Events.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

export interface OperatorMetrics {
  registry: Registry;
  reconcileDuration: Histogram<"controller" | "result">;
  reconcileErrors: Counter<"controller" | "reason">;
  queueDepth: Gauge;
  informerRestarts: Counter<"resource">;
  isLeader: Gauge;
  eventsDropped: Counter<"reason">;
  apiRequests: Counter<"verb" | "resource" | "subresource">;
  statusWrites: Counter<"resource" | "changed">;
}

export function createOperatorMetrics(): OperatorMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "llmfleet_operator_" });
  return {
    registry,
    reconcileDuration: new Histogram({
      name: "llmfleet_operator_reconcile_duration_seconds",
      help: "Time of one reconcile pass, by controller and result (ok, error, invalid).",
      labelNames: ["controller", "result"],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    reconcileErrors: new Counter({
      name: "llmfleet_operator_reconcile_errors_total",
      help: "Reconcile passes that failed, by reason: requeued with backoff, except InvalidSpec (not retried until the spec changes).",
      labelNames: ["controller", "reason"],
      registers: [registry],
    }),
    queueDepth: new Gauge({ name: "llmfleet_operator_workqueue_depth", help: "Keys waiting in the work queue.", registers: [registry] }),
    informerRestarts: new Counter({
      name: "llmfleet_operator_informer_restarts_total",
      help: "Watches restarted by the supervisor after an error.",
      labelNames: ["resource"],
      registers: [registry],
    }),
    isLeader: new Gauge({ name: "llmfleet_operator_leader", help: "1 while this replica holds the leader lease.", registers: [registry] }),
    eventsDropped: new Counter({
      name: "llmfleet_operator_events_dropped_total",
      help: "Kubernetes Events the API server refused (Events are best effort), by the Event's reason.",
      labelNames: ["reason"],
      registers: [registry],
    }),
    apiRequests: new Counter({
      name: "llmfleet_operator_api_requests_total",
      help: "Requests this process sent the API server, by verb (get, list, watch, create, update, apply, patch, delete), resource and subresource.",
      labelNames: ["verb", "resource", "subresource"],
      registers: [registry],
    }),
    statusWrites: new Counter({
      name: "llmfleet_operator_status_writes_total",
      help: "Status writes by resource and whether the API server changed the object (changed=\"false\": a write that was not needed).",
      labelNames: ["resource", "changed"],
      registers: [registry],
    }),
  };
}
