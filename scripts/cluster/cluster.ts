// A real control plane on loopback: etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler and kwok (fake nodes that run pods), all detached processes owned by a state
// dir. Invariant: <dir>/cluster.json exists only once every component was seen healthy, so its
// presence plus live pids plus a ready apiserver means "a usable cluster lives here".
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { ensureBins } from "./bins.ts";
import { generatePki, type Pki } from "./certs.ts";
import {
  apiserverArgs, controllerManagerArgs, etcdArgs, kubeconfigFor, kwokArgs, schedulerArgs,
  PORT_NAMES, START_ORDER, type ComponentName, type Ports,
} from "./components.ts";
import { isOk, waitUntil, type Tls, type TlsClient } from "./health.ts";
import { writeKubeconfig } from "./kubeconfig.ts";
import { freePorts, isAlive, logPath, readPids, spawnDetached, stopAll, tailLog } from "./procs.ts";

export interface Cluster {
  /** State dir: pki/, logs/, pids/, kubeconfigs, cluster.json. */
  dir: string;
  binDir: string;
  /** Admin (system:masters) kubeconfig. */
  kubeconfigPath: string;
  kubectlPath: string;
  server: string;
  ports: Ports;
  /** Stops every component (dependents first) and removes the state dir unless keepState. */
  stop(opts?: { keepState?: boolean }): Promise<void>;
}

export interface StartOptions {
  /** Default: $LLMFLEET_CLUSTER_DIR, else <repo>/.cluster. */
  dir?: string;
  /** When the dir already holds a live cluster: return it (true) or throw (false, default). */
  reuse?: boolean;
  /** Per-component readiness budget. The apiserver alone can take a minute on 2 cores. */
  readyTimeoutMs?: number;
  /** Progress sink; default stderr. */
  log?: (line: string) => void;
}

interface ClusterState {
  binDir: string;
  ports: Ports;
  startedAt: string;
}

const STATE_FILE = "cluster.json";
const STOP_ORDER = [...START_ORDER].reverse();
const REPO_ROOT = resolve(import.meta.dirname, "..", "..");

export function defaultClusterDir(): string {
  return resolve(process.env.LLMFLEET_CLUSTER_DIR ?? join(REPO_ROOT, ".cluster"));
}

function handle(dir: string, state: ClusterState): Cluster {
  return {
    dir,
    binDir: state.binDir,
    kubeconfigPath: kubeconfigFor(dir, "admin"),
    kubectlPath: join(state.binDir, "kubectl"),
    server: `https://127.0.0.1:${state.ports.apiserver}`,
    ports: state.ports,
    stop: (opts) => stopCluster(dir, opts),
  };
}

function adminTls(dir: string): TlsClient {
  const pki = join(dir, "pki");
  return { ca: join(pki, "ca.crt"), client: { cert: join(pki, "admin.crt"), key: join(pki, "admin.key") } };
}

/** The cluster living in `dir`, if its state is complete, every pid alive and /readyz is ok. */
export async function findLiveCluster(dir: string): Promise<Cluster | undefined> {
  const stateFile = join(dir, STATE_FILE);
  if (!existsSync(stateFile)) return undefined;
  let state: ClusterState;
  try {
    state = JSON.parse(readFileSync(stateFile, "utf8")) as ClusterState;
  } catch {
    return undefined; // torn write: treat as a dead cluster, startCluster cleans it up
  }
  const pids = readPids(dir);
  if (!START_ORDER.every((name) => isAlive(pids.get(name) ?? 0, name))) return undefined;
  const ready = await isOk(`https://127.0.0.1:${state.ports.apiserver}/readyz`, adminTls(dir));
  return ready ? handle(dir, state) : undefined;
}

/**
 * Removes a state dir, refusing anything that does not look like one: a mistyped
 * LLMFLEET_CLUSTER_DIR must never cost someone their home directory.
 */
function removeState(dir: string): void {
  if (!existsSync(dir)) return;
  const entries = readdirSync(dir);
  const ours = entries.length === 0 || entries.includes("pids") || entries.includes(STATE_FILE);
  if (!ours) throw new Error(`refusing to remove ${dir}: not a cluster state dir`);
  rmSync(dir, { recursive: true, force: true });
}

/** Stops whatever runs from `dir` (live or half-started) and, unless keepState, deletes it. */
export async function stopCluster(dir: string, opts: { keepState?: boolean } = {}): Promise<void> {
  await stopAll(dir, STOP_ORDER);
  if (!opts.keepState) removeState(dir);
}

function writeKubeconfigs(dir: string, ports: Ports, pki: Pki): void {
  const server = `https://127.0.0.1:${ports.apiserver}`;
  for (const who of ["admin", "kube-controller-manager", "kube-scheduler", "kwok"] as const) {
    writeKubeconfig(kubeconfigFor(dir, who), { server, caFile: pki.ca.cert, client: pki.clients[who], user: who });
  }
}

interface Launch {
  dir: string;
  binDir: string;
  ports: Ports;
  pki: Pki;
  timeoutMs: number;
  log: (line: string) => void;
}

function argsFor(name: ComponentName, l: Launch): string[] {
  switch (name) {
    case "etcd": return etcdArgs(l.dir, l.ports);
    case "kube-apiserver": return apiserverArgs(l.dir, l.ports, l.pki);
    case "kube-controller-manager": return controllerManagerArgs(l.dir, l.ports, l.pki);
    case "kube-scheduler": return schedulerArgs(l.dir, l.ports);
    case "kwok": return kwokArgs(l.dir, l.ports, l.binDir);
  }
}

function healthUrl(name: ComponentName, l: Launch): [string, Tls | undefined] {
  switch (name) {
    case "etcd": return [`http://127.0.0.1:${l.ports.etcdClient}/health`, undefined];
    case "kube-apiserver": return [`https://127.0.0.1:${l.ports.apiserver}/readyz`, adminTls(l.dir)];
    case "kube-controller-manager": return [`https://127.0.0.1:${l.ports.controllerManager}/healthz`, "insecure"];
    case "kube-scheduler": return [`https://127.0.0.1:${l.ports.scheduler}/healthz`, "insecure"];
    case "kwok": return [`http://127.0.0.1:${l.ports.kwok}/healthz`, undefined];
  }
}

/** Waits for `probe`, failing fast if the component died; errors carry the tail of its log. */
async function waitFor(l: Launch, name: ComponentName, probe: () => Promise<boolean>, what: string = name): Promise<void> {
  const pid = readPids(l.dir).get(name) ?? 0;
  const fatal = (): string | undefined => (isAlive(pid, name) ? undefined : "process exited");
  try {
    await waitUntil(probe, { what, timeoutMs: l.timeoutMs, fatal });
  } catch (err) {
    const tail = tailLog(l.dir, name);
    throw new Error(`${(err as Error).message}\n--- last lines of ${logPath(l.dir, name)} ---\n${tail}`, { cause: err });
  }
}

async function startComponents(l: Launch, names: readonly ComponentName[]): Promise<void> {
  for (const name of names) spawnDetached(l.dir, join(l.binDir, name), argsFor(name, l));
  await Promise.all(
    names.map(async (name) => {
      const [url, tls] = healthUrl(name, l);
      await waitFor(l, name, () => isOk(url, tls));
      l.log(`${name} ready`);
    }),
  );
}

async function launch(l: Launch): Promise<void> {
  await startComponents(l, ["etcd"]);
  await startComponents(l, ["kube-apiserver"]);
  // These three only need the apiserver, so they start together.
  await startComponents(l, ["kube-controller-manager", "kube-scheduler", "kwok"]);
  // Pods are rejected until the serviceaccount controller has made `default`: wait for it so
  // callers can create pods as soon as we return.
  const sa = `https://127.0.0.1:${l.ports.apiserver}/api/v1/namespaces/default/serviceaccounts/default`;
  await waitFor(l, "kube-controller-manager", () => isOk(sa, adminTls(l.dir)), "default ServiceAccount");
  l.log("default ServiceAccount exists");
}

function progress(): (line: string) => void {
  const t0 = Date.now();
  return (line) => process.stderr.write(`[cluster ${((Date.now() - t0) / 1000).toFixed(1)}s] ${line}\n`);
}

/** Starts a fresh cluster in the state dir (or returns the live one there when opts.reuse). */
export async function startCluster(opts: StartOptions = {}): Promise<Cluster> {
  const dir = resolve(opts.dir ?? defaultClusterDir());
  const log = opts.log ?? progress();
  const live = await findLiveCluster(dir);
  if (live && opts.reuse) return live;
  if (live) throw new Error(`a cluster is already running from ${dir} (npm run cluster:down stops it)`);
  await stopCluster(dir); // leftovers of a dead or half-started cluster
  const binDir = await ensureBins();
  mkdirSync(dir, { recursive: true });
  const pki = await generatePki(join(dir, "pki"));
  const free = await freePorts(PORT_NAMES.length);
  const ports = Object.fromEntries(PORT_NAMES.map((n, i) => [n, free[i]])) as unknown as Ports;
  writeKubeconfigs(dir, ports, pki);
  log(`certificates and kubeconfigs in ${dir}`);
  const l: Launch = { dir, binDir, ports, pki, timeoutMs: opts.readyTimeoutMs ?? 180_000, log };
  try {
    await launch(l);
  } catch (err) {
    await stopAll(dir, STOP_ORDER); // keep the dir: its logs explain the failure
    throw err;
  }
  const state: ClusterState = { binDir, ports, startedAt: new Date().toISOString() };
  writeFileSync(join(dir, STATE_FILE), `${JSON.stringify(state, null, 2)}\n`);
  return handle(dir, state);
}
