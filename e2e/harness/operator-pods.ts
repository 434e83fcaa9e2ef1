// Makes the chart's operator pods real: for each Running operator pod (kwok runs no containers)
// it starts `operator/main.ts` with that pod's arguments, authenticated as the pod's
// ServiceAccount (a bound token), so the operator runs with exactly the chart's RBAC.
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KubeConfig, type V1Pod } from "@kubernetes/client-node";
import { stringify } from "yaml";
import { KubeClient } from "../../lib/kube/client.ts";
import { R } from "../../lib/kube/resources.ts";
import { Informer } from "../../lib/kube/informer.ts";
import { startOperator, type OperatorProcess } from "../../testing/operator-process.ts";
import { kubectlPath } from "../../testing/kubectl.ts";

function serviceAccountKubeconfig(namespace: string, sa: string): string {
  const token = execFileSync(kubectlPath(), ["create", "token", "-n", namespace, sa, "--duration=2h"], { encoding: "utf8" }).trim();
  const admin = new KubeConfig();
  admin.loadFromFile(process.env.KUBECONFIG ?? "");
  const cluster = admin.getCurrentCluster();
  if (!cluster) throw new Error("no current cluster in KUBECONFIG");
  const kc = {
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "c", cluster: { server: cluster.server, "certificate-authority": cluster.caFile, "certificate-authority-data": cluster.caData } }],
    users: [{ name: sa, user: { token } }],
    contexts: [{ name: "sa", context: { cluster: "c", user: sa } }],
    "current-context": "sa",
  };
  const path = join(mkdtempSync(join(tmpdir(), "llmfleet-op-")), "kubeconfig");
  writeFileSync(path, stringify(kc), { mode: 0o600 });
  return path;
}

export class OperatorPods implements AsyncDisposable {
  readonly processes = new Map<string, OperatorProcess>();
  private readonly previousLogs = new Map<string, string>();
  private readonly kubeconfigs = new Map<string, string>();
  private readonly informer: Informer<V1Pod>;
  private chain: Promise<void> = Promise.resolve();
  /** Set at teardown: nothing is (re)started after it. */
  private disposed = false;

  constructor(private readonly namespace: string) {
    this.informer = new Informer<V1Pod>(KubeClient.fromDefault(), R.Pod, { namespace, labelSelector: "app.kubernetes.io/name=llmfleet-operator" });
    this.informer.on((type, pod) => this.enqueue(type === "DELETED" ? undefined : pod, pod.metadata?.name ?? ""));
  }

  async start(): Promise<void> {
    void this.informer.run();
    await this.informer.waitForSync();
  }

  /** Pod changes are handled one at a time; a failure is kept in the logs, never thrown away. */
  private enqueue(pod: V1Pod | undefined, name: string): void {
    if (this.disposed) return;
    this.chain = this.chain
      .then(() => this.sync(pod, name))
      .catch((err: unknown) => {
        this.previousLogs.set(name, `${this.previousLogs.get(name) ?? ""}runner: ${String(err)}\n`);
      });
  }

  logs(): string {
    const pods = new Set([...this.previousLogs.keys(), ...this.processes.keys()]);
    return [...pods].map((pod) => `--- operator pod ${pod} ---\n${this.previousLogs.get(pod) ?? ""}${this.processes.get(pod)?.logs() ?? ""}`).join("\n");
  }

  private async sync(pod: V1Pod | undefined, name: string): Promise<void> {
    const proc = this.processes.get(name);
    const running = pod?.status?.phase === "Running" && !pod.metadata?.deletionTimestamp;
    if (running && pod && !proc) this.launch(pod, name);
    if (!running && proc) {
      this.processes.delete(name);
      await proc.stop();
    }
  }

  private launch(pod: V1Pod, name: string): void {
    const container = pod.spec?.containers[0];
    // One bound token per pod, as the kubelet mounts it: a restart does not need the API server.
    const kubeconfig = this.kubeconfigs.get(name) ?? serviceAccountKubeconfig(this.namespace, pod.spec?.serviceAccountName ?? "default");
    this.kubeconfigs.set(name, kubeconfig);
    const args = [...(container?.args ?? []), "--health-port", "0", "--health-host", "127.0.0.1"];
    const proc = startOperator({ id: name, kubeconfig, args, env: { POD_NAMESPACE: this.namespace } });
    this.processes.set(name, proc);
    // restartPolicy Always: an operator that exits on its own (it does when it loses the lease)
    // is started again while its pod runs, keeping its earlier output.
    void proc.exited.then(() => {
      if (this.disposed || this.processes.get(name) !== proc) return;
      this.processes.delete(name);
      this.previousLogs.set(name, `${this.previousLogs.get(name) ?? ""}${proc.logs()}--- restarted ---\n`);
      const current = this.informer.get(`${this.namespace}/${name}`);
      setTimeout(() => this.enqueue(current, name), 1000).unref();
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    // Before anything stops: an operator stopped here must not look like one that exited on its
    // own and be started again a second later (that orphan kept the test process alive: CI hung).
    this.disposed = true;
    this.informer.stop();
    await this.chain;
    await Promise.all([...this.processes.values()].map((p) => p.stop()));
  }
}
