// llmfleet_autoscaler_* metrics: every decision's inputs and output, for the Grafana autoscaling view.
import { Counter, Gauge, type Registry } from "prom-client";
import type { Decision } from "./types.ts";

type PoolLabels = "namespace" | "pool" | "role";
const LABELS: PoolLabels[] = ["namespace", "pool", "role"];

export interface AutoscalerMetrics {
  record(labels: Record<PoolLabels, string>, d: Decision): void;
  error(labels: Record<PoolLabels, string>): void;
  /** Drops a deleted pool's series (a fleet that comes and goes would otherwise export them forever). */
  forget(labels: Record<PoolLabels, string>): void;
}

export function createAutoscalerMetrics(registry: Registry): AutoscalerMetrics {
  const registers = [registry];
  const gauge = (name: string, help: string): Gauge<PoolLabels> => new Gauge({ name: `llmfleet_autoscaler_${name}`, help, labelNames: LABELS, registers });
  const desired = gauge("desired_replicas", "Replicas the autoscaler last asked for.");
  const current = gauge("current_replicas", "Replicas asked for before the last decision.");
  const ready = gauge("ready_replicas", "Ready replicas seen at the last decision.");
  const arrival = gauge("arrival_rate", "Work arriving per second (prefill: prompt tokens, decode: requests).");
  const forecast = gauge("forecast_rate", "Arrival rate expected after the lead time.");
  const queue = gauge("queue_depth", "Requests waiting across the pool.");
  const latency = gauge("observed_latency_seconds", "TTFT p90 (prefill) or ITL p90 (decode) over the last interval.");
  const slo = gauge("slo_seconds", "The latency target the pool holds.");
  const capacity = gauge("capacity_per_replica", "Learned per-replica capacity (prefill: tokens/s, decode: sequences).");
  const lead = gauge("lead_time_seconds", "Node provisioning plus model load the forecast looks ahead.");
  const decisions = new Counter({
    name: "llmfleet_autoscaler_decisions_total",
    help: "Decisions by direction (up, down, hold).",
    labelNames: [...LABELS, "direction"],
    registers,
  });
  const errors = new Counter({
    name: "llmfleet_autoscaler_errors_total",
    help: "Passes that failed for a pool (retried next interval).",
    labelNames: LABELS,
    registers,
  });
  return {
    record(l, d): void {
      desired.set(l, d.desired);
      current.set(l, d.inputs.current);
      ready.set(l, d.inputs.readyReplicas);
      arrival.set(l, d.inputs.arrivalRate);
      forecast.set(l, d.inputs.forecastRate);
      queue.set(l, d.inputs.queueDepth);
      if (d.inputs.observedLatency !== undefined) latency.set(l, d.inputs.observedLatency);
      slo.set(l, d.inputs.sloSeconds);
      capacity.set(l, d.inputs.capacityPerReplica);
      lead.set(l, d.inputs.leadTimeSeconds);
      const direction = d.desired > d.inputs.current ? "up" : d.desired < d.inputs.current ? "down" : "hold";
      decisions.inc({ ...l, direction });
    },
    error(l): void {
      errors.inc(l);
    },
    forget(l): void {
      for (const g of [desired, current, ready, arrival, forecast, queue, latency, slo, capacity, lead]) g.remove(l);
      for (const direction of ["up", "down", "hold"]) decisions.remove({ ...l, direction });
      errors.remove(l);
    },
  };
}
