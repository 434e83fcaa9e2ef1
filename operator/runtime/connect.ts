// Where the operator's cluster comes from, found in the order @kubernetes/client-node's
// loadFromDefault uses ($KUBECONFIG, ~/.kube/config, the in-cluster service account), but said
// out loud: with none of them, loadFromDefault falls back to http://localhost:8080 and the
// operator would wait for leadership there forever. Here that is an error naming what was tried,
// and an API server that does not answer is an error naming its URL after a few attempts.
import http from "node:http";
import https from "node:https";
import { delimiter, join } from "node:path";
import { existsSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { KubeConfig } from "@kubernetes/client-node";

export const SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/** The operator cannot reach a cluster: its message says what was tried. */
export class ClusterConnectError extends Error {
  override readonly name = "ClusterConnectError";
}

export type ClusterSource = { kind: "kubeconfig"; paths: string[]; from: string } | { kind: "in-cluster"; from: string };

export interface SourceSearch {
  source?: ClusterSource;
  /** What was looked at and not found, in order. */
  tried: string[];
}

type Env = Record<string, string | undefined>;

function fromKubeconfigEnv(value: string, exists: (path: string) => boolean): SourceSearch {
  const files = value.split(delimiter).filter((f) => f);
  const paths = files.filter(exists);
  // An explicit $KUBECONFIG that names nothing is an error, not a reason to pick another cluster.
  if (paths.length === 0) return { tried: [`$KUBECONFIG=${value}: no such file`] };
  return { source: { kind: "kubeconfig", paths, from: `$KUBECONFIG (${paths.join(delimiter)})` }, tried: [] };
}

function inCluster(env: Env, exists: (path: string) => boolean): ClusterSource | undefined {
  if (!env.KUBERNETES_SERVICE_HOST || !env.KUBERNETES_SERVICE_PORT || !exists(SERVICE_ACCOUNT_TOKEN)) return undefined;
  return { kind: "in-cluster", from: `the in-cluster service account (https://${env.KUBERNETES_SERVICE_HOST}:${env.KUBERNETES_SERVICE_PORT})` };
}

/** Which cluster configuration to use, and what was tried before it. Pure over `env` and `exists`. */
export function findClusterSource(env: Env, exists: (path: string) => boolean): SourceSearch {
  if (env.KUBECONFIG) return fromKubeconfigEnv(env.KUBECONFIG, exists);
  const tried = ["$KUBECONFIG: not set"];
  const home = env.HOME ? join(env.HOME, ".kube", "config") : undefined;
  if (home && exists(home)) return { source: { kind: "kubeconfig", paths: [home], from: home }, tried };
  tried.push(home ? `${home}: no such file` : "~/.kube/config: $HOME not set");
  const cluster = inCluster(env, exists);
  if (cluster) return { source: cluster, tried };
  tried.push(
    `in-cluster service account: needs $KUBERNETES_SERVICE_HOST (${env.KUBERNETES_SERVICE_HOST ? "set" : "not set"}), ` +
      `$KUBERNETES_SERVICE_PORT (${env.KUBERNETES_SERVICE_PORT ? "set" : "not set"}) and ${SERVICE_ACCOUNT_TOKEN} (${exists(SERVICE_ACCOUNT_TOKEN) ? "present" : "absent"})`,
  );
  return { tried };
}

function load(source: ClusterSource): KubeConfig {
  const kc = new KubeConfig();
  if (source.kind === "in-cluster") {
    kc.loadFromCluster();
    return kc;
  }
  const [first = "", ...rest] = source.paths;
  kc.loadFromFile(first);
  for (const path of rest) {
    const more = new KubeConfig();
    more.loadFromFile(path);
    kc.mergeConfig(more);
  }
  return kc;
}

export interface ClusterConfig {
  kc: KubeConfig;
  server: string;
  /** Where it came from, for messages. */
  from: string;
}

/** The cluster configuration, or a ClusterConnectError that lists every place looked at. */
export function loadClusterConfig(env: Env = process.env, exists: (path: string) => boolean = existsSync): ClusterConfig {
  const { source, tried } = findClusterSource(env, exists);
  if (!source) throw new ClusterConnectError(`no cluster to connect to. Tried:\n  - ${tried.join("\n  - ")}`);
  let kc: KubeConfig;
  try {
    kc = load(source);
  } catch (err) {
    throw new ClusterConnectError(`cannot read ${source.from}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const server = kc.getCurrentCluster()?.server;
  if (!server) throw new ClusterConnectError(`${source.from} has no current context with a cluster server`);
  return { kc, server, from: source.from };
}

/** GET /version: any HTTP answer (401 included) means the server is there. Resolves to what it said. */
async function probe(cluster: ClusterConfig, timeoutMs: number): Promise<string> {
  const url = new URL("/version", cluster.server);
  const opts: https.RequestOptions = { method: "GET", headers: { Accept: "application/json" }, timeout: timeoutMs };
  // Credentials and TLS: a failure here is the configuration's, and no retry will change it.
  await cluster.kc.applyToHTTPSOptions(opts).catch((err: unknown) => {
    throw new ClusterConnectError(`cannot use ${cluster.from} for ${cluster.server}: ${describe(err)}`, { cause: err });
  });
  const transport = url.protocol === "https:" ? https : http;
  return new Promise((resolve, reject) => {
    const req = transport.request(url, opts, (res) => {
      let body = "";
      res.on("data", (d: Buffer) => (body += d.toString()));
      res.on("end", () => resolve(res.statusCode === 200 ? versionOf(body) : `HTTP ${res.statusCode}`));
    });
    req.on("timeout", () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on("error", reject);
    req.end();
  });
}

/** A connection error's words; Node's AggregateError (every address of a name refused) has an empty message. */
function describe(err: unknown): string {
  const e = err as { message?: string; code?: string };
  return e.message || e.code || String(err);
}

function versionOf(body: string): string {
  try {
    return (JSON.parse(body) as { gitVersion?: string }).gitVersion ?? "an unknown version";
  } catch {
    return "an unknown version";
  }
}

export interface WaitOptions {
  /** Attempts before giving up. Default 5. */
  attempts?: number;
  /** Pause after the first failed attempt, doubled after each (at most 8 s). Default 500 ms. */
  baseDelayMs?: number;
  /** Time one attempt may take. Default 5000 ms. */
  timeoutMs?: number;
  /** Injectable for tests. Default: a real timer. */
  sleep?: (ms: number) => Promise<unknown>;
}

/** Resolves to the server's version once it answers; a ClusterConnectError naming its URL after `attempts` failures. */
export async function waitForAPIServer(cluster: ClusterConfig, opts: WaitOptions = {}): Promise<string> {
  const attempts = Math.max(1, opts.attempts ?? 5);
  let delay = opts.baseDelayMs ?? 500;
  for (let attempt = 1; ; attempt++) {
    try {
      return await probe(cluster, opts.timeoutMs ?? 5000);
    } catch (err) {
      if (err instanceof ClusterConnectError) throw err;
      if (attempt >= attempts) {
        const why = describe(err);
        throw new ClusterConnectError(`the API server at ${cluster.server} (from ${cluster.from}) did not answer in ${attempts} attempts: ${why}`, {
          cause: err,
        });
      }
    }
    await (opts.sleep ?? sleep)(delay);
    delay = Math.min(delay * 2, 8000);
  }
}
