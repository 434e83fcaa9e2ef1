// The operator under the ServiceAccount and RBAC the chart ships (charts/llmfleet/files): it can
// do its job, and gets 403 for anything outside its role. It may read Secrets only in the
// namespaces of the chart value tenantKeys.namespaces (here NS): there a Model with spec.access
// gets its router's Role; elsewhere (NO_KEYS) that Role is refused and the log names the value.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { KubeConfig } from "@kubernetes/client-node";
import { eventually } from "../testing/eventually.ts";
import { kubectl, kubectlOk } from "../testing/kubectl.ts";
import { KubeApiError, KubeClient } from "../lib/kube/client.ts";
import { R } from "../lib/kube/resources.ts";
import { ensureNamespace, installCRDs, jsonOf } from "../testing/cluster.ts";
import { operatorServiceAccount } from "../testing/operator-rbac.ts";
import { dumpLogsOnFailure, startOperator, type OperatorProcess } from "../testing/operator-process.ts";

const NS = "it-rbac";
const NO_KEYS = "it-rbac-no-keys";
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
  for (const ns of [NS, NO_KEYS]) {
    await kubectlOk(["delete", "namespace", ns, "--ignore-not-found", "--wait=true", "--timeout=60s"]);
    await ensureNamespace(ns);
  }
  await ensureNamespace(SYS);
  kubeconfig = await operatorServiceAccount(SA, SYS, [NS]);
});

after(async () => {
  await operator?.stop();
});

test("the operator under the chart's RBAC reconciles a fleet without a single 403", async () => {
  operator = startOperator({ id: "it-rbac", kubeconfig, args: ["--lease-name", "it-rbac-lease"] });
  await dumpLogsOnFailure(operator, async () => {
    await reconcilesFleet();
    await grantsRouterItsTenantKeys();
  });
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

/** examples/tenants.yaml in NS: the router's Role reads exactly the tenants' Secrets (granted through the tenant-keys Role). */
async function grantsRouterItsTenantKeys(): Promise<void> {
  await kubectlOk(["apply", "-n", NS, "-f", "examples/tenants.yaml"]);
  await eventually(async () => {
    const role = await jsonOf<{ rules: Array<{ resources?: string[]; resourceNames?: string[]; verbs: string[] }> }>(["get", "role", "-n", NS, "gemma-270m-shared-router"]);
    const secrets = role.rules.find((r) => r.resources?.includes("secrets"));
    assert.deepEqual(secrets?.resourceNames, ["team-a-keys", "team-b-keys"]);
    assert.deepEqual(secrets?.verbs, ["get", "list", "watch"]);
  }, { message: "the keyed router's Role" });
}

const SECRETS = { group: "", version: "v1", plural: "secrets", kind: "Secret", namespaced: true };

test("Secrets: read only in the tenant-keys namespaces, written nowhere", async () => {
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig);
  const sa = KubeClient.fromKubeConfig(kc);
  await kubectlOk(["create", "secret", "generic", "-n", NO_KEYS, "elsewhere", "--from-literal=k=v"]);
  assert.equal(await status(sa.list(R.Secret, { namespace: NS })), 200, "list Secrets in a tenant-keys namespace");
  assert.equal(await status(sa.get(R.Secret, NS, "team-a-keys")), 200, "get one there");
  const refused: Array<[string, () => Promise<unknown>]> = [
    ["list Secrets of every namespace", () => sa.list(R.Secret)],
    ["list Secrets in another namespace", () => sa.list(R.Secret, { namespace: NO_KEYS })],
    ["get a Secret in another namespace", () => sa.get(R.Secret, NO_KEYS, "elsewhere")],
    ["get a Secret in its own namespace", () => sa.get(R.Secret, SYS, "anything")],
    ["read a Secret in kube-system", () => sa.list(R.Secret, { namespace: "kube-system" })],
    ["create a Secret where it may read them", () => sa.create(SECRETS, { metadata: { name: "x", namespace: NS } } as never, "t")],
    ["patch a Secret where it may read them", () => sa.mergePatch(R.Secret, { namespace: NS, name: "team-a-keys" }, { data: {} })],
    ["delete a Secret where it may read them", () => sa.delete(R.Secret, NS, "team-a-keys")],
  ];
  for (const [what, call] of refused) assert.equal(await status(call()), 403, what);
});

test("a Model with tenants outside the tenant-keys namespaces: its router's Role is refused, and the log names the chart value", async () => {
  assert.ok(operator, "runs after the first test");
  await kubectlOk(["apply", "-n", NO_KEYS, "-f", "examples/tenants.yaml"]);
  await dumpLogsOnFailure(operator, () =>
    eventually(() => assert.match(operator?.logs() ?? "", /gemma-270m-shared-router[\s\S]*403[\s\S]*tenantKeys\.namespaces/), { message: "the refusal, naming tenantKeys.namespaces" }),
  );
  assert.equal((await kubectl(["get", "role", "-n", NO_KEYS, "gemma-270m-shared-router"])).code, 1, "no Role that reads Secrets was created");
});

test("anything outside the role is refused with 403", async () => {
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig);
  const sa = KubeClient.fromKubeConfig(kc);
  const forbidden: Array<[string, () => Promise<unknown>]> = [
    // Secrets: the test above.
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
