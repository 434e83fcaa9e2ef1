// Events on the real API server: a pool that becomes Ready, an autoscaler scale and the rollout it
// starts each leave an events.k8s.io/v1 Event from llmfleet; a repeat is counted in the first
// Event's series; an unchanged condition records nothing however often it is reconciled.
import { TEST_MODEL_YAML } from "../testing/manifests.ts";
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { eventually } from "../testing/eventually.ts";
import { kubectlOk } from "../testing/kubectl.ts";
import { createKwokGpuNode } from "../scripts/cluster/kwok-nodes.ts";
import type { PrefillPool } from "./api.ts";
import { registerAutoscaler, type Autoscaler } from "./autoscaler/controller.ts";
import { buildCaches } from "./reconcilers/caches.ts";
import { registerReconcilers } from "./reconcilers/reconcilers.ts";
import { Manager } from "./runtime/manager.ts";
import { createOperatorMetrics } from "./runtime/metrics.ts";
import { adminClient, ensureNamespace, installCRDs, jsonOf } from "../testing/cluster.ts";

const NS = "it-events";
const NODE = "it-events-cpu-0";
let server: Server;
let manager: Manager;
let autoscaler: Autoscaler;
const engine = { queue: 0 };
const logs: string[] = [];

interface Event {
  metadata: { name: string };
  reason: string;
  action: string;
  note: string;
  type: string;
  reportingController: string;
  reportingInstance: string;
  eventTime: string;
  regarding: { kind: string; name: string; uid: string };
  series?: { count: number; lastObservedTime: string };
}

const manifests = `
${TEST_MODEL_YAML}
---
apiVersion: serving.llmfleet.dev/v1alpha1
kind: PrefillPool
metadata: {name: p}
spec: {modelRef: {name: m}, gpusPerReplica: 0, replicas: {min: 1, max: 3}, autoscaling: {mode: slo, maxQueuePerReplica: 4}}
`;

before(async () => {
  await installCRDs();
  await kubectlOk(["delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=60s"]);
  await kubectlOk(["delete", "node", NODE, "--ignore-not-found"]);
  await ensureNamespace(NS);
  await createKwokGpuNode(process.env.KUBECONFIG ?? "", NODE, { gpus: 0 });
  server = createServer((_req, res) => res.end(`llmfleet_queue_depth ${engine.queue}\nllmfleet_prompt_tokens_total 0\n`));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/metrics`;
  manager = new Manager(adminClient(), createOperatorMetrics(), "it-events");
  manager.log = (msg) => logs.push(msg);
  const caches = buildCaches(manager, NS);
  registerReconcilers(manager, caches, { engineImage: "llmfleet/engine:0.1.0", engineGPUImage: "llmfleet/engine:0.1.0-cuda" });
  autoscaler = registerAutoscaler(manager, caches, { intervalSeconds: 1, targets: async () => [url], modelLoadSeconds: 1 });
  await manager.startInformers();
  void manager.runWorkers(2);
  await kubectlOk(["apply", "-n", NS, "-f", "-"], { stdin: manifests });
});

after(async () => {
  autoscaler.stop();
  manager.stop();
  server.close();
  await kubectlOk(["delete", "node", NODE, "--ignore-not-found"]);
});

async function events(kind: string, name: string): Promise<Event[]> {
  const list = await jsonOf<{ items: Event[] }>(["get", "events.events.k8s.io", "-n", NS]);
  return list.items.filter((e) => e.regarding.kind === kind && e.regarding.name === name);
}

async function withLogs<T>(body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (err) {
    console.error(`--- manager log ---\n${logs.join("\n")}`);
    throw err;
  }
}

test("a pool that becomes Ready records the flip as an Event from llmfleet", () =>
  withLogs(async () => {
    const flip = await eventually(
      async () => {
        const found = (await events("PrefillPool", "p")).find((e) => e.reason === "Available");
        assert.ok(found, "an Available Event");
        return found;
      },
      { timeoutMs: 60_000, message: "Ready flip recorded" },
    );
    assert.equal(flip.type, "Normal");
    assert.equal(flip.action, "ConditionChanged");
    assert.equal(flip.note, "Ready: False → True (Available): 1/1 replicas ready.");
    assert.equal(flip.reportingController, "llmfleet");
    assert.equal(flip.reportingInstance, "it-events");
    assert.match(flip.eventTime, /\.\d{6}Z$/);
    const pool = await jsonOf<PrefillPool>(["get", "-n", NS, "prefillpool", "p"]);
    assert.equal(flip.regarding.uid, pool.metadata?.uid);
  }));

test("an autoscaler scale is an Event, and the rollout it starts flips Ready and back", () =>
  withLogs(async () => {
    engine.queue = 40;
    const scaled = await eventually(
      async () => {
        const found = (await events("PrefillPool", "p")).find((e) => e.reason === "SuccessfulRescale");
        assert.ok(found, "a SuccessfulRescale Event");
        return found;
      },
      { timeoutMs: 60_000, message: "scale recorded" },
    );
    assert.equal(scaled.action, "Scale");
    // The recommender may step up (1 → 2 → 3) as the queue persists over its observations.
    assert.match(scaled.note, /^New size: [23] \(was 1\); reason: scale up: queue/);
    await eventually(
      async () => {
        const notes = (await events("PrefillPool", "p")).map((e) => e.note);
        assert.ok(
          notes.some((n) => n.startsWith("Ready: True → False (RollingOut)")),
          `the scale-up rollout made the pool not Ready: ${notes.join(" | ")}`,
        );
        assert.ok(notes.includes("Ready: False → True (Available): 3/3 replicas ready."), `Ready again at max: ${notes.join(" | ")}`);
      },
      { timeoutMs: 60_000, message: "rollout flips recorded" },
    );
  }));

test("an unchanged condition records nothing, however often the pool is reconciled", async () => {
  const before = await events("PrefillPool", "p");
  // Each pass of the autoscaler (every second) and each status change of the Deployment
  // reconciles the pool; its conditions stay the same.
  await kubectlOk(["annotate", "-n", NS, "prefillpool", "p", "touched=1", "--overwrite"]);
  await new Promise((r) => setTimeout(r, 3000));
  const afterwards = await events("PrefillPool", "p");
  assert.deepEqual(
    afterwards.map((e) => [e.metadata.name, e.series?.count]),
    before.map((e) => [e.metadata.name, e.series?.count]),
  );
});

test("the same Event again within the window is counted in the first one's series", async () => {
  const pool = await jsonOf<PrefillPool>(["get", "-n", NS, "prefillpool", "p"]);
  const event = { type: "Normal" as const, reason: "SeriesCheck", action: "Check", note: "the same note" };
  await manager.events.record(pool, event);
  await manager.events.record(pool, event);
  await manager.events.record(pool, event);
  const found = (await events("PrefillPool", "p")).filter((e) => e.reason === "SeriesCheck");
  assert.equal(found.length, 1, "one Event");
  assert.equal(found[0]?.series?.count, 3);
  assert.match(found[0]?.series?.lastObservedTime ?? "", /Z$/);
  assert.doesNotMatch(logs.join("\n"), /dropped/, "no Event was refused");
});
