// Kubeconfig files with the certificates embedded, so a kubeconfig stays valid when copied
// elsewhere (CI artifacts, another shell) as long as the cluster runs.
import { readFileSync, writeFileSync } from "node:fs";
import { stringify } from "yaml";
import type { CertFiles } from "./certs.ts";

export interface KubeconfigSpec {
  server: string;
  caFile: string;
  client: CertFiles;
  user: string;
}

const b64 = (path: string): string => readFileSync(path).toString("base64");

export function writeKubeconfig(path: string, spec: KubeconfigSpec): void {
  const doc = {
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "llmfleet", cluster: { server: spec.server, "certificate-authority-data": b64(spec.caFile) } }],
    users: [
      {
        name: spec.user,
        user: { "client-certificate-data": b64(spec.client.cert), "client-key-data": b64(spec.client.key) },
      },
    ],
    contexts: [{ name: "llmfleet", context: { cluster: "llmfleet", user: spec.user, namespace: "default" } }],
    "current-context": "llmfleet",
  };
  writeFileSync(path, stringify(doc), { mode: 0o600 });
}
