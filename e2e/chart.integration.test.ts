// The Helm chart on the real control plane, with Helm built from its Go module: lint, values
// schema, install (CRDs, RBAC, operator, NetworkPolicies), upgrade, uninstall.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { promisify } from "node:util";
import { parse } from "yaml";
import { eventually } from "../testing/eventually.ts";
import { kubectl, kubectlOk } from "../testing/kubectl.ts";
import { createKwokGpuNode } from "../scripts/cluster/kwok-nodes.ts";

const run = promisify(execFile);
const ROOT = resolve(import.meta.dirname, "..");
const CHART = resolve(ROOT, "charts/llmfleet");
const NS = "llmfleet-chart";
let helmBin = "";

async function helm(...args: string[]): Promise<string> {
  const { stdout } = await run(helmBin, [...args, "--kubeconfig", process.env.KUBECONFIG ?? ""], { cwd: ROOT, maxBuffer: 16 << 20 });
  return stdout;
}

async function helmFails(...args: string[]): Promise<string> {
  try {
    await helm(...args);
  } catch (err) {
    return String((err as { stderr?: string }).stderr ?? err);
  }
  throw new Error(`helm ${args.join(" ")} succeeded; expected a failure`);
}

before(async () => {
  helmBin = (await run("bash", [resolve(ROOT, "scripts/helm/build.sh")], { maxBuffer: 16 << 20 })).stdout.trim();
  await kubectlOk(["delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=60s"]);
  await kubectlOk(["delete", "node", "chart-cpu-0", "--ignore-not-found"]);
  await createKwokGpuNode(process.env.KUBECONFIG ?? "", "chart-cpu-0", { gpus: 0 });
});

after(async () => {
  await helm("uninstall", "llmfleet", "-n", NS).catch(() => undefined);
});

test("helm lint passes and the values schema refuses bad values", async () => {
  const out = await helm("lint", CHART, "--strict");
  assert.match(out, /1 chart\(s\) linted, 0 chart\(s\) failed/);
  assert.match(await helmFails("template", "x", CHART, "--set", "replicas=0"), /replicas/);
  assert.match(await helmFails("template", "x", CHART, "--set", "image.pullPolicy=Sometimes"), /pullPolicy/);
});

test("the chart's defaults for a production install: NetworkPolicies where the operator watches, a budget and spread for its replicas, pull secrets and monitors' labels", async () => {
  const docs = (out: string): Array<{ kind?: string; metadata?: { name?: string; namespace?: string; labels?: Record<string, string> }; spec?: Record<string, unknown> }> =>
    out.split(/^---$/m).map((d) => parse(d) as never).filter(Boolean);
  const watched = docs(await helm("template", "x", CHART, "-n", "ops", "--set", "watchNamespace=team-x"));
  assert.deepEqual([...new Set(watched.filter((d) => d.kind === "NetworkPolicy").map((d) => d.metadata?.namespace))], ["team-x"], "policies go where the fleets are");
  assert.equal(watched.find((d) => d.kind === "PodDisruptionBudget")?.spec?.maxUnavailable, 1);
  const pod = (watched.find((d) => d.kind === "Deployment")?.spec as { template: { spec: Record<string, unknown> } }).template.spec;
  assert.ok(pod.affinity, "two replicas prefer two nodes");
  const one = docs(await helm("template", "x", CHART, "--set", "replicas=1", "--set", "imagePullSecrets[0].name=regcred", "--set", "nodeSelector.pool=system"));
  assert.equal(one.find((d) => d.kind === "PodDisruptionBudget"), undefined, "no budget for a single replica");
  const single = (one.find((d) => d.kind === "Deployment")?.spec as { template: { spec: Record<string, unknown> } }).template.spec;
  assert.deepEqual([single.imagePullSecrets, single.nodeSelector, single.affinity], [[{ name: "regcred" }], { pool: "system" }, undefined]);
  const monitored = docs(
    await helm("template", "x", CHART, "--set", "serviceMonitor.enabled=true", "--set", "networkPolicies.monitoringNamespace=mon", "--set", "serviceMonitor.labels.release=prom"),
  );
  assert.deepEqual(
    monitored.filter((d) => d.kind === "PodMonitor" || d.kind === "ServiceMonitor").map((d) => d.metadata?.labels?.release),
    ["prom", "prom"],
  );
  assert.match(await helmFails("template", "x", CHART, "--set", "serviceMonitor.enabled=true"), /needs networkPolicies.monitoringNamespace/);
});

test("the chart's CRDs are the generated ones and stay well under Helm's 1 MB release limit", async () => {
  for (const name of ["models", "prefillpools", "decodepools", "kvstores", "gpunodegroups"]) {
    const file = `${name}.serving.llmfleet.dev.yaml`;
    assert.equal(readFileSync(resolve(CHART, "crds", file), "utf8"), readFileSync(resolve(ROOT, "crds", file), "utf8"), file);
  }
  const manifest = await helm("template", "llmfleet", CHART, "--include-crds");
  assert.ok(manifest.length < 512 * 1024, `rendered chart is ${manifest.length} bytes`);
});

test("install creates the operator with least-privilege RBAC and NetworkPolicies; upgrade and uninstall work", async () => {
  await helm("install", "llmfleet", CHART, "-n", NS, "--create-namespace", "--wait", "--timeout", "120s");
  const dep = JSON.parse(await kubectlOk(["get", "deployment", "-n", NS, "llmfleet-operator", "-o", "json"])) as {
    spec: {
      replicas: number;
      template: { spec: { serviceAccountName: string; containers: Array<{ args: string[]; securityContext: Record<string, unknown> }> } };
    };
  };
  assert.equal(dep.spec.replicas, 2);
  assert.equal(dep.spec.template.spec.serviceAccountName, "llmfleet-operator");
  assert.ok(dep.spec.template.spec.containers[0]?.args.includes(`--lease-namespace=${NS}`));
  assert.equal(dep.spec.template.spec.containers[0]?.securityContext.readOnlyRootFilesystem, true);
  const role = JSON.parse(await kubectlOk(["get", "clusterrole", "llmfleet-operator", "-o", "json"])) as {
    rules: Array<{ verbs: string[]; resources: string[] }>;
  };
  assert.deepEqual(role.rules, parse(readFileSync(resolve(CHART, "files/operator-clusterrole-rules.yaml"), "utf8")));
  assert.ok(
    role.rules.every((r) => !r.verbs.includes("*") && !r.resources.includes("*")),
    "no wildcards",
  );
  assert.ok(!role.rules.some((r) => r.resources.includes("secrets")), "no Secret read cluster-wide");
  // Secrets are readable only in tenantKeys.namespaces (default: the release namespace here).
  const keys = JSON.parse(await kubectlOk(["get", "role", "-n", NS, "llmfleet-operator-tenant-keys", "-o", "json"])) as { rules: unknown };
  assert.deepEqual(keys.rules, parse(readFileSync(resolve(CHART, "files/operator-tenant-keys-role-rules.yaml"), "utf8")));
  assert.match(await kubectlOk(["get", "networkpolicy", "-n", NS, "-o", "name"]), /llmfleet-engines[\s\S]*llmfleet-kvstore/);
  // The operator's autoscaler scrapes engines' /metrics: the engines' policy admits the operator's pods.
  const engines = JSON.parse(await kubectlOk(["get", "networkpolicy", "-n", NS, "llmfleet-engines", "-o", "json"])) as {
    spec: { ingress: Array<{ from: Array<{ podSelector?: { matchLabels?: Record<string, string> }; namespaceSelector?: { matchLabels?: Record<string, string> } }> }> };
  };
  const fromOperator = engines.spec.ingress[0]?.from.find((f) => f.podSelector?.matchLabels?.["app.kubernetes.io/name"] === "llmfleet-operator");
  assert.equal(fromOperator?.namespaceSelector?.matchLabels?.["kubernetes.io/metadata.name"], NS);
  await kubectlOk(["get", "crd", "prefillpools.serving.llmfleet.dev"]);
  const images = ["--set", "engineImage=example/engine:9", "--set", "engineGPUImage=example/engine:9-cuda"];
  await helm("upgrade", "llmfleet", CHART, "-n", NS, "--set", "replicas=1", ...images, "--wait", "--timeout", "120s");
  await eventually(async () => {
    const d = JSON.parse(await kubectlOk(["get", "deployment", "-n", NS, "llmfleet-operator", "-o", "json"])) as typeof dep;
    assert.equal(d.spec.replicas, 1);
    assert.ok(d.spec.template.spec.containers[0]?.args.includes("--engine-image=example/engine:9"));
    assert.ok(d.spec.template.spec.containers[0]?.args.includes("--engine-gpu-image=example/engine:9-cuda"));
  });
  await helm("uninstall", "llmfleet", "-n", NS, "--wait");
  assert.notEqual((await kubectl(["get", "deployment", "-n", NS, "llmfleet-operator"])).code, 0);
  assert.notEqual((await kubectl(["get", "clusterrole", "llmfleet-operator"])).code, 0);
  await kubectlOk(["get", "crd", "prefillpools.serving.llmfleet.dev"]);
});
