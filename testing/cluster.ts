// Helpers for integration tests against the real control plane started by test:integration.
import { KubeConfig } from "@kubernetes/client-node";
import { randomUUID } from "node:crypto";
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

/**
 * A metadata-only write to each object ("kind/name"): an annotation, so spec and generation stay as
 * they are. A re-apply that changes nothing sends the operator no event at all; this sends one per
 * object, so the operator reconciles each against the spec it now has. Returns
 * "kind/name@resourceVersion" as the write left each object.
 */
export async function touch(namespace: string, objects: string[]): Promise<string[]> {
  const stamp = `test.llmfleet.dev/touched=${randomUUID()}`;
  const rv = ["-o", "jsonpath={.metadata.resourceVersion}"];
  return Promise.all(objects.map(async (o) => `${o}@${await kubectlOk(["annotate", "-n", namespace, "--overwrite", o, stamp, ...rv])}`));
}
