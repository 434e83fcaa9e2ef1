// The operator under the ServiceAccount and RBAC the chart ships (charts/llmfleet/files): it can
// do its job, and gets 403 for anything outside its role.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import { parse, stringify } from "yaml";
import { eventually } from "../testing/eventually.ts";
import { kubectlOk } from "../testing/kubectl.ts";
import { KubeApiError, KubeClient } from "../lib/kube/client.ts";
import { R } from "../lib/kube/resources.ts";
import { ensureNamespace, installCRDs, jsonOf, ROOT } from "../testing/cluster.ts";
import { dumpLogsOnFailure, startOperator, type OperatorProcess } from "../testing/operator-process.ts";

const NS = "it-rbac";
const SYS = "llmfleet-system";
const SA = "it-llmfleet-operator";
let kubeconfig = "";
let operator: OperatorProcess | undefined;

function rules(file: string): unknown {
  return parse(readFileSync(resolve(ROOT, "charts/llmfleet/files", file), "utf8"));
}

function rbacManifests(): string {
  const subject = [{ kind: "ServiceAccount", name: SA, namespace: SYS }];
  const docs = [
    { apiVersion: "v1", kind: "ServiceAccount", metadata: { name: SA, namespace: SYS } },
    { apiVersion: "rbac.authorization.k8s.io/v1", kind: "ClusterRole", metadata: { name: SA }, rules: rules("operator-clusterrole-rules.yaml") },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "ClusterRoleBinding",
      metadata: { name: SA },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: SA },
      subjects: subject,
    },
    { apiVersion: "rbac.authorization.k8s.io/v1", kind: "Role", metadata: { name: SA, namespace: SYS }, rules: rules("operator-leader-role-rules.yaml") },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "RoleBinding",
      metadata: { name: SA, namespace: SYS },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: SA },
      subjects: subject,
    },
  ];
  return docs.map((d) => stringify(d)).join("---\n");
}

/** A kubeconfig that authenticates as the ServiceAccount with a bound token. */
async function serviceAccountKubeconfig(): Promise<string> {
  const token = (await kubectlOk(["create", "token", "-n", SYS, SA, "--duration=1h"])).trim();
  const admin = new KubeConfig();
  admin.loadFromFile(process.env.KUBECONFIG ?? "");
  const cluster = admin.getCurrentCluster();
  if (!cluster) throw new Error("admin kubeconfig has no cluster");
  const kc = {
    apiVersion: "v1",
    kind: "Config",
    clusters: [
      {
        name: "c",
        cluster: { server: cluster.server, "certificate-authority-data": cluster.caData ?? Buffer.from(readFileSync(cluster.caFile ?? "")).toString("base64") },
      },
    ],
    users: [{ name: SA, user: { token } }],
    contexts: [{ name: "sa", context: { cluster: "c", user: SA } }],
    "current-context": "sa",
  };
  const path = join(mkdtempSync(join(tmpdir(), "llmfleet-rbac-")), "kubeconfig");
  writeFileSync(path, stringify(kc), { mode: 0o600 });
  return path;
}

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
  await kubectlOk(["apply", "-f", "-"], { stdin: rbacManifests() });
  kubeconfig = await serviceAccountKubeconfig();
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
    ["list secrets", () => sa.list({ group: "", version: "v1", plural: "secrets", kind: "Secret", namespaced: true }, { namespace: NS })],
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
