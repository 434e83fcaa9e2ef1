// The local process driver: what the Deployment controller and the endpoints of a Service are to a
// cluster, this is to `npm start`. Each planned Deployment has a desired number of engine
// processes; the driver starts or stops processes until that many run. A process serves (is in its
// router's upstreams file) once it answers /health. One that is removed is drained first: it
// leaves the router's file, and only when the router has applied that file and has no request in
// flight to it does it get SIGTERM, so no request is lost. A process that exits on its own is
// replaced, as a ReplicaSet replaces a pod.
import { renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { UpstreamsFile } from "../../engine/router/upstreams-file.ts";
import { freePorts } from "./ports.ts";
import { replicaArgs, type PlannedDeployment } from "./fleet.ts";
import { startEngine, stopEngines, waitHealthy, withFlag, type EngineProcessSpec, type RunningEngine } from "./processes.ts";
import { drainFromRouters, routerWiring, type RouterWiring } from "./routers.ts";

type ProcessState = "starting" | "serving" | "draining";

interface LocalProcess {
  engine: RunningEngine;
  state: ProcessState;
}

interface LocalDeployment {
  planned: PlannedDeployment;
  desired: number;
  processes: LocalProcess[];
  nextReplica: number;
  /** Reconciles of one Deployment run one after the other. */
  chain: Promise<void>;
  /** Seconds the last process took from start to /health. */
  startupSeconds?: number;
}

export interface DriverOptions {
  /** llama.cpp threads per model process. */
  threads: number;
  /** Folder for the routers' upstreams files. */
  runDir: string;
  log: (line: string) => void;
  /** Longest wait for a draining process's requests to finish before it is stopped anyway. Default 120 s (the router's prefill timeout). */
  drainTimeoutMs?: number;
  /** Longest wait for a new process to answer /health. Default 300 s (a first model download). */
  startTimeoutMs?: number;
}

export interface DeploymentView {
  desired: number;
  serving: string[];
  starting: number;
  draining: number;
  startupSeconds?: number;
}

const tag = (e: RunningEngine): string => `${e.spec.name}#${e.spec.replica}`;

export class LocalFleetDriver {
  private readonly deployments = new Map<string, LocalDeployment>();
  private readonly routers: RouterWiring[];
  private readonly urls: Map<string, string[]>;
  private stopping = false;

  constructor(
    planned: PlannedDeployment[],
    private readonly initial: EngineProcessSpec[],
    private readonly opts: DriverOptions,
  ) {
    for (const d of planned)
      this.deployments.set(d.name, { planned: d, desired: d.replicas, processes: [], nextReplica: d.replicas, chain: Promise.resolve() });
    this.urls = new Map(planned.map((d) => [d.name, initial.filter((s) => s.name === d.name).map((s) => `http://127.0.0.1:${s.port}`)]));
    this.routers = planned.filter((d) => d.role === "router").map((d) => routerWiring(d, join(opts.runDir, `${d.name}.upstreams.json`)));
  }

  /** Starts every planned process (the routers last, once their pods serve); rejects if one does not come up. */
  async start(): Promise<void> {
    const isRouter = (s: EngineProcessSpec): boolean => this.deployments.get(s.name)?.planned.role === "router";
    for (const group of [this.initial.filter((s) => !isRouter(s)), this.initial.filter(isRouter)]) {
      if (group.some(isRouter)) this.writeUpstreams();
      const started = group.map((s) => this.launch(this.deployment(s.name), isRouter(s) ? this.routerSpec(s) : s));
      await Promise.all(started.map((p) => this.becomeServing(p, true)));
    }
  }

  view(name: string): DeploymentView {
    const d = this.deployment(name);
    const count = (s: ProcessState): LocalProcess[] => d.processes.filter((p) => p.state === s);
    return {
      desired: d.desired,
      serving: count("serving").map((p) => p.engine.url),
      starting: count("starting").length,
      draining: count("draining").length,
      startupSeconds: d.startupSeconds,
    };
  }

  /** Sets the desired processes of a Deployment and starts or drains processes towards it (in the background). */
  scale(name: string, replicas: number): void {
    const d = this.deployment(name);
    d.desired = replicas;
    this.reconcileSoon(d);
  }

  /** Stops every process (no draining: the whole fleet goes). */
  async stop(): Promise<void> {
    this.stopping = true;
    await stopEngines([...this.deployments.values()].flatMap((d) => d.processes.map((p) => p.engine)));
  }

  private deployment(name: string): LocalDeployment {
    const d = this.deployments.get(name);
    if (!d) throw new Error(`no local Deployment ${name}`);
    return d;
  }

  private routerSpec(s: EngineProcessSpec): EngineProcessSpec {
    const wiring = this.routers.find((r) => r.name === s.name);
    return wiring ? { ...s, args: withFlag(s.args, "--upstreams-file", wiring.file) } : s;
  }

  private reconcileSoon(d: LocalDeployment): void {
    d.chain = d.chain.then(() => this.reconcile(d)).catch((err: unknown) => this.opts.log(`${d.planned.name}: ${String(err)}`));
  }

  private async reconcile(d: LocalDeployment): Promise<void> {
    if (this.stopping) return;
    const live = d.processes.filter((p) => p.state !== "draining");
    for (let n = live.length; n < d.desired; n++) {
      const [port, kvPort] = (await freePorts(2)) as [number, number];
      const spec = { name: d.planned.name, replica: d.nextReplica++, port, args: replicaArgs(d.planned, { port, kvPort }, this.urls, this.opts.threads) };
      void this.becomeServing(this.launch(d, spec), false);
    }
    // The newest go first, and one still starting before one that serves.
    const surplus = live.reverse().sort((a, b) => (a.state === "starting" ? 0 : 1) - (b.state === "starting" ? 0 : 1));
    for (const p of surplus.slice(0, Math.max(0, live.length - d.desired))) void this.drain(d, p);
  }

  private launch(d: LocalDeployment, spec: EngineProcessSpec): LocalProcess {
    const engine = startEngine(spec, this.opts.log);
    const p: LocalProcess = { engine, state: "starting" };
    d.processes.push(p);
    this.opts.log(`started ${tag(engine)} on ${engine.url}: engine ${spec.args.join(" ")}`);
    engine.child.once("exit", (code, signal) => this.exited(d, p, `${code ?? signal}`));
    return p;
  }

  /** Initial processes reject when they do not come up; a later one that does not is logged and stopped (and replaced). */
  private async becomeServing(p: LocalProcess, initial: boolean): Promise<void> {
    const t0 = performance.now();
    try {
      await waitHealthy(p.engine, this.opts.startTimeoutMs ?? 300_000);
    } catch (err) {
      if (initial) throw err;
      if (p.state === "starting" && !this.stopping) this.opts.log(`${tag(p.engine)}: ${(err as Error).message}`);
      p.engine.child.kill("SIGKILL");
      return;
    }
    if (p.state !== "starting") return;
    p.state = "serving";
    const d = this.deployment(p.engine.spec.name);
    d.startupSeconds = (performance.now() - t0) / 1000;
    if (initial) return;
    this.writeUpstreams();
    this.opts.log(
      `${tag(p.engine)} serving (ready in ${d.startupSeconds.toFixed(1)} s): ${this.view(d.planned.name).serving.length} process(es) behind ${d.planned.name}`,
    );
  }

  private async drain(d: LocalDeployment, p: LocalProcess): Promise<void> {
    const wasServing = p.state === "serving";
    p.state = "draining";
    const t0 = performance.now();
    if (wasServing) {
      const generations = this.writeUpstreams();
      this.opts.log(`draining ${tag(p.engine)}: the router sends it no new requests; stopping it once its requests in flight finish`);
      const routers = this.routers
        .filter((r) => r.serves(d.planned.name))
        .map((r) => ({ generation: generations.get(r.name) ?? 0, urls: this.view(r.name).serving }));
      const drained = await drainFromRouters(routers, p.engine.url, this.opts.drainTimeoutMs ?? 120_000);
      if (!drained) this.opts.log(`${tag(p.engine)}: requests still in flight after the drain timeout; stopping it anyway`);
    }
    await stopEngines([p.engine]);
    d.processes = d.processes.filter((x) => x !== p);
    this.opts.log(`stopped ${tag(p.engine)}${wasServing ? ` (drained in ${((performance.now() - t0) / 1000).toFixed(1)} s)` : " (it was still starting)"}`);
  }

  private exited(d: LocalDeployment, p: LocalProcess, how: string): void {
    if (this.stopping || p.state === "draining") return;
    d.processes = d.processes.filter((x) => x !== p);
    if (p.state === "serving") this.writeUpstreams();
    this.opts.log(`${tag(p.engine)} exited (${how}); starting a replacement in 2 s`);
    setTimeout(() => this.reconcileSoon(d), 2000).unref();
  }

  /** Rewrites every router's upstreams file from the serving processes; returns the generation written per router. */
  private writeUpstreams(): Map<string, number> {
    const generations = new Map<string, number>();
    for (const r of this.routers) {
      const serving = (services: string[]): string[] => services.flatMap((s) => (this.deployments.has(s) ? this.view(s).serving : []));
      const file: UpstreamsFile = {
        generation: ++r.generation,
        prefill: serving(r.services.prefill),
        decode: serving(r.services.decode),
        aggregated: serving(r.services.aggregated),
      };
      writeFileSync(`${r.file}.tmp`, JSON.stringify(file));
      renameSync(`${r.file}.tmp`, r.file);
      generations.set(r.name, r.generation);
    }
    return generations;
  }
}
