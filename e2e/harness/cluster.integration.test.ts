// Self-test of the integration harness: the real control plane schedules GPU pods onto kwok
// nodes and kwok runs them, while GPU capacity is enforced by the real scheduler.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { createKwokGpuNode, deleteKwokNode, isNodeReady } from "../../scripts/cluster/kwok-nodes.ts";
import { eventually } from "../../testing/eventually.ts";
import { kubectl, kubectlOk } from "../../testing/kubectl.ts";

const kubeconfig = process.env.KUBECONFIG ?? "";
const id = Date.now().toString(36);
const node = `harness-gpu-${id}`;

function gpuPod(name: string, gpus: number): string {
  return JSON.stringify({
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, labels: { "llmfleet.dev/harness": id } },
    spec: {
      nodeSelector: { "kubernetes.io/hostname": node },
      tolerations: [{ key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" }],
      containers: [{ name: "main", image: "fake", resources: { limits: { "nvidia.com/gpu": String(gpus) } } }],
    },
  });
}

const jsonpath = (pod: string, path: string): Promise<string> => kubectlOk(["get", "pod", pod, "-o", `jsonpath={${path}}`]);

after(async () => {
  await kubectl(["delete", "pods", "-l", `llmfleet.dev/harness=${id}`, "--wait=false"]);
  await deleteKwokNode(kubeconfig, node).catch(() => undefined);
});

void test("kwok GPU node becomes Ready with nvidia.com/gpu allocatable", async () => {
  assert.ok(kubeconfig, "KUBECONFIG must be set (run via npm run test:integration)");
  await createKwokGpuNode(kubeconfig, node, {
    gpus: 2,
    gpuProduct: "NVIDIA-H100-80GB-HBM3",
    taints: [{ key: "nvidia.com/gpu", value: "present", effect: "NoSchedule" }],
  });
  await eventually(async () => assert.ok(await isNodeReady(kubeconfig, node)), { message: `node ${node} Ready` });
  const gpus = await kubectlOk(["get", "node", node, "-o", "jsonpath={.status.allocatable.nvidia\\.com/gpu}"]);
  assert.equal(gpus, "2");
});

void test("a pod requesting nvidia.com/gpu: 1 is scheduled and Running", async () => {
  await kubectlOk(["apply", "-f", "-"], { stdin: gpuPod(`gpu-one-${id}`, 1) });
  await eventually(async () => assert.equal(await jsonpath(`gpu-one-${id}`, ".status.phase"), "Running"), {
    message: "GPU pod Running",
  });
  assert.equal(await jsonpath(`gpu-one-${id}`, ".spec.nodeName"), node);
});

void test("a pod asking for more GPUs than the node has stays Pending (Unschedulable)", async () => {
  await kubectlOk(["apply", "-f", "-"], { stdin: gpuPod(`gpu-many-${id}`, 3) });
  const scheduled = '.status.conditions[?(@.type=="PodScheduled")]';
  await eventually(async () => assert.equal(await jsonpath(`gpu-many-${id}`, `${scheduled}.reason`), "Unschedulable"), {
    message: "oversized GPU pod Unschedulable",
  });
  assert.equal(await jsonpath(`gpu-many-${id}`, ".status.phase"), "Pending");
});
