// Restarts the test cluster's kube-apiserver in place (same binary, flags, certificates, etcd
// data): the fault "the API server went away and came back".
import { readFileSync } from "node:fs";
import { dirname } from "node:path";
import { readPids, spawnDetached, stopProcess } from "../../scripts/cluster/procs.ts";
import { KubeClient } from "../../lib/kube/client.ts";

export async function restartApiserver(downForMs: number): Promise<void> {
  const dir = dirname(process.env.KUBECONFIG ?? "");
  const pid = readPids(dir).get("kube-apiserver");
  if (!pid) throw new Error(`no kube-apiserver pid in ${dir}/pids`);
  const [bin = "", ...args] = readFileSync(`/proc/${pid}/cmdline`, "utf8")
    .split("\0")
    .filter((a) => a.length > 0);
  await stopProcess(pid, "kube-apiserver");
  await new Promise((r) => setTimeout(r, downForMs));
  spawnDetached(dir, bin, args);
  const client = KubeClient.fromDefault();
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    if (
      await client.list({ group: "", version: "v1", plural: "namespaces", kind: "Namespace", namespaced: false }).then(
        () => true,
        () => false,
      )
    )
      return;
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error("kube-apiserver did not come back within 120 s");
}
