// `npm start` autoscaling: the operator's SLO autoscaler, with the local driver in place of the
// /scale subresource. Every interval, for each pool in mode slo, it scrapes the pool's serving
// processes, turns two scrapes into an observation (observe.ts), decides with the step the
// cluster loop uses (recordAndRecommend → recommendReplicas), and asks the driver for that many
// processes. Rates are taken per process, over processes seen at both scrapes, so a process that
// comes or goes does not look like a burst of work.
import type { EnginePool, PoolRole } from "../api.ts";
import { recordAndRecommend } from "../autoscaler/controller.ts";
import { autoscaled, observation, recommenderSpec } from "../autoscaler/observe.ts";
import { emptyScrape, pairScrapes, parseExposition, rememberScrapes, type PodScrapes } from "../autoscaler/scrape.ts";
import type { Decision, PoolObservation, RecommenderSpec } from "../autoscaler/types.ts";
import { nameOf } from "../../lib/kube/types.ts";
import { childName } from "../plan/labels.ts";
import type { DeploymentView, LocalFleetDriver } from "./driver.ts";
import type { LocalFleetSpec } from "./manifests.ts";

export interface LocalAutoscalerOptions {
  /** Seconds between passes. Default 5 (the cluster's is 15; a local process starts in seconds, not minutes). */
  intervalSeconds?: number;
  /** Replaces every pool's autoscaling.scaleDownStabilization, in seconds. Default: the pool's own (300 s unless set). */
  scaleDownStabilizationSeconds?: number;
  /** Caps every pool's replicas.max (not below its min): the processes share this machine. Default: no cap. */
  maxProcessesPerPool?: number;
  /** Lead time for a new process when none has started yet, seconds. Default 10; afterwards, the last measured start-up time. */
  modelLoadSeconds?: number;
  log: (line: string) => void;
}

interface PoolState {
  history: PoolObservation[];
  /** Each process's scrape (by URL) at the last pass. */
  pods: PodScrapes;
  lastAt?: number;
  lastReason?: string;
}

async function metricsText(url: string): Promise<string | undefined> {
  try {
    const res = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(2000) });
    return res.ok ? await res.text() : undefined;
  } catch {
    return undefined; // a process that does not answer contributes nothing this interval
  }
}

const processes = (n: number): string => `${n} process${n === 1 ? "" : "es"}`;

const fmt = (x: number | undefined, unit = ""): string => (x === undefined ? "-" : `${Number(x.toPrecision(3))}${unit}`);

function inputsLine(d: Decision): string {
  const i = d.inputs;
  return `queue ${i.queueDepth}, arrival ${fmt(i.arrivalRate, "/s")}, latency p90 ${fmt(i.observedLatency, "s")} (SLO ${fmt(i.sloSeconds, "s")})`;
}

export class LocalAutoscaler {
  private readonly state = new Map<string, PoolState>();
  private timer: NodeJS.Timeout | undefined;
  private running = false;

  constructor(
    private readonly fleet: LocalFleetSpec,
    private readonly driver: LocalFleetDriver,
    private readonly opts: LocalAutoscalerOptions,
  ) {}

  start(): void {
    for (const [pool, role] of this.pools().filter(([p]) => !autoscaled(p))) {
      this.opts.log(`autoscaler: ${role} pool ${nameOf(pool)} is in mode external; left at ${this.driver.view(childName(nameOf(pool), role)).desired}`);
    }
    this.timer = setInterval(() => void this.tick(), (this.opts.intervalSeconds ?? 5) * 1000);
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** One pass over every autoscaled pool (what the timer runs). */
  async tick(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      for (const [pool, role] of this.pools().filter(([p]) => autoscaled(p))) await this.pass(pool, role);
    } finally {
      this.running = false;
    }
  }

  private pools(): Array<[EnginePool, PoolRole]> {
    return [
      ...this.fleet.prefillPools.map((p): [EnginePool, PoolRole] => [p, "prefill"]),
      ...this.fleet.decodePools.map((p): [EnginePool, PoolRole] => [p, "decode"]),
    ];
  }

  private async pass(pool: EnginePool, role: PoolRole): Promise<void> {
    const deployment = childName(nameOf(pool), role);
    const st: PoolState = this.state.get(deployment) ?? { history: [], pods: new Map() };
    this.state.set(deployment, st);
    const view = this.driver.view(deployment);
    const pods: PodScrapes = new Map();
    await Promise.all(view.serving.map(async (u) => ((t) => t !== undefined && pods.set(u, parseExposition(t, emptyScrape())))(await metricsText(u))));
    const at = performance.now() / 1000;
    const { prev, cur } = pairScrapes(st.pods, pods);
    const lastAt = st.lastAt;
    [st.pods, st.lastAt] = [rememberScrapes(st.pods, pods, view.serving), at];
    if (lastAt === undefined) return; // rates need two scrapes
    const obs = observation(role, { at: lastAt, scrape: prev }, { at, scrape: cur }, view.serving.length);
    const d = recordAndRecommend(st.history, obs, this.specOf(pool, role, view));
    const what = `autoscaler: ${role} pool ${nameOf(pool)}`;
    if (d.desired !== view.desired) {
      this.opts.log(`${what}: ${view.desired} -> ${processes(d.desired)}: ${d.reason} [${inputsLine(d)}]`);
      this.driver.scale(deployment, d.desired);
    } else if (d.reason !== st.lastReason) {
      this.opts.log(`${what}: ${processes(d.desired)}: ${d.reason} [${inputsLine(d)}]`);
    }
    st.lastReason = d.reason;
  }

  private specOf(pool: EnginePool, role: PoolRole, view: DeploymentView): RecommenderSpec {
    const model = this.fleet.models.find((m) => nameOf(m) === pool.spec.modelRef.name);
    // The pool as the cluster would hold it, its desired replicas being the processes asked for; no node to provision here.
    const asked = { ...pool, spec: { ...pool.spec, replicas: { ...pool.spec.replicas, desired: view.desired } } } as EnginePool;
    const spec = recommenderSpec({ pool: asked, role, model, modelLoadSeconds: Math.ceil(view.startupSeconds ?? this.opts.modelLoadSeconds ?? 10) });
    const stabilisation = this.opts.scaleDownStabilizationSeconds ?? spec.scaleDownStabilizationSeconds;
    const max = Math.max(spec.min, Math.min(spec.max, this.opts.maxProcessesPerPool ?? spec.max));
    return { ...spec, max, scaleDownStabilizationSeconds: stabilisation };
  }
}
