// `npm run bench:scale-operator -- [--n 250] [--idle-seconds 60] [--memory-limit chart|none|MiB] [--operator-form bundle|tsx] [--out FILE] [--operator-root DIR]`:
// the operator at scale on the real control plane (kube-apiserver, etcd, controller-manager,
// scheduler, kwok from the cache), running as a process under the chart's RBAC. N Models, each
// with a prefill and a decode pool of 2 pods on one kwok node group. Measured per phase: apply →
// all Ready, idle, one `kubectl scale`, a rolling change of every Model, a SIGKILL restart and a
// teardown in autoscaling mode slo; apply, idle and teardown in mode external, the baseline the
// slo mode's idle requests are compared with. Requests are the operator's own count of what it
// sent (llmfleet_operator_api_requests_total); reconcile quantiles come from its histogram.
// --operator-root runs the operator from another source tree (a baseline: e.g. main with only the
// request counter added). Writes bench/results/scale-operator.json (or --out).
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { benchArgs } from "./cli.ts";
import { R } from "../lib/kube/resources.ts";
import type { KubeClient } from "../lib/kube/client.ts";
import { startCluster } from "../scripts/cluster/cluster.ts";
import { createKwokGpuNode } from "../scripts/cluster/kwok-nodes.ts";
import { adminClient, installCRDs, ensureNamespace } from "../testing/cluster.ts";
import { kubectlOk } from "../testing/kubectl.ts";
import { operatorServiceAccount } from "../testing/operator-rbac.ts";
import { childApplies, countRequests, delta, fleetManifests, statusApplies, type AutoscalingMode, type OperatorSnapshot, type SnapshotDelta } from "../testing/scale-fleet.ts";
import { allGone, allReady, allRolledOut, digestChanges, poolReadyReplicas, poolStatusDigest, waitFor } from "./scale/fleet-state.ts";
import { chartOperatorMemoryLimit, quiescent, startOperatorRun, type OperatorForm, type OperatorRun } from "./scale/operator-run.ts";

const ROOT = resolve(import.meta.dirname, "..");
const NS = "scale";
const SA = "llmfleet-operator";
const SYS = "llmfleet-system";
/** The pool `kubectl scale` scales: mode external, so the autoscaler leaves the new size alone. */
const SCALED = "m0-prefill";

interface Ctx {
  admin: KubeClient;
  n: number;
  root: string;
  kubeconfig: string;
  idleSeconds: number;
  op: OperatorRun;
  restarts: number;
  /** The operator process's memory limit (a cgroup), or none. */
  memoryLimitBytes?: number;
  form: OperatorForm;
}

interface Phase extends SnapshotDelta {
  name: string;
  requestsPerMin: number;
  childApplies: number;
  statusApplies: number;
  rssMB: number;
  rssPeakMB: number;
  unchangedStatusWrites: number;
  cpuCores: number;
  load1: number;
  [extra: string]: unknown;
}

const EMPTY: OperatorSnapshot = {
  at: 0,
  requests: new Map(),
  reconcileBuckets: new Map(),
  reconciles: new Map(),
  queueDepth: 0,
  statusWrites: new Map(),
  memory: { heapUsedMB: NaN, heapTotalMB: NaN, externalMB: NaN },
};

/** The operator's highest RSS while a phase runs, sampled every second (the phase-end figure misses peaks). */
function rssPeak(ctx: Ctx): { stop: () => number } {
  let peak = 0;
  const timer = setInterval(() => {
    try {
      peak = Math.max(peak, ctx.op.stats().rssMB);
    } catch {
      // between a SIGKILL and the next process
    }
  }, 1000);
  return {
    stop: () => {
      clearInterval(timer);
      return Math.max(peak, ctx.op.stats().rssMB);
    },
  };
}

function log(msg: string): void {
  process.stderr.write(`${new Date().toISOString()} scale-operator: ${msg}\n`);
}

/** Runs `action`, waits for the operator to go quiet, and says what it cost the operator. */
async function measure(ctx: Ctx, name: string, action: () => Promise<Record<string, unknown>>): Promise<Phase> {
  log(`${name}: start (load ${loadavg()[0]?.toFixed(1)})`);
  const before = await ctx.op.snapshot();
  const cpu0 = ctx.op.stats().cpuSeconds;
  const peak = rssPeak(ctx);
  const extra = await action();
  const rssPeakMB = peak.stop();
  const after = await ctx.op.snapshot();
  const d = delta(before, after);
  const stats = ctx.op.stats();
  const total = Object.values(d.requests).reduce((a, b) => a + b, 0);
  const phase: Phase = {
    name,
    ...d,
    requestsPerMin: (total / Math.max(1, d.seconds)) * 60,
    childApplies: childApplies(d.requests),
    statusApplies: statusApplies(d.requests),
    rssMB: stats.rssMB,
    rssPeakMB,
    unchangedStatusWrites: unchanged(d.statusWrites),
    cpuCores: (stats.cpuSeconds - cpu0) / Math.max(1, d.seconds),
    load1: loadavg()[0] ?? 0,
    ...extra,
  };
  log(`${name}: ${d.seconds.toFixed(1)} s, ${total} requests, ${phase.childApplies} child applies, reconciles ${JSON.stringify(d.reconciles)}, status writes ${JSON.stringify(d.statusWrites)}, RSS ${stats.rssMB.toFixed(0)} MB (peak ${rssPeakMB.toFixed(0)}), heap ${JSON.stringify(d.memory)}`);
  return phase;
}

async function applyFleet(ctx: Ctx, mode: AutoscalingMode): Promise<Record<string, unknown>> {
  const start = Date.now();
  await kubectlOk(["apply", "--server-side", "-f", "-"], { stdin: fleetManifests({ namespace: NS, models: ctx.n, mode, externalPools: [SCALED] }), timeoutMs: 600_000 });
  const ready = await waitFor("every Model and pool Ready", () => allReady(ctx.admin, NS, 3 * ctx.n), 1_800_000);
  await waitFor("every Deployment rolled out", () => allRolledOut(ctx.admin, NS, 3 * ctx.n), 600_000);
  await quiescent(ctx.op);
  return { applyToReadySeconds: (ready - start) / 1000 };
}

/** The Events the operator recorded since `since` (ms): what its writes in a phase were about. */
async function eventsSince(ctx: Ctx, since: number): Promise<string[]> {
  type Ev = { reason?: string; note?: string; eventTime?: string; regarding?: { kind?: string; name?: string }; series?: { lastObservedTime?: string } };
  const { items } = await ctx.admin.list<Ev & { metadata?: object }>(R.Event, { namespace: NS });
  return items
    .filter((e) => Date.parse(e.series?.lastObservedTime ?? e.eventTime ?? "") >= since)
    .map((e) => `${e.regarding?.kind ?? ""}/${e.regarding?.name ?? ""} ${e.reason ?? ""}: ${e.note ?? ""}`);
}

async function idle(ctx: Ctx): Promise<Record<string, unknown>> {
  const start = Date.now();
  const before = await poolStatusDigest(ctx.admin, NS);
  await sleep(ctx.idleSeconds * 1000);
  return { events: await eventsSince(ctx, start - 1000), poolStatusChanges: digestChanges(before, await poolStatusDigest(ctx.admin, NS)) };
}

async function scaleOnePool(ctx: Ctx): Promise<Record<string, unknown>> {
  const start = Date.now();
  await kubectlOk(["scale", "-n", NS, "prefillpool", SCALED, "--replicas=3"]);
  await waitFor("m0-prefill at 3 ready replicas", async () => (await poolReadyReplicas(ctx.admin, NS, SCALED)) === 3, 300_000);
  const quiet = await quiescent(ctx.op);
  return { busySeconds: (quiet - start) / 1000 };
}

async function rollAllModels(ctx: Ctx): Promise<Record<string, unknown>> {
  const start = Date.now();
  for (let i = 0; i < ctx.n; i++) await ctx.admin.mergePatch(R.Model, { namespace: NS, name: `m${i}` }, { spec: { runtime: { engine: "bundled", threads: 4 } } });
  const done = await waitFor("every Deployment rolled out after the change", () => allRolledOut(ctx.admin, NS, 3 * ctx.n), 1_800_000);
  await quiescent(ctx.op);
  return { rolloutSeconds: (done - start) / 1000 };
}

/** SIGKILL, then a new process (a new identity: it waits for the old lease to expire). Measured on the new process. */
async function restart(ctx: Ctx): Promise<Phase> {
  log("restart: SIGKILL");
  await ctx.op.kill("SIGKILL");
  const killedAt = Date.now();
  ctx.restarts++;
  ctx.op = startOperatorRun(ctx.root, `scale-${ctx.restarts}`, ctx.kubeconfig, { memoryLimitBytes: ctx.memoryLimitBytes, form: ctx.form });
  const peak = rssPeak(ctx);
  const leading = await ctx.op.reconciling();
  const quiet = await quiescent(ctx.op);
  const after = await ctx.op.snapshot();
  const d = delta({ ...EMPTY, at: ctx.op.startedAt }, after);
  const stats = ctx.op.stats();
  const rssPeakMB = peak.stop();
  log(`restart: status writes ${JSON.stringify(d.statusWrites)}, RSS ${stats.rssMB.toFixed(0)} MB (peak ${rssPeakMB.toFixed(0)}), heap ${JSON.stringify(d.memory)}`);
  return {
    name: "restart",
    ...d,
    requestsPerMin: 0,
    childApplies: childApplies(d.requests),
    statusApplies: statusApplies(d.requests),
    rssMB: stats.rssMB,
    rssPeakMB,
    unchangedStatusWrites: unchanged(d.statusWrites),
    cpuCores: stats.cpuSeconds / Math.max(1, d.seconds),
    load1: loadavg()[0] ?? 0,
    leaderAfterSeconds: (leading - killedAt) / 1000,
    reconciledAfterSeconds: (quiet - killedAt) / 1000,
  };
}

async function teardown(ctx: Ctx): Promise<Record<string, unknown>> {
  const start = Date.now();
  await kubectlOk(["delete", "-n", NS, "models,prefillpools,decodepools", "--all", "--wait=false"], { timeoutMs: 600_000 });
  const gone = await waitFor("the fleet gone", () => allGone(ctx.admin, NS), 1_800_000);
  await quiescent(ctx.op);
  return { teardownSeconds: (gone - start) / 1000, objects: 3 * ctx.n };
}

/** Two autoscaler and actuator intervals (15 s each): their first decisions are real changes, written once; idle is measured after them. */
/** The autoscaler's default scale-down stabilisation window (operator/autoscaler/observe.ts); the bench's pools keep it. */
const STABILISATION_SECONDS = 300;

/**
 * Before an idle minute: in mode slo, until every pool's history spans the stabilisation window
 * (its decision changes once then, to "hold at min N: idle for the stabilisation window": at
 * N = 250 an idle minute 35 s after the apply caught 243 such writes), two autoscaler intervals
 * more, and no status write for 35 s; in mode external, 35 s (two actuator intervals).
 */
async function settle(ctx: Ctx, mode: AutoscalingMode, readyAt: number): Promise<void> {
  const windowEnd = mode === "slo" ? readyAt + (STABILISATION_SECONDS + 35) * 1000 : 0;
  await sleep(Math.max(35_000, windowEnd - Date.now()));
  await quiescent(ctx.op);
  await noStatusWrites(ctx, 35_000, 900_000);
}

const statusWriteTotal = (s: OperatorSnapshot): number => [...s.statusWrites.values()].reduce((a, b) => a + b, 0);

/**
 * Waits for `quietMs` (two autoscaler intervals and a margin) without a status write. The
 * autoscaler's decision for an idle pool changes once more when its history first spans the
 * stabilisation window ("hold at min N: idle for the stabilisation window"); pools applied over
 * minutes cross it over minutes, and an idle minute measured before they all have is not idle.
 */
async function noStatusWrites(ctx: Ctx, quietMs: number, timeoutMs: number): Promise<void> {
  const start = Date.now();
  let last = statusWriteTotal(await ctx.op.snapshot());
  let since = Date.now();
  while (Date.now() - since < quietMs) {
    if (Date.now() - start > timeoutMs) throw new Error(`status writes still going on after ${timeoutMs / 1000} s of settling`);
    await sleep(1000);
    const now = statusWriteTotal(await ctx.op.snapshot());
    if (now !== last) since = Date.now();
    last = now;
  }
  log(`settled: no status write for ${quietMs / 1000} s, after ${((Date.now() - start) / 1000).toFixed(0)} s`);
}

async function runMode(ctx: Ctx, mode: AutoscalingMode): Promise<Phase[]> {
  const phases = [await measure(ctx, `${mode}/apply`, () => applyFleet(ctx, mode))];
  await settle(ctx, mode, Date.now());
  phases.push(await measure(ctx, `${mode}/idle`, () => idle(ctx)));
  if (mode === "slo") {
    phases.push(await measure(ctx, "slo/scale-event", () => scaleOnePool(ctx)));
    phases.push(await measure(ctx, "slo/rolling-change", () => rollAllModels(ctx)));
    phases.push({ ...(await restart(ctx)), name: "slo/restart" });
  }
  phases.push(await measure(ctx, `${mode}/teardown`, () => teardown(ctx)));
  return phases;
}

async function setup(n: number): Promise<{ admin: KubeClient; kubeconfig: string; stop: () => Promise<void> }> {
  const cluster = await startCluster({ dir: mkdtempSync(join(tmpdir(), "llmfleet-scale-")) });
  process.env.KUBECONFIG = cluster.kubeconfigPath;
  process.env.LLMFLEET_KUBECTL = cluster.kubectlPath;
  await installCRDs();
  await ensureNamespace(NS);
  // Nodes for the routers (no GPUs); the GPU nodes are the node group's, created by the operator.
  for (let i = 0; i <= Math.floor(n / 400); i++) await createKwokGpuNode(cluster.kubeconfigPath, `cpu-${i}`, { gpus: 0, cpu: "2000", memory: "8Ti", pods: 500 });
  const kubeconfig = await operatorServiceAccount(SA, SYS);
  return { admin: adminClient(), kubeconfig, stop: () => cluster.stop() };
}

/** Status writes that changed nothing (the API server kept the resourceVersion). */
function unchanged(writes: Record<string, number>): number {
  return Object.entries(writes)
    .filter(([k]) => k.endsWith(" unchanged"))
    .reduce((a, [, v]) => a + v, 0);
}

function find(phases: Phase[], name: string): Phase {
  const p = phases.find((x) => x.name === name);
  if (!p) throw new Error(`no phase ${name}`);
  return p;
}

function summary(n: number, phases: Phase[]): Record<string, unknown> {
  const idleSlo = find(phases, "slo/idle");
  const idleExternal = find(phases, "external/idle");
  const teardown = find(phases, "slo/teardown");
  const teardownReconciles = Object.entries(teardown.reconciles).filter(([c]) => !c.endsWith("-actuation")).reduce((a, [, v]) => a + v, 0);
  const p99s = phases.flatMap((p) => Object.entries(p.reconcileQuantiles).filter(([c]) => !c.endsWith("-actuation")).map(([, q]) => q.p99));
  return {
    n,
    idle_requests_per_min_slo: round(idleSlo.requestsPerMin),
    idle_requests_per_min_external: round(idleExternal.requestsPerMin),
    idle_slo_vs_external_ratio: round(idleSlo.requestsPerMin / Math.max(1e-9, idleExternal.requestsPerMin)),
    operator_rss_mb_slo: round(Math.max(...phases.filter((p) => p.name.startsWith("slo/")).map((p) => p.rssMB))),
    operator_rss_peak_mb_slo: round(Math.max(...phases.filter((p) => p.name.startsWith("slo/")).map((p) => p.rssPeakMB))),
    scale_event_applies: find(phases, "slo/scale-event").childApplies,
    teardown_reconciles_per_object: round(teardownReconciles / (3 * n)),
    reconcile_p99_s: round(Math.max(...p99s)),
    unchanged_status_patches_per_min: round(((idleSlo.unchangedStatusWrites + idleExternal.unchangedStatusWrites) / (idleSlo.seconds + idleExternal.seconds)) * 60),
    status_writes_idle_slo: idleSlo.statusApplies,
    unchanged_status_writes_idle_slo: idleSlo.unchangedStatusWrites,
    scale_writes_idle_slo: countRequests(idleSlo.requests, (verb, r) => verb === "update" && r.endsWith("/scale")),
    reconcile_p99_s_by_phase: Object.fromEntries(phases.map((p) => [p.name, round(Math.max(0, ...Object.entries(p.reconcileQuantiles).filter(([c]) => !c.endsWith("-actuation")).map(([, q]) => q.p99)))])),
    apply_to_ready_s: find(phases, "slo/apply").applyToReadySeconds,
  };
}

function round(x: number): number {
  return Number(x.toPrecision(4));
}

/** --memory-limit: chart (the chart's limit, as the pod runs), none, or a number of MiB. */
function memoryLimit(value: string, root: string): number | undefined {
  if (value === "none") return undefined;
  return value === "chart" ? chartOperatorMemoryLimit(root) : Number(value) * 2 ** 20;
}

async function main(): Promise<void> {
  const { values } = benchArgs({ options: { n: { type: "string" }, "idle-seconds": { type: "string" }, out: { type: "string" }, "operator-root": { type: "string" }, "memory-limit": { type: "string" }, "operator-form": { type: "string" } } });
  const n = Number(values.n ?? 250);
  const root = resolve(values["operator-root"] ?? ROOT);
  const out = resolve(values.out ?? join(ROOT, "bench/results/scale-operator.json"));
  const memoryLimitBytes = memoryLimit(values["memory-limit"] ?? "none", root);
  const form = (values["operator-form"] ?? "bundle") as OperatorForm;
  const env = await setup(n);
  const ctx: Ctx = {
    admin: env.admin,
    n,
    root,
    kubeconfig: env.kubeconfig,
    idleSeconds: Number(values["idle-seconds"] ?? 60),
    op: startOperatorRun(root, "scale-0", env.kubeconfig, { memoryLimitBytes, form }),
    restarts: 0,
    memoryLimitBytes,
    form,
  };
  const startedAt = new Date().toISOString();
  try {
    await ctx.op.reconciling();
    const phases = [...(await runMode(ctx, "slo")), ...(await runMode(ctx, "external"))];
    const result = {
      ...summary(n, phases),
      baseline: "idle requests of the same fleet in autoscaling mode external, same run",
      operator_root: root,
      operator_form: form,
      operator_memory_limit_mb: memoryLimitBytes === undefined ? null : memoryLimitBytes / 2 ** 20,
      machine: { cpus: cpus().length, model: cpus()[0]?.model, load_avg_at_end: loadavg(), shared: true },
      started_at: startedAt,
      finished_at: new Date().toISOString(),
      phases,
    };
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
    const s = summary(n, phases);
    console.log(JSON.stringify(s, null, 2));
    console.log(`idle requests/min, slo vs external (baseline, same run): ${String(s.idle_slo_vs_external_ratio)}x`);
  } catch (err) {
    log(`failed; operator log tail:\n${ctx.op.logs().slice(-3000)}`);
    throw err;
  } finally {
    await ctx.op.kill("SIGTERM");
    await env.stop();
  }
}

await main();
