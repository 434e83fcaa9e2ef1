// The operator under the ServiceAccount and RBAC the chart ships (charts/llmfleet/files): it can
// do its job, and gets 403 for anything outside its role.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { KubeConfig } from "@kubernetes/client-node";
import { eventually } from "../testing/eventually.ts";
import { kubectlOk } from "../testing/kubectl.ts";
import { KubeApiError, KubeClient } from "../lib/kube/client.ts";
import { R } from "../lib/kube/resources.ts";
import { ensureNamespace, installCRDs, jsonOf } from "../testing/cluster.ts";
import { operatorServiceAccount } from "../testing/operator-rbac.ts";
import { dumpLogsOnFailure, startOperator, type OperatorProcess } from "../testing/operator-process.ts";

const NS = "it-rbac";
const SYS = "llmfleet-system";
const SA = "it-llmfleet-operator";
let kubeconfig = "";
let operator: OperatorProcess | undefined;

async function status(p: Promise<unknown>): Promise<number> {
  try {
    await p;
    return 200;
  } catch (err) {
    if (err instanceof KubeApiError) return err.status;
    throw err;
  }
}

before(async () => {
  await installCRDs();
  await kubectlOk(["delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=60s"]);
  await ensureNamespace(NS);
  await ensureNamespace(SYS);
  kubeconfig = await operatorServiceAccount(SA, SYS);
});

after(async () => {
  await operator?.stop();
});

test("the operator under the chart's RBAC reconciles a fleet without a single 403", async () => {
  operator = startOperator({ id: "it-rbac", kubeconfig, args: ["--lease-name", "it-rbac-lease"] });
  await dumpLogsOnFailure(operator, () => reconcilesFleet());
  // \b: the API server's random port (e.g. 40313) is in the log too.
  assert.doesNotMatch(operator.logs(), /Forbidden|\b403\b/);
});

async function reconcilesFleet(): Promise<void> {
  await kubectlOk(["apply", "-n", NS, "-f", "examples/quickstart.yaml"]);
  for (const d of ["gemma-270m-router", "gemma-prefill-prefill", "gemma-decode-decode"]) {
    await eventually(() => kubectlOk(["get", "deployment", "-n", NS, d]), { message: `deployment ${d}` });
  }
  await eventually(async () => {
    const pool = await jsonOf<{ metadata: { generation: number }; spec: { replicas: { desired?: number } }; status?: { observedGeneration?: number } }>([
      "get",
      "prefillpool",
      "-n",
      NS,
      "gemma-prefill",
    ]);
    assert.equal(pool.spec.replicas.desired, 1, "desired initialised to min (needs patch on pools)");
    assert.equal(pool.status?.observedGeneration, pool.metadata.generation, "status written for the current generation");
  });
}

test("anything outside the role is refused with 403", async () => {
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig);
  const sa = KubeClient.fromKubeConfig(kc);
  const forbidden: Array<[string, () => Promise<unknown>]> = [
    // Reading Secrets is granted (a Model's router Role may read its tenants' key Secrets, and
    // RBAC lets the operator grant only what it holds: charts/llmfleet/files/operator-clusterrole-rules.yaml);
    // writing them is not.
    [
      "create a secret",
      () => sa.create({ group: "", version: "v1", plural: "secrets", kind: "Secret", namespaced: true }, { metadata: { name: "x", namespace: NS } } as never, "t"),
    ],
    ["create a pod", () => sa.create(R.Pod, { metadata: { name: "x", namespace: NS }, spec: { containers: [{ name: "x", image: "x" }] } } as never, "t")],
    ["delete a namespace", () => sa.delete({ group: "", version: "v1", plural: "namespaces", kind: "Namespace", namespaced: false }, undefined, NS)],
    [
      "create a cluster role",
      () =>
        sa.create(
          { group: "rbac.authorization.k8s.io", version: "v1", plural: "clusterroles", kind: "ClusterRole", namespaced: false },
          { metadata: { name: "escalate" } },
          "t",
        ),
    ],
    ["edit a KVStore's spec", () => sa.mergePatch(R.KVStore, { namespace: NS, name: "shared-kv" }, { spec: { blockTokens: 512 } })],
    ["delete a Model", () => sa.delete(R.Model, NS, "gemma-270m")],
    ["read a lease outside its namespace", () => sa.get(R.Lease, "kube-system", "anything")],
  ];
  for (const [what, call] of forbidden) assert.equal(await status(call()), 403, what);
  assert.equal(await status(sa.list(R.Deployment, { namespace: NS })), 200, "its own children are readable");
});

test("a node-group drain is allowed: a node's pods listed by field selector, evicted through the Eviction API", async () => {
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig);
  const sa = KubeClient.fromKubeConfig(kc);
  assert.equal(await status(sa.list(R.Pod, { fieldSelector: "spec.nodeName=it-rbac-no-such-node" })), 200, "list pods by spec.nodeName");
  // Authorization comes before the lookup: 404, not 403, means pods/eviction create is granted.
  assert.equal(await status(sa.evict(NS, "no-such-pod")), 404, "create pods/eviction");
});
