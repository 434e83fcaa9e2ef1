// The karpenter provider on the real apiserver, with Karpenter's own NodePool CRD read from its Go
// module at test time (go mod download; nothing of Karpenter is kept in this repo): the NodePool's
// nvidia.com/gpu limit follows the group's desired nodes, each run recorded in status.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { eventually } from "../../testing/eventually.ts";
import { kubectlOk } from "../../testing/kubectl.ts";
import type { GPUNodeGroup } from "../api.ts";
import { buildCaches } from "../reconcilers/caches.ts";
import { registerReconcilers } from "../reconcilers/reconcilers.ts";
import { Manager } from "../runtime/manager.ts";
import { createOperatorMetrics } from "../runtime/metrics.ts";
import { adminClient, ensureNamespace, installCRDs, jsonOf } from "../../testing/cluster.ts";
import { registerNodeGroups, type NodeGroupActuator } from "./controller.ts";
import { runState } from "./runs.ts";
import { tempDir } from "../../testing/temp-dir.ts";

const KARPENTER_VERSION = "v1.11.0";
const NS = "it-karpenter";
let manager: Manager;
let nodegroups: NodeGroupActuator;

async function karpenterNodePoolCRD(): Promise<string> {
  const cwd = tempDir("llmfleet-karpenter-");
  const { stdout } = await promisify(execFile)("go", ["mod", "download", "-json", `sigs.k8s.io/karpenter@${KARPENTER_VERSION}`], { cwd });
  const dir = (JSON.parse(stdout) as { Dir?: string }).Dir;
  if (!dir) throw new Error(`go mod download sigs.k8s.io/karpenter@${KARPENTER_VERSION}: ${stdout}`);
  return join(dir, "pkg/apis/crds/karpenter.sh_nodepools.yaml");
}

const manifests = `
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: it-gpu}
spec:
  limits: {cpu: "1000"}
  template:
    metadata: {labels: {serving.llmfleet.dev/node-group: itkp}}
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      requirements: [{key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}]
---
apiVersion: serving.llmfleet.dev/v1alpha1
kind: Model
metadata: {name: m, namespace: ${NS}}
spec: {source: {uri: "file:///models/x.gguf"}, slo: {ttftP90: 500ms}}
---
apiVersion: serving.llmfleet.dev/v1alpha1
kind: GPUNodeGroup
metadata: {name: itkp, namespace: ${NS}}
spec: {provider: {kind: karpenter, karpenter: {nodePool: it-gpu}}, gpusPerNode: 8, nodes: {min: 0, max: 4}, provisioningTime: 1h}
---
apiVersion: serving.llmfleet.dev/v1alpha1
kind: PrefillPool
metadata: {name: p, namespace: ${NS}}
spec: {modelRef: {name: m}, nodeGroupRef: {name: itkp}, gpusPerReplica: 4, replicas: {min: 1, max: 8, desired: 3}}
`;

before(async () => {
  await installCRDs();
  const crd = await karpenterNodePoolCRD();
  await kubectlOk(["apply", "--server-side", "-f", crd]);
  await kubectlOk(["wait", "--for=condition=Established", "crd/nodepools.karpenter.sh", "--timeout=60s"]);
  await kubectlOk(["delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=60s"]);
  await kubectlOk(["delete", "nodepool", "it-gpu", "--ignore-not-found"]);
  await ensureNamespace(NS);
  manager = new Manager(adminClient(), createOperatorMetrics());
  manager.log = () => {};
  const caches = buildCaches(manager, NS);
  registerReconcilers(manager, caches, { engineImage: "llmfleet/engine:0.1.0", engineGPUImage: "llmfleet/engine:0.1.0-cuda" });
  nodegroups = registerNodeGroups(manager, caches, { intervalSeconds: 1 });
  await manager.startInformers();
  void manager.runWorkers(2);
  await kubectlOk(["apply", "-f", "-"], { stdin: manifests });
});

after(async () => {
  nodegroups.stop();
  manager.stop();
  await kubectlOk(["delete", "nodepool", "it-gpu", "--ignore-not-found"]);
});

const gpuLimit = async (): Promise<string | undefined> =>
  (await jsonOf<{ spec: { limits?: Record<string, string> } }>(["get", "nodepool", "it-gpu"])).spec.limits?.["nvidia.com/gpu"];
const group = (): Promise<GPUNodeGroup> => jsonOf<GPUNodeGroup>(["get", "-n", NS, "gpunodegroup", "itkp"]);

test("the NodePool's nvidia.com/gpu limit follows the GPU demand of the pools on the group; other limits are kept", async () => {
  await eventually(
    async () => {
      assert.equal(await gpuLimit(), "16", "3 replicas × 4 GPUs = 12 → 2 nodes × 8");
      assert.equal(runState((await group()).status?.actuation?.lastRun), "Complete");
    },
    { timeoutMs: 60_000, message: "limit set by a karpenter run" },
  );
  const g = await group();
  assert.equal(g.status?.actuation?.lastRun?.message, "NodePool it-gpu: limits.nvidia.com/gpu=16");
  assert.equal(g.status?.actuation?.desiredNodes, 2);
  await eventually(async () => assert.match((await group()).status?.actuation?.decision ?? "", /^provisioning: run 1 asked for 2 nodes, 0 present/), {
    message: "no Karpenter here to add nodes: the actuator waits for the provisioning time instead of re-running",
  });
  const pool = await jsonOf<{ spec: { limits: Record<string, string> } }>(["get", "nodepool", "it-gpu"]);
  assert.equal(pool.spec.limits.cpu, "1000");
  await kubectlOk(["patch", "-n", NS, "prefillpool", "p", "--type=merge", "-p", '{"spec":{"replicas":{"desired":7}}}']);
  await eventually(async () => assert.equal(await gpuLimit(), "32", "28 GPUs → 4 nodes (max)"), { timeoutMs: 60_000 });
  assert.equal((await group()).status?.actuation?.lastRun?.id, 2);
});
