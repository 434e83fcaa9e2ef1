import { test } from "node:test";
import assert from "node:assert/strict";
import { Registry } from "prom-client";
import { createAutoscalerMetrics } from "./metrics.ts";
import type { Decision } from "./types.ts";

const decision: Decision = {
  desired: 3,
  reason: "scale up: queue needs 3",
  inputs: { current: 2, readyReplicas: 2, arrivalRate: 5, forecastRate: 6, trendPerSecond: 0, queueDepth: 4, observedLatency: 0.2, sloSeconds: 0.5, capacityPerReplica: 16, capacitySource: "spec", leadTimeSeconds: 120, signals: {}, raw: 3 },
};

test("a deleted pool's series are dropped, its neighbours' kept", async () => {
  const registry = new Registry();
  const m = createAutoscalerMetrics(registry);
  const gone = { namespace: "ns", pool: "gone", role: "decode" };
  const kept = { namespace: "ns", pool: "kept", role: "decode" };
  m.record(gone, decision);
  m.error(gone);
  m.record(kept, decision);
  m.forget(gone);
  const text = await registry.metrics();
  assert.doesNotMatch(text, /pool="gone"/);
  assert.match(text, /llmfleet_autoscaler_desired_replicas\{namespace="ns",pool="kept",role="decode"\} 3/);
  assert.match(text, /llmfleet_autoscaler_decisions_total\{namespace="ns",pool="kept",role="decode",direction="up"\} 1/);
});
