// Helpers for integration tests against the real control plane started by test:integration.
import { KubeConfig } from "@kubernetes/client-node";
import { resolve } from "node:path";
import { kubectl, kubectlOk } from "./kubectl.ts";
import { KubeClient } from "../lib/kube/client.ts";

export const ROOT = resolve(import.meta.dirname, "..");

export function adminClient(): KubeClient {
  const path = process.env.KUBECONFIG;
  if (!path) throw new Error("KUBECONFIG is not set: run integration tests through `npm run test:integration`");
  const kc = new KubeConfig();
  kc.loadFromFile(path);
  return KubeClient.fromKubeConfig(kc);
}

/** Installs the CRDs from crds/ and waits until the API server serves them. */
export async function installCRDs(): Promise<void> {
  await kubectlOk(["apply", "--server-side", "--force-conflicts", "-f", resolve(ROOT, "crds")]);
  await kubectlOk(["wait", "--for=condition=Established", "crd", "-l", "app.kubernetes.io/part-of=llmfleet", "--timeout=60s"]);
}

export async function ensureNamespace(name: string): Promise<void> {
  const res = await kubectl(["create", "namespace", name]);
  if (res.code !== 0 && !res.stderr.includes("AlreadyExists")) throw new Error(res.stderr);
}

export async function jsonOf<T>(args: string[]): Promise<T> {
  return JSON.parse(await kubectlOk([...args, "-o", "json"])) as T;
}
