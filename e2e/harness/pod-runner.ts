// Makes kwok pods real: for every Running engine pod on a kwok node it starts a real engine —
// a container from the image the pod names (containers.ts), or with LLMFLEET_E2E_PODS=processes a
// bare process — with that pod's arguments on loopback, and gives each Service a loopback proxy
// (what kube-proxy does in a cluster) that balances over the processes of the Service's ready
// pods. In-cluster URLs in the arguments (http://<svc>.<ns>.svc[:port]) point at those proxies.
import type { ChildProcess } from "node:child_process";
import http from "node:http";
import type { V1Pod } from "@kubernetes/client-node";
import { KubeClient } from "../../lib/kube/client.ts";
import { R } from "../../lib/kube/resources.ts";
import { Informer } from "../../lib/kube/informer.ts";
import { prepareNativeAddon, startEngine, stopEngines, withFlag, type RunningEngine } from "../../operator/local/processes.ts";
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
  type PodMode,
  type ServiceAccountMount,
} from "../../testing/containers.ts";
import { freePorts } from "../../operator/local/ports.ts";

export interface PodRunnerOptions {
  namespace: string;
  /** llama.cpp threads per engine process. Default 1. */
  threads?: number;
  log?: (line: string) => void;
}

/** A Service on loopback: forwards each request to one of its pods' processes, round-robin. */
class ServiceProxy {
  readonly backends = new Map<string, string>(); // pod name → process URL
  private turn = 0;
  private constructor(
    readonly port: number,
    private readonly server: http.Server,
  ) {}

  static async start(): Promise<ServiceProxy> {
    const port = (await freePorts(1))[0]!;
    const server = http.createServer();
    const proxy = new ServiceProxy(port, server);
    server.on("request", (req, res) => proxy.forward(req, res));
    await new Promise<void>((r) => server.listen(port, "127.0.0.1", r));
    return proxy;
  }

  close(): void {
    this.server.closeAllConnections();
    this.server.close();
  }

  private forward(req: http.IncomingMessage, res: http.ServerResponse): void {
    const urls = [...this.backends.values()];
    if (urls.length === 0) {
      res
        .writeHead(503, { "content-type": "application/json" })
        .end('{"error":{"message":"no ready endpoints","type":"server_error","param":null,"code":"no_endpoints"}}');
      return;
    }
    const target = new URL(urls[this.turn++ % urls.length] ?? "");
    const up = http.request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      upRes.pipe(res);
      // A backend that dies mid-response resets the client connection too, as kube-proxy would.
      upRes.on("aborted", () => res.destroy());
      upRes.on("error", () => res.destroy());
    });
    up.on("error", () => (res.headersSent ? res.destroy() : res.writeHead(502).end()));
    res.on("close", () => up.destroy());
    req.pipe(up);
  }
}

export class PodRunner implements AsyncDisposable {
  private readonly proxies = new Map<string, ServiceProxy>();
  private readonly engines = new Map<string, RunningEngine>();
  private readonly held = new Set<string>();
  private readonly restarts = new Map<string, number>();
  private readonly informer: Informer<V1Pod>;
  private chain: Promise<void> = Promise.resolve();
  /** Set at teardown: nothing is (re)started after it. */
  private disposed = false;
  readonly mode: PodMode = podMode();
  private readonly tokens = new Map<string, ServiceAccountMount>();

  constructor(private readonly opts: PodRunnerOptions) {
    this.informer = new Informer<V1Pod>(KubeClient.fromDefault(), R.Pod, {
      namespace: opts.namespace,
      labelSelector: "app.kubernetes.io/name=llmfleet-engine",
    });
    this.informer.on((type, pod) => {
      this.chain = this.chain.then(() => this.sync(type === "DELETED" ? undefined : pod, pod)).catch((err: unknown) => this.log(`pod runner: ${String(err)}`));
    });
  }

  async start(): Promise<void> {
    void this.informer.run();
    await this.informer.waitForSync();
  }

  /** The loopback URL of a Service (its proxy), e.g. to send requests to the router. */
  async serviceURL(service: string): Promise<string> {
    return `http://127.0.0.1:${(await this.proxy(service)).port}`;
  }

  running(): RunningEngine[] {
    return [...this.engines.values()];
  }

  /** SIGKILLs the engine of the first pod whose name starts with `prefix`; `hold` keeps it down until release(). */
  kill(prefix: string, opts: { hold?: boolean } = {}): string {
    const [name, engine] = [...this.engines].find(([n]) => n.startsWith(prefix)) ?? [];
    if (!name || !engine) throw new Error(`no running engine for a pod named ${prefix}*`);
    if (opts.hold) this.held.add(name);
    if (this.mode === "containers") void killContainer(containerName(this.opts.namespace, name));
    else engine.child.kill("SIGKILL");
    return name;
  }

  /** Lets a held pod's engine start again, as a kubelet restarting its container. */
  release(pod: string): void {
    this.held.delete(pod);
    const current = this.informer.get(`${this.opts.namespace}/${pod}`);
    this.chain = this.chain.then(() => this.sync(current, current ?? { metadata: { name: pod } }));
  }

  restartCount(pod: string): number {
    return this.restarts.get(pod) ?? 0;
  }

  /** An engine that exits on its own is restarted after a second (restartPolicy Always), unless held. */
  private onExit(name: string, engine: RunningEngine, how: string): void {
    if (this.disposed || this.engines.get(name) !== engine) return; // stopped on purpose
    for (const p of this.proxies.values()) p.backends.delete(name);
    this.engines.delete(name);
    this.log(`pod ${name}: engine exited (${how})`);
    if (this.held.has(name)) return;
    this.restarts.set(name, (this.restarts.get(name) ?? 0) + 1);
    setTimeout(() => this.release(name), 1000).unref();
  }

  private log(line: string): void {
    this.opts.log?.(line);
  }

  private async proxy(service: string): Promise<ServiceProxy> {
    let p = this.proxies.get(service);
    if (!p) {
      p = await ServiceProxy.start();
      this.proxies.set(service, p);
    }
    return p;
  }

  private async resolveArgs(args: string[]): Promise<string[]> {
    const services = new Set([...args.join(" ").matchAll(/http:\/\/([a-z0-9-]+)\.[a-z0-9-]+\.svc(:\d+)?/g)].map((m) => m[1] ?? ""));
    const ports = new Map<string, number>();
    for (const s of services) ports.set(s, (await this.proxy(s)).port);
    return args.map((a) => a.replace(/http:\/\/([a-z0-9-]+)\.[a-z0-9-]+\.svc(:\d+)?/g, (_w, svc: string) => `http://127.0.0.1:${ports.get(svc)}`));
  }

  private async sync(pod: V1Pod | undefined, seen: V1Pod): Promise<void> {
    if (this.disposed) return;
    const name = seen.metadata?.name ?? "";
    const running = isRunning(pod);
    const engine = this.engines.get(name);
    if (!running) {
      if (engine) await this.stopPod(name, engine);
      return;
    }
    if (!engine && pod && !this.held.has(name)) await this.startPod(pod);
  }

  private async startPod(pod: V1Pod): Promise<void> {
    const name = pod.metadata?.name ?? "";
    const service = serviceOf(pod);
    const { host, port } = await podAddress(pod);
    let args = withFlag(withFlag(await this.resolveArgs(pod.spec?.containers[0]?.args ?? []), "--port", String(port)), "--host", host);
    if (!args.includes("router")) args = withFlag(args, "--threads", String(this.opts.threads ?? 1));
    const engine = this.mode === "containers" ? this.startContainer(pod, port, args) : await this.startProcess(name, port, args);
    this.engines.set(name, engine);
    engine.child.once("exit", (code, signal) => this.onExit(name, engine, `${code ?? signal}`));
    this.log(`pod ${name} Running: engine on ${engine.url} behind Service ${service}`);
    void this.whenHealthy(engine, service, name);
  }

  private async startProcess(name: string, port: number, args: string[]): Promise<RunningEngine> {
    await prepareNativeAddon((l) => this.log(l));
    return startEngine({ name, replica: 0, port, args }, (l) => this.log(l));
  }

  /** The pod's container: its image, env and user, its volumes (the model cache is the node's). */
  private startContainer(pod: V1Pod, port: number, args: string[]): RunningEngine {
    const name = pod.metadata?.name ?? "";
    const volumes = podVolumes(pod, nodeModelCache());
    const sa = this.podToken(pod);
    if (sa) volumes.binds.push([sa.dir, `${SERVICE_ACCOUNT_PATH}:ro`]);
    const c = runContainer({
      name: containerName(this.opts.namespace, name),
      image: pod.spec?.containers[0]?.image ?? "",
      args,
      env: { ...literalEnv(pod), ...sa?.env },
      hostname: name,
      ...podUser(pod),
      ...volumes,
    });
    pipeLines(c.child, `[${name}]`, (l) => this.log(l));
    return { spec: { name, replica: 0, port, args }, child: c.child, url: `http://${args[args.indexOf("--host") + 1]}:${port}` };
  }

  /** The ServiceAccount token a kubelet would mount (routers read EndpointSlices with it); one per pod, kept across restarts. */
  private podToken(pod: V1Pod): ServiceAccountMount | undefined {
    const name = pod.metadata?.name ?? "";
    const account = pod.spec?.automountServiceAccountToken ? pod.spec.serviceAccountName : undefined;
    if (!account) return undefined;
    const sa = this.tokens.get(name) ?? serviceAccountMount(this.opts.namespace, account);
    this.tokens.set(name, sa);
    return sa;
  }

  private async stop(engines: RunningEngine[]): Promise<void> {
    if (this.mode === "processes") return stopEngines(engines);
    await Promise.all(engines.map((e) => stopContainer(containerName(this.opts.namespace, e.spec.name))));
  }

  /** A process joins its Service only once it answers /health, as a ready pod joins endpoints. */
  private async whenHealthy(engine: RunningEngine, service: string, pod: string): Promise<void> {
    const alive = (): boolean => engine.child.exitCode === null && engine.child.signalCode === null;
    for (let i = 0; i < 600 && alive() && this.engines.get(pod) === engine; i++) {
      if (
        await fetch(`${engine.url}/health`).then(
          (r) => r.ok,
          () => false,
        )
      ) {
        (await this.proxy(service)).backends.set(pod, engine.url);
        return;
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  private async stopPod(name: string, engine: RunningEngine): Promise<void> {
    for (const p of this.proxies.values()) p.backends.delete(name);
    this.engines.delete(name);
    await this.stop([engine]);
    this.log(`pod ${name} gone: engine stopped`);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    // Before anything stops: an engine stopped here must not look like one that exited on its own
    // and be started again a second later — such orphans kept the test process alive (CI hung in
    // teardown twice). Pod events still being handled are waited for, but not forever.
    this.disposed = true;
    this.informer.stop();
    let timer: NodeJS.Timeout | undefined;
    const settled = await Promise.race([this.chain.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 30_000)))]);
    clearTimeout(timer);
    if (!settled) this.log("pod runner: pod events still in progress 30 s into teardown; stopping the engines anyway");
    await this.stop([...this.engines.values()]);
    for (const p of this.proxies.values()) p.close();
  }
}

/** One container per pod on the machine: the namespace keeps scenarios that run at once apart. */
function containerName(namespace: string, pod: string): string {
  return `llmfleet-e2e-${namespace}-${pod}`;
}

/** A child's output, line by line, with a tag. */
export function pipeLines(child: ChildProcess, tag: string, log: (line: string) => void): void {
  for (const stream of [child.stdout, child.stderr]) {
    let partial = "";
    stream?.on("data", (d: Buffer) => {
      const lines = (partial + d.toString()).split(/\r?\n/);
      partial = lines.pop() ?? "";
      for (const l of lines) if (l.trim()) log(`${tag} ${l}`);
    });
  }
}

/** The Service in front of a pod: the operator names both `<owner>-<component>`. */
function serviceOf(pod: V1Pod): string {
  const l = pod.metadata?.labels ?? {};
  return `${l["app.kubernetes.io/instance"]}-${l["app.kubernetes.io/component"]}`;
}

function isRunning(pod: V1Pod | undefined): boolean {
  return pod?.status?.phase === "Running" && !pod.metadata?.deletionTimestamp;
}

/**
 * kwok hands out pod IPs on loopback (127.10.0.0/16): the engine listens on the pod's own IP and
 * container port, so whatever dials podIP:8000 (the autoscaler's scrapes) reaches it.
 */
async function podAddress(pod: V1Pod): Promise<{ host: string; port: number }> {
  const ip = pod.status?.podIP;
  if (ip?.startsWith("127.")) return { host: ip, port: pod.spec?.containers[0]?.ports?.[0]?.containerPort ?? 8000 };
  return { host: "127.0.0.1", port: (await freePorts(1))[0]! };
}
