// Makes the chart's operator pods real: for each Running operator pod (kwok runs no containers)
// it starts a container from the pod's image (containers.ts) with that pod's arguments and the
// pod's ServiceAccount token mounted where a kubelet mounts it, so the operator finds the API
// server as in a cluster and runs with exactly the chart's RBAC. LLMFLEET_E2E_PODS=processes
// starts `operator/main.ts` as a process with a kubeconfig holding the same token.
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
import {
  killContainer,
  literalEnv,
  nodeModelCache,
  podMode,
  podUser,
  podVolumes,
  runContainer,
  SERVICE_ACCOUNT_PATH,
  serviceAccountMount,
  stopContainer,
  type ServiceAccountMount,
} from "../../testing/containers.ts";
import { pipeLines } from "./pod-runner.ts";

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

/** The operator pod's container, seen as an OperatorProcess. */
function startOperatorContainer(pod: V1Pod, namespace: string, sa: ServiceAccountMount): OperatorProcess {
  const name = pod.metadata?.name ?? "";
  const cname = `llmfleet-e2e-${namespace}-${name}`;
  const { binds, tmpfs } = podVolumes(pod, nodeModelCache());
  const c = runContainer({
    name: cname,
    image: pod.spec?.containers[0]?.image ?? "",
    args: [...(pod.spec?.containers[0]?.args ?? []), "--health-port", "0", "--health-host", "127.0.0.1"],
    env: { ...literalEnv(pod), POD_NAMESPACE: namespace, ...sa.env },
    binds: [...binds, [sa.dir, `${SERVICE_ACCOUNT_PATH}:ro`]],
    tmpfs,
    hostname: name,
    ...podUser(pod),
  });
  let output = "";
  pipeLines(c.child, "", (l) => (output += `${l.trimStart()}\n`));
  const exited = new Promise<void>((res) => c.child.once("exit", () => res()));
  const end = (how: (name: string) => Promise<void>) => async (): Promise<void> => {
    await how(cname);
    await exited;
  };
  return { id: name, exited, logs: () => output, stop: end(stopContainer), kill: end(killContainer) };
}

export class OperatorPods implements AsyncDisposable {
  readonly processes = new Map<string, OperatorProcess>();
  private readonly previousLogs = new Map<string, string>();
  private readonly kubeconfigs = new Map<string, string>();
  private readonly tokens = new Map<string, ServiceAccountMount>();
  readonly mode = podMode();
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
    const proc = this.mode === "containers" ? this.launchContainer(pod, name) : this.launchProcess(pod, name);
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

  // One bound token per pod, as the kubelet mounts it: a restart does not need the API server.
  private launchProcess(pod: V1Pod, name: string): OperatorProcess {
    const container = pod.spec?.containers[0];
    const kubeconfig = this.kubeconfigs.get(name) ?? serviceAccountKubeconfig(this.namespace, pod.spec?.serviceAccountName ?? "default");
    this.kubeconfigs.set(name, kubeconfig);
    const args = [...(container?.args ?? []), "--health-port", "0", "--health-host", "127.0.0.1"];
    return startOperator({ id: name, kubeconfig, args, env: { POD_NAMESPACE: this.namespace } });
  }

  private launchContainer(pod: V1Pod, name: string): OperatorProcess {
    const sa = this.tokens.get(name) ?? serviceAccountMount(this.namespace, pod.spec?.serviceAccountName ?? "default");
    this.tokens.set(name, sa);
    return startOperatorContainer(pod, this.namespace, sa);
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
