// Node-group scale-down on the real control plane: the drain evicts through the Eviction API, so a
// PodDisruptionBudget that allows no disruption keeps the node (cordoned, DrainBlocked says why);
// demand coming back uncordons it; without the budget the pod is evicted and the node removed.
// The pod is bound to the kwok node directly (spec.nodeName), and kwok runs it; the budget's status
// comes from the real disruption controller.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import type { V1Node } from "@kubernetes/client-node";
import { eventually } from "../../testing/eventually.ts";
import { kubectl, kubectlOk } from "../../testing/kubectl.ts";
import type { GPUNodeGroup } from "../api.ts";
import { buildCaches } from "../reconcilers/caches.ts";
import { registerReconcilers } from "../reconcilers/reconcilers.ts";
import { Manager } from "../runtime/manager.ts";
import { createOperatorMetrics } from "../runtime/metrics.ts";
import { adminClient, ensureNamespace, installCRDs, jsonOf } from "../../testing/cluster.ts";
import { registerNodeGroups, type NodeGroupActuator } from "./controller.ts";

const NS = "it-drain";
const GROUP_LABEL = "serving.llmfleet.dev/node-group=itdr";
const NODE = "itdr-0";
let manager: Manager;
let nodegroups: NodeGroupActuator;

// The pool's model does not exist, so the reconcilers create no Deployment: the pool only places
// GPU demand on the group, and the one pod on the node is the test's.
const manifests = `
apiVersion: serving.llmfleet.dev/v1alpha1
kind: GPUNodeGroup
metadata: {name: itdr}
spec: {provider: {kind: kwok}, gpusPerNode: 1, nodes: {min: 0, max: 2}, scaleDownDelay: 1s, provisioningTime: 1s, drain: {timeout: 3s}}
---
apiVersion: serving.llmfleet.dev/v1alpha1
kind: PrefillPool
metadata: {name: p}
spec: {modelRef: {name: absent}, nodeGroupRef: {name: itdr}, gpusPerReplica: 1, replicas: {min: 0, max: 2, desired: 1}}
`;

const guardedPod = `
apiVersion: v1
kind: Pod
metadata: {name: guarded, labels: {app: guarded}}
spec:
  nodeName: ${NODE}
  containers: [{name: c, image: fake}]
`;

const budget = `
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: guarded}
spec: {minAvailable: 1, selector: {matchLabels: {app: guarded}}}
`;

before(async () => {
  await installCRDs();
  await kubectlOk(["delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=60s"]);
  await kubectlOk(["delete", "nodes", "-l", GROUP_LABEL, "--ignore-not-found"]);
  await ensureNamespace(NS);
  manager = new Manager(adminClient(), createOperatorMetrics());
  manager.log = () => {};
  const caches = buildCaches(manager, NS);
  registerReconcilers(manager, caches, { engineImage: "llmfleet/engine:0.1.0", engineGPUImage: "llmfleet/engine:0.1.0-cuda" });
  nodegroups = registerNodeGroups(manager, caches, { intervalSeconds: 1, retrySeconds: 1 });
  await manager.startInformers();
  void manager.runWorkers(2);
  await kubectlOk(["apply", "-n", NS, "-f", "-"], { stdin: manifests });
});

after(async () => {
  nodegroups.stop();
  manager.stop();
  await kubectlOk(["delete", "namespace", NS, "--ignore-not-found", "--wait=false"]);
  await kubectlOk(["delete", "nodes", "-l", GROUP_LABEL, "--ignore-not-found"]);
});

const group = (): Promise<GPUNodeGroup> => jsonOf<GPUNodeGroup>(["get", "-n", NS, "gpunodegroup", "itdr"]);
const condition = async (type: string): Promise<{ status: string; reason: string; message: string } | undefined> =>
  (await group()).status?.conditions?.find((c) => c.type === type);
const setDemand = (desired: number): Promise<string> =>
  kubectlOk(["patch", "-n", NS, "prefillpool", "p", "--type=merge", "-p", JSON.stringify({ spec: { replicas: { desired } } })]);
const nodeExists = async (): Promise<boolean> => (await kubectl(["get", "node", NODE])).code === 0;

test("a budget that allows no disruption keeps the node: cordoned, not removed, DrainBlocked says why", async () => {
  await eventually(async () => assert.equal(await nodeExists(), true), { timeoutMs: 30_000, message: "the group's node" });
  await eventually(() => kubectlOk(["apply", "-n", NS, "-f", "-"], { stdin: guardedPod }), { message: "pod created (default ServiceAccount exists)" });
  await kubectlOk(["apply", "-n", NS, "-f", "-"], { stdin: budget });
  await eventually(
    async () => {
      const pdb = await jsonOf<{ status?: { currentHealthy?: number; disruptionsAllowed?: number } }>(["get", "-n", NS, "pdb", "guarded"]);
      assert.equal(pdb.status?.currentHealthy, 1, "kwok has made the pod Ready and the disruption controller counted it");
      assert.equal(pdb.status?.disruptionsAllowed, 0);
    },
    { timeoutMs: 60_000, message: "budget protecting the running pod" },
  );

  await setDemand(0);
  const blocked = await eventually(
    async () => {
      const c = await condition("DrainBlocked");
      assert.equal(c?.status, "True", JSON.stringify(c));
      return c;
    },
    { timeoutMs: 60_000, message: "DrainBlocked after the drain timeout" },
  );
  assert.equal(blocked?.reason, "DisruptionBudget");
  assert.match(blocked?.message ?? "", new RegExp(`^${NODE} stays cordoned: eviction refused for 3s by a PodDisruptionBudget: ${NS}/guarded \\(`));
  assert.match(blocked?.message ?? "", /disruption budget guarded needs 1 healthy pods/);
  const node = await jsonOf<V1Node>(["get", "node", NODE]);
  assert.equal(node.spec?.unschedulable, true, "left cordoned");
  assert.equal(node.metadata?.annotations?.["serving.llmfleet.dev/cordoned-by"], "llmfleet/nodegroups");
  assert.equal((await kubectl(["get", "-n", NS, "pod", "guarded"])).code, 0, "the protected pod is still there");
  const g = await group();
  assert.match(g.status?.actuation?.lastRun?.message ?? "", /drain blocked: itdr-0 stays cordoned/);
  assert.equal(g.status?.conditions?.find((c) => c.type === "Ready")?.type, "Ready", "the status reconciler's condition lives beside the actuator's");
});

test("demand coming back uncordons the node the blocked drain left cordoned", async () => {
  await setDemand(1);
  await eventually(
    async () => {
      const node = await jsonOf<V1Node>(["get", "node", NODE]);
      assert.notEqual(node.spec?.unschedulable, true);
      assert.equal(node.metadata?.annotations?.["serving.llmfleet.dev/cordoned-by"], undefined);
      assert.equal((await condition("DrainBlocked"))?.reason, "NodesNeededAgain");
    },
    { timeoutMs: 30_000, message: "node uncordoned, DrainBlocked False" },
  );
  assert.equal((await condition("DrainBlocked"))?.status, "False");
});

test("without the budget the pod is evicted and the node removed", async () => {
  await kubectlOk(["delete", "-n", NS, "pdb", "guarded"]);
  await setDemand(0);
  await eventually(
    async () => {
      assert.equal(await nodeExists(), false, "node removed");
      assert.equal((await kubectl(["get", "-n", NS, "pod", "guarded"])).code, 1, "pod evicted");
      const c = await condition("DrainBlocked");
      assert.equal(c?.status, "False");
      assert.equal(c?.reason, "Drained");
    },
    { timeoutMs: 60_000, message: "pod evicted and node removed" },
  );
  assert.match((await group()).status?.actuation?.lastRun?.message ?? "", /deleted 1 kwok nodes/);
});
