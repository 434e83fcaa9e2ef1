// Autoscaler and kwok node group on the real control plane: engines report a queue → the
// autoscaler scales the pool through /scale → the group gets kwok nodes → the new pods schedule.
import { TEST_MODEL_YAML } from "../../testing/manifests.ts";
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { eventually } from "../../testing/eventually.ts";
import { kubectlOk } from "../../testing/kubectl.ts";
import type { PrefillPool } from "../api.ts";
import { registerAutoscaler, type Autoscaler } from "../autoscaler/controller.ts";
import { buildCaches } from "../reconcilers/caches.ts";
import { registerReconcilers } from "../reconcilers/reconcilers.ts";
import { Manager } from "../runtime/manager.ts";
import { createOperatorMetrics } from "../runtime/metrics.ts";
import { adminClient, ensureNamespace, installCRDs, jsonOf } from "../../testing/cluster.ts";
import { registerNodeGroups, type NodeGroupActuator } from "./controller.ts";

const NS = "it-autoscale";
let server: Server;
let manager: Manager;
let autoscaler: Autoscaler;
let nodegroups: NodeGroupActuator;
const engine = { queue: 0 };

const manifests = `
${TEST_MODEL_YAML}
---
apiVersion: serving.llmfleet.dev/v1alpha1
kind: GPUNodeGroup
metadata: {name: itas}
spec: {provider: {kind: kwok}, gpusPerNode: 2, nodes: {min: 1, max: 4}, scaleDownDelay: 1h, provisioningTime: 1s}
---
apiVersion: serving.llmfleet.dev/v1alpha1
kind: PrefillPool
metadata: {name: p}
spec: {modelRef: {name: m}, nodeGroupRef: {name: itas}, gpusPerReplica: 1, replicas: {min: 1, max: 6}, autoscaling: {mode: slo, maxQueuePerReplica: 4}}
`;

before(async () => {
  await installCRDs();
  await kubectlOk(["delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=60s"]);
  await kubectlOk(["delete", "nodes", "-l", "serving.llmfleet.dev/node-group=itas", "--ignore-not-found"]);
  await ensureNamespace(NS);
  server = createServer((_req, res) => res.end(`llmfleet_queue_depth ${engine.queue}\nllmfleet_prompt_tokens_total 0\n`));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/metrics`;
  manager = new Manager(adminClient(), createOperatorMetrics());
  manager.log = () => {};
  const caches = buildCaches(manager, NS);
  registerReconcilers(manager, caches, { engineImage: "llmfleet/engine:0.1.0", engineGPUImage: "llmfleet/engine:0.1.0-cuda" });
  autoscaler = registerAutoscaler(manager, caches, { intervalSeconds: 1, targets: async () => [url], modelLoadSeconds: 1 });
  nodegroups = registerNodeGroups(manager, caches, { intervalSeconds: 1 });
  await manager.startInformers();
  void manager.runWorkers(2);
  await kubectlOk(["apply", "-n", NS, "-f", "-"], { stdin: manifests });
});

after(async () => {
  autoscaler.stop();
  nodegroups.stop();
  manager.stop();
  server.close();
  await kubectlOk(["delete", "nodes", "-l", "serving.llmfleet.dev/node-group=itas", "--ignore-not-found"]);
});

const pool = (): Promise<PrefillPool> => jsonOf<PrefillPool>(["get", "-n", NS, "prefillpool", "p"]);

test("a queue scales the pool through /scale, the node group grows, and the new pods schedule", async () => {
  await eventually(async () => assert.equal((await pool()).status?.readyReplicas, 1), {
    timeoutMs: 60_000,
    message: "one ready replica on the group's first node",
  });
  engine.queue = 40;
  await eventually(async () => assert.ok(((await pool()).spec.replicas.desired ?? 0) >= 4), { timeoutMs: 60_000, message: "pool scaled up" });
  const p = await pool();
  assert.match(p.status?.autoscaler?.reason ?? "", /scale up: queue/);
  assert.equal(p.status?.autoscaler?.inputs.queueDepth, 40);
  await eventually(
    async () => {
      const nodes = await jsonOf<{ items: unknown[] }>(["get", "nodes", "-l", "serving.llmfleet.dev/node-group=itas"]);
      assert.ok(nodes.items.length >= 2, `${nodes.items.length} nodes`);
      const desired = (await pool()).spec.replicas.desired ?? 0;
      assert.equal((await pool()).status?.readyReplicas, desired);
    },
    { timeoutMs: 90_000, message: "nodes added and every replica running" },
  );
});
