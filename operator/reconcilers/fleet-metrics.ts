// Fleet state as Prometheus gauges, read from the informer caches at scrape time (the status the
// reconcilers wrote is the truth): desired vs ready replicas per pool, nodes and GPUs per group.
// The Grafana autoscaling view plots these next to the engines' own metrics.
import { Gauge, type Registry } from "prom-client";
import type { EnginePool } from "../api.ts";
import { nameOf, namespaceOf } from "../../lib/kube/types.ts";
import type { Caches } from "./caches.ts";
import { durationSeconds } from "../autoscaler/duration.ts";

type PoolLabels = "namespace" | "pool" | "role" | "state";

function setPool(g: Gauge<PoolLabels>, pool: EnginePool, role: string): void {
  const labels = { namespace: namespaceOf(pool), pool: nameOf(pool), role };
  g.set({ ...labels, state: "desired" }, pool.status?.desiredReplicas ?? 0);
  g.set({ ...labels, state: "ready" }, pool.status?.readyReplicas ?? 0);
}

export function registerFleetGauges(registry: Registry, caches: Caches): void {
  new Gauge<PoolLabels>({
    name: "llmfleet_pool_replicas",
    help: "Replicas of each prefill, decode and aggregated pool, by state (desired, ready).",
    labelNames: ["namespace", "pool", "role", "state"],
    registers: [registry],
    collect() {
      this.reset();
      for (const p of caches.prefillPools.list()) setPool(this, p, "prefill");
      for (const p of caches.decodePools.list()) setPool(this, p, "decode");
      for (const m of caches.models.list()) {
        if (!m.spec.replicas) continue;
        const labels = { namespace: namespaceOf(m), pool: nameOf(m), role: "aggregated" };
        this.set({ ...labels, state: "desired" }, m.status?.desiredReplicas ?? 0);
        this.set({ ...labels, state: "ready" }, m.status?.readyReplicas ?? 0);
      }
    },
  });
  new Gauge<"namespace" | "group" | "state">({
    name: "llmfleet_nodegroup_nodes",
    help: "Nodes of each GPUNodeGroup, by state (desired, ready, provisioning).",
    labelNames: ["namespace", "group", "state"],
    registers: [registry],
    collect() {
      this.reset();
      for (const g of caches.nodeGroups.list()) {
        const labels = { namespace: namespaceOf(g), group: nameOf(g) };
        this.set({ ...labels, state: "desired" }, g.status?.desiredNodes ?? 0);
        this.set({ ...labels, state: "ready" }, g.status?.readyNodes ?? 0);
        this.set({ ...labels, state: "provisioning" }, g.status?.provisioningNodes ?? 0);
      }
    },
  });
  new Gauge<"namespace" | "group" | "kind">({
    name: "llmfleet_nodegroup_gpus",
    help: "GPUs of each GPUNodeGroup: allocatable capacity of ready nodes, and the demand of the pools placed on it.",
    labelNames: ["namespace", "group", "kind"],
    registers: [registry],
    collect() {
      this.reset();
      for (const g of caches.nodeGroups.list()) {
        const labels = { namespace: namespaceOf(g), group: nameOf(g) };
        this.set({ ...labels, kind: "capacity" }, g.status?.gpuCapacity ?? 0);
        this.set({ ...labels, kind: "demand" }, g.status?.gpuDemand ?? 0);
      }
    },
  });
  new Gauge<"namespace" | "model" | "objective">({
    name: "llmfleet_model_slo_seconds",
    help: "Each Model's latency objectives (ttft_p90, itl_p90), for plotting against what the pools deliver.",
    labelNames: ["namespace", "model", "objective"],
    registers: [registry],
    collect() {
      this.reset();
      for (const m of caches.models.list()) {
        const labels = { namespace: namespaceOf(m), model: nameOf(m) };
        this.set({ ...labels, objective: "ttft_p90" }, durationSeconds(m.spec.slo?.ttftP90, 0.5));
        this.set({ ...labels, objective: "itl_p90" }, durationSeconds(m.spec.slo?.itlP90, 0.05));
      }
    },
  });
}
