// The operator's ServiceAccount under the RBAC the chart ships (charts/llmfleet/files), and a
// kubeconfig that authenticates as it: how integration tests and benchmarks run the operator with
// exactly the permissions a user's install gives it.
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import { parse, stringify } from "yaml";
import { kubectlOk } from "./kubectl.ts";
import { ensureNamespace, ROOT } from "./cluster.ts";
import { tempDir } from "./temp-dir.ts";

function rules(file: string): unknown {
  return parse(readFileSync(resolve(ROOT, "charts/llmfleet/files", file), "utf8"));
}

/**
 * The ServiceAccount `sa` in `namespace`, its ClusterRole (the chart's rules), its leader-election
 * Role and, in each of `tenantKeyNamespaces`, the chart's tenant-keys Role (read on Secrets), as YAML.
 */
export function operatorRBACManifests(sa: string, namespace: string, tenantKeyNamespaces: string[] = []): string {
  const subject = [{ kind: "ServiceAccount", name: sa, namespace }];
  const docs = [
    { apiVersion: "v1", kind: "ServiceAccount", metadata: { name: sa, namespace } },
    { apiVersion: "rbac.authorization.k8s.io/v1", kind: "ClusterRole", metadata: { name: sa }, rules: rules("operator-clusterrole-rules.yaml") },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "ClusterRoleBinding",
      metadata: { name: sa },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: sa },
      subjects: subject,
    },
    { apiVersion: "rbac.authorization.k8s.io/v1", kind: "Role", metadata: { name: sa, namespace }, rules: rules("operator-leader-role-rules.yaml") },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "RoleBinding",
      metadata: { name: sa, namespace },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: sa },
      subjects: subject,
    },
    ...tenantKeyNamespaces.flatMap((ns) => [
      { apiVersion: "rbac.authorization.k8s.io/v1", kind: "Role", metadata: { name: `${sa}-tenant-keys`, namespace: ns }, rules: rules("operator-tenant-keys-role-rules.yaml") },
      {
        apiVersion: "rbac.authorization.k8s.io/v1",
        kind: "RoleBinding",
        metadata: { name: `${sa}-tenant-keys`, namespace: ns },
        roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: `${sa}-tenant-keys` },
        subjects: subject,
      },
    ]),
  ];
  return docs.map((d) => stringify(d)).join("---\n");
}

/** A kubeconfig (in a new temp dir) that authenticates as the ServiceAccount with a bound token. */
export async function serviceAccountKubeconfig(sa: string, namespace: string, duration = "1h"): Promise<string> {
  const token = (await kubectlOk(["create", "token", "-n", namespace, sa, `--duration=${duration}`])).trim();
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
    users: [{ name: sa, user: { token } }],
    contexts: [{ name: "sa", context: { cluster: "c", user: sa } }],
    "current-context": "sa",
  };
  const path = join(tempDir("llmfleet-rbac-"), "kubeconfig");
  writeFileSync(path, stringify(kc), { mode: 0o600 });
  return path;
}

/** Installs the ServiceAccount and its RBAC (tenant keys readable in `tenantKeyNamespaces`), and returns a kubeconfig for it. */
export async function operatorServiceAccount(sa: string, namespace: string, tenantKeyNamespaces: string[] = []): Promise<string> {
  await ensureNamespace(namespace);
  for (const ns of tenantKeyNamespaces) await ensureNamespace(ns);
  await kubectlOk(["apply", "-f", "-"], { stdin: operatorRBACManifests(sa, namespace, tenantKeyNamespaces) });
  return serviceAccountKubeconfig(sa, namespace);
}
