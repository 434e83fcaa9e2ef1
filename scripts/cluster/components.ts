// Command lines of the control-plane components. Everything listens on 127.0.0.1 only, on
// ports picked free at start, so several clusters (a dev one, a test run) can coexist.
import { join } from "node:path";
import type { Pki } from "./certs.ts";
import { KWOK_STAGES } from "./bins.ts";
import { KWOK_NODE_ANNOTATION } from "../../operator/nodegroups/kwok-node.ts";

export interface Ports {
  etcdClient: number;
  etcdPeer: number;
  apiserver: number;
  controllerManager: number;
  scheduler: number;
  kwok: number;
}

export const PORT_NAMES: (keyof Ports)[] = [
  "etcdClient", "etcdPeer", "apiserver", "controllerManager", "scheduler", "kwok",
];

/** Start order; stopping goes the other way so nothing loses its apiserver/etcd first. */
export const START_ORDER = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"] as const;
export type ComponentName = (typeof START_ORDER)[number];

/** The per-identity kubeconfigs `startCluster` writes into the state dir. */
export function kubeconfigFor(dir: string, who: "admin" | "kube-controller-manager" | "kube-scheduler" | "kwok"): string {
  return who === "admin" ? join(dir, "kubeconfig") : join(dir, `${who}.kubeconfig`);
}

export function etcdArgs(dir: string, ports: Ports): string[] {
  const client = `http://127.0.0.1:${ports.etcdClient}`;
  const peer = `http://127.0.0.1:${ports.etcdPeer}`;
  return [
    "--name=llmfleet",
    `--data-dir=${join(dir, "etcd")}`,
    `--listen-client-urls=${client}`,
    `--advertise-client-urls=${client}`,
    `--listen-peer-urls=${peer}`,
    `--initial-advertise-peer-urls=${peer}`,
    `--initial-cluster=llmfleet=${peer}`,
    // A throwaway cluster: durability buys nothing, fsync costs seconds on slow disks.
    "--unsafe-no-fsync",
    "--log-level=warn",
  ];
}

export function apiserverArgs(dir: string, ports: Ports, pki: Pki): string[] {
  return [
    `--etcd-servers=http://127.0.0.1:${ports.etcdClient}`,
    "--bind-address=127.0.0.1",
    "--advertise-address=127.0.0.1",
    // Endpoints validation rejects loopback IPs, so the `kubernetes` Service's endpoints can
    // never be written for 127.0.0.1 (the apiserver would log that every 10 s). Nothing needs
    // them here: kwok pods do not run, and clients use the kubeconfig address.
    "--endpoint-reconciler-type=none",
    `--secure-port=${ports.apiserver}`,
    `--tls-cert-file=${pki.apiserver.cert}`,
    `--tls-private-key-file=${pki.apiserver.key}`,
    `--client-ca-file=${pki.ca.cert}`,
    "--authorization-mode=Node,RBAC",
    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
    `--service-account-key-file=${pki.serviceAccount.pub}`,
    `--service-account-signing-key-file=${pki.serviceAccount.key}`,
    "--service-cluster-ip-range=10.96.0.0/16",
    "--allow-privileged=true",
  ];
}

/** Flags shared by controller-manager and scheduler: own kubeconfig for everything, loopback. */
function delegatedArgs(kubeconfig: string, port: number): string[] {
  return [
    `--kubeconfig=${kubeconfig}`,
    `--authentication-kubeconfig=${kubeconfig}`,
    `--authorization-kubeconfig=${kubeconfig}`,
    "--bind-address=127.0.0.1",
    `--secure-port=${port}`,
    "--leader-elect=false",
  ];
}

export function controllerManagerArgs(dir: string, ports: Ports, pki: Pki): string[] {
  return [
    ...delegatedArgs(kubeconfigFor(dir, "kube-controller-manager"), ports.controllerManager),
    `--cert-dir=${join(dir, "kcm-certs")}`,
    // The token controller signs with the same key the apiserver verifies with, and publishes
    // the root CA into every namespace (kube-root-ca.crt).
    `--service-account-private-key-file=${pki.serviceAccount.key}`,
    `--root-ca-file=${pki.ca.cert}`,
    "--use-service-account-credentials=true",
    // The default 20 QPS client limit alone stretches startup (one ServiceAccount and token per
    // controller) to seconds; a loopback apiserver takes far more.
    "--kube-api-qps=200",
    "--kube-api-burst=400",
    "--service-cluster-ip-range=10.96.0.0/16",
  ];
}

export function schedulerArgs(dir: string, ports: Ports): string[] {
  return [...delegatedArgs(kubeconfigFor(dir, "kube-scheduler"), ports.scheduler), `--cert-dir=${join(dir, "scheduler-certs")}`];
}


export function kwokArgs(dir: string, ports: Ports, binDir: string): string[] {
  return [
    `--kubeconfig=${kubeconfigFor(dir, "kwok")}`,
    // kwok alone has no stages (only kwokctl adds defaults): without them nodes never get
    // Ready and pods never leave Pending.
    `--config=${join(binDir, KWOK_STAGES)}`,
    `--manage-nodes-with-annotation-selector=${KWOK_NODE_ANNOTATION}=fake`,
    `--server-address=127.0.0.1:${ports.kwok}`,
    "--node-ip=127.0.0.1",
    // Pod IPs on loopback (127.0.0.0/8): a test can run a real process for a pod, bound to the
    // pod IP, and anything that dials podIP:port (the autoscaler scraping /metrics) reaches it.
    "--cidr=127.10.0.0/16",
    // Heartbeat through Lease objects, matching the node-heartbeat-with-lease stage.
    "--node-lease-duration-seconds=40",
  ];
}
