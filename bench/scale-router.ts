// `npm run bench:scale-router -- [--upstreams 100] [--engines 2] [--streams 1000] [--max-streams 256] [--soak 600]
// [--router-node-flags=--max-old-space-size=N (default: the operator's, operator/plan/model.ts)] [--router-cpus=LIST (default: the last CPU;
// "" = none)] [--out FILE]`:
// the router as users run it (the engine image's bundled engine.mjs --role router, prefix-aware) in front of engine
// processes on loopback serving the tiny synthetic model; each of the --upstreams pods the router
// sees is a TCP proxy to one of the engines. Measured: decision latency (the router's own
// llmfleet_router_decision_seconds) and RSS with 100 upstreams; --streams concurrent streams
// (429 past --max-streams, retried after Retry-After; none may be dropped); RSS over a soak of
// --soak seconds (growth over its last 5 minutes, or its last half when shorter); the prefix hit
// rate through one router and through two (the baseline: one router, same run); and requests lost
// over a rolling restart of two routers behind a Service-like chooser of ready routers. Prompts
// are sized to the engines' context (bench/scale/router-fleet.ts) and checked before the run; soak
// failures are counted by status (a 429 is a refusal, retried, not a failure).
// Writes bench/results/scale-router.json (or --out).
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { benchArgs } from "./cli.ts";
import { SYNTHETIC_PRESETS, writeSyntheticModel } from "../engine/model/synthetic-gguf.ts";
import { quantileBetween } from "../operator/autoscaler/scrape.ts";
import { ROUTER_NODE_OPTIONS } from "../operator/plan/model.ts";
import { processStats, samples } from "../testing/scale-fleet.ts";
import { LoadClient, type StreamOutcome } from "./http/load-client.ts";
import type { RunningServer } from "./http/servers.ts";
import { rollingRestart } from "./scale/rolling-restart.ts";
import { benchPrompt, COMPLETION_TOKENS, ENGINE_CTX_TOKENS, MAX_MARKER, routesByMarker, startEngine, startMarkedProxy, startRouter, type MarkedProxy } from "./scale/router-fleet.ts";

const ROOT = resolve(import.meta.dirname, "..");

function log(msg: string): void {
  process.stderr.write(`${new Date().toISOString()} scale-router: ${msg}\n`);
}

const prompt = benchPrompt;

/** One stream, retried after Retry-After (1 s) while the router answers 429. */
async function streamUntilServed(client: LoadClient, marker: number, tally: { refused: number }): Promise<StreamOutcome> {
  for (;;) {
    const o = await client.complete({ prompt: prompt(marker), maxTokens: COMPLETION_TOKENS });
    if (o.status !== 429) return o;
    tally.refused++;
    await sleep(1000);
  }
}

function decisionBuckets(text: string): Map<number, number> {
  return new Map(samples(text, "llmfleet_router_decision_seconds_bucket").map(([l, v]) => [l.le === "+Inf" ? Infinity : Number(l.le), v]));
}

/**
 * The decision latency of a warm router: `warmup` requests first (V8 compiles the path on the
 * first few hundred: the slowest 1 % of a cold router's first 2,000 are its first requests), then
 * `requests` measured between two reads of the router's histogram.
 */
async function decisionLatency(router: RunningServer, requests: number, warmup = 500): Promise<Record<string, number>> {
  const client = new LoadClient(router.url, 16);
  const send = async (n: number): Promise<void> => {
    let next = 0;
    await Promise.all(Array.from({ length: 16 }, async () => {
      while (next < n) await client.complete({ prompt: prompt(next++ % 500), maxTokens: 1 });
    }));
  };
  await send(warmup);
  const before = decisionBuckets(await (await fetch(`${router.url}/metrics`)).text());
  await send(requests);
  client.close();
  const after = decisionBuckets(await (await fetch(`${router.url}/metrics`)).text());
  const ms = (q: number): number => (quantileBetween(before, after, q) ?? NaN) * 1000;
  return { decision_p50_ms: ms(0.5), decision_p99_ms: ms(0.99), rss_mb: processStats(router.pid).rssMB };
}

interface Sampler {
  /** The highest reading so far. */
  peak: () => number;
  /** Resolves true once a reading reaches `n`, false after `timeoutMs`. */
  reached: (n: number, timeoutMs: number) => Promise<boolean>;
  stop: () => Promise<void>;
}

/** Reads a number every `everyMs` until stopped (a failed read counts as 0). */
function sampler(read: () => Promise<number>, everyMs: number): Sampler {
  let peak = 0;
  let now = 0;
  let running = true;
  const loop = (async (): Promise<void> => {
    while (running) {
      now = await read().catch(() => 0);
      peak = Math.max(peak, now);
      await sleep(everyMs);
    }
  })();
  return {
    peak: () => peak,
    async reached(n, timeoutMs) {
      const end = Date.now() + timeoutMs;
      while (now < n && Date.now() < end) await sleep(10);
      return now >= n;
    },
    async stop() {
      running = false;
      await loop;
    },
  };
}

const metricsText = async (url: string): Promise<string> => (await fetch(`${url}/metrics`)).text();

/** Streams being served across the engines (running + queued). */
async function servedByEngines(engines: RunningServer[]): Promise<number> {
  const texts = await Promise.all(engines.map((e) => metricsText(e.url)));
  return texts.reduce((a, t) => a + (samples(t, "llmfleet_running_sequences")[0]?.[1] ?? 0) + (samples(t, "llmfleet_queue_depth")[0]?.[1] ?? 0), 0);
}

/** The router's own count of admitted streams (llmfleet_router_streams_in_flight). */
async function admittedByRouter(router: RunningServer): Promise<number> {
  return samples(await metricsText(router.url), "llmfleet_router_streams_in_flight")[0]?.[1] ?? 0;
}

async function manyStreams(router: RunningServer, engines: RunningServer[], streams: number, maxStreams: number): Promise<Record<string, unknown>> {
  const client = new LoadClient(router.url, streams);
  const tally = { refused: 0 };
  const served = sampler(() => servedByEngines(engines), 100);
  const admitted = sampler(() => admittedByRouter(router), 20);
  const pending = Array.from({ length: streams }, (_, i) => streamUntilServed(client, i, tally));
  // The probe goes while the router holds its limit: past capacity it must get 429 with Retry-After.
  // A slot a stream frees between the sample and the probe admits it: try again (at most 20 times).
  let probe = { atCapacity: false, status: 0, retryAfter: null as string | null, tries: 0 };
  while (probe.tries < 20 && probe.status !== 429) {
    const atCapacity = await admitted.reached(maxStreams, 10_000);
    const res = await fetch(`${router.url}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ prompt: "x", max_tokens: 1 }) });
    await res.text();
    probe = { atCapacity, status: res.status, retryAfter: res.headers.get("retry-after"), tries: probe.tries + 1 };
  }
  const outcomes = await Promise.all(pending);
  await Promise.all([served.stop(), admitted.stop()]);
  client.close();
  const dropped = outcomes.filter((o) => !o.ok || !o.complete);
  if (dropped.length > 0) log(`dropped: ${dropped.slice(0, 3).map((o) => `${o.status} ${o.error ?? ""}`).join("; ")}`);
  return {
    streams,
    streams_admitted: admitted.peak(),
    engines_peak_in_flight: served.peak(),
    streams_dropped: dropped.length,
    refused_429: tally.refused,
    probe_past_capacity: { at_capacity: probe.atCapacity, status: probe.status, retry_after: probe.retryAfter, tries: probe.tries },
  };
}

/** The router's V8 heap in use (its own process metrics): what it holds, apart from what the allocator keeps. */
async function heapUsedMB(router: RunningServer): Promise<number> {
  const text = await (await fetch(`${router.url}/metrics`)).text();
  return (samples(text, "llmfleet_nodejs_heap_size_used_bytes")[0]?.[1] ?? NaN) / 2 ** 20;
}

async function soak(router: RunningServer, seconds: number, workers: number): Promise<Record<string, unknown>> {
  const client = new LoadClient(router.url, workers);
  const tally = { refused: 0 };
  const rss: Array<[number, number]> = [];
  const heap: number[] = [];
  const end = Date.now() + seconds * 1000;
  let served = 0;
  let failed = 0;
  const failures: string[] = [];
  const failedByStatus: Record<string, number> = {};
  const sampler = (async (): Promise<void> => {
    while (Date.now() < end) {
      rss.push([Date.now(), processStats(router.pid).rssMB]);
      heap.push(await heapUsedMB(router));
      await sleep(5000);
    }
  })();
  await Promise.all(Array.from({ length: workers }, async (_, w) => {
    for (let i = 0; Date.now() < end; i++) {
      const o = await streamUntilServed(client, (w * 7919 + i) % 5000, tally);
      if (o.ok && o.complete) {
        served++;
        continue;
      }
      failed++;
      failedByStatus[String(o.status)] = (failedByStatus[String(o.status)] ?? 0) + 1;
      failures.push(`${o.status} ${o.error ?? "incomplete"}`);
    }
  }));
  await sampler;
  client.close();
  const window = Math.min(300, seconds / 2) * 1000;
  const from = rss.find(([t]) => t >= end - window)?.[1] ?? NaN;
  const last = rss.at(-1)?.[1] ?? NaN;
  return { soak_seconds: seconds, soak_served: served, soak_failed: failed, soak_failed_by_status: failedByStatus, soak_refused_429: tally.refused, soak_failure_examples: [...new Set(failures)].slice(0, 5), rss_growth_window_s: window / 1000, rss_growth_last5min: (last - from) / from, rss_samples_mb: rss.map(([, v]) => Number(v.toFixed(1))), heap_used_samples_mb: heap.map((v) => Number(v.toFixed(1))) };
}

/** Share of requests that went to their prefix's most frequent upstream. */
function hitRate(proxies: MarkedProxy[], markers: Set<number>): number {
  let modal = 0;
  let total = 0;
  for (const [marker, routes] of routesByMarker(proxies)) {
    if (!markers.has(marker)) continue;
    const counts = new Map<number, number>();
    for (const r of routes) counts.set(r, (counts.get(r) ?? 0) + 1);
    modal += Math.max(...counts.values());
    total += routes.length;
  }
  return modal / Math.max(1, total);
}

async function prefixHitRate(routers: RunningServer[], proxies: MarkedProxy[], base: number): Promise<number> {
  const clients = routers.map((r) => new LoadClient(r.url, 16));
  const markers = Array.from({ length: 50 }, (_, i) => base + i);
  // Round by round: a prefix is not sent ten times at once (the router would rightly spread a burst of one prefix).
  const jobs = Array.from({ length: 10 }, (_, round) => markers.map((m) => ({ m, round }))).flat();
  let next = 0;
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (next < jobs.length) {
      const job = jobs[next++];
      const client = clients[(job?.round ?? 0) % clients.length];
      if (job && client) await streamUntilServed(client, job.m, { refused: 0 });
    }
  }));
  for (const c of clients) c.close();
  return hitRate(proxies, new Set(markers));
}

interface Fleet {
  engines: RunningServer[];
  proxies: MarkedProxy[];
  routers: RunningServer[];
}

/**
 * The longest prompt the bench sends, with its completion, must fit the engines' context: a prompt
 * that does not is answered 400 at once, and a soak of those measures a flood of errors, not
 * streams (the first 10-minute run did exactly that).
 */
async function checkPromptFits(engine: RunningServer): Promise<void> {
  const client = new LoadClient(engine.url, 1);
  const o = await client.complete({ prompt: prompt(MAX_MARKER), maxTokens: COMPLETION_TOKENS });
  client.close();
  if (!o.ok || !o.complete) throw new Error(`the bench's longest prompt plus ${COMPLETION_TOKENS} tokens does not fit the engines' ${ENGINE_CTX_TOKENS}-token context: ${o.status} ${o.error ?? ""}`);
}

async function startFleet(fleet: Fleet, o: { engines: number; upstreams: number; maxStreams: number; routerNodeFlags: string[]; routerCpus: string }): Promise<string[]> {
  const model = await writeSyntheticModel(join(tmpdir(), "llmfleet-bench-tiny.gguf"), SYNTHETIC_PRESETS.tiny as never);
  for (let i = 0; i < o.engines; i++) fleet.engines.push(await startEngine(model, Math.ceil(o.maxStreams / o.engines)));
  await checkPromptFits(fleet.engines[0] as RunningServer);
  for (let i = 0; i < o.upstreams; i++) fleet.proxies.push(await startMarkedProxy(Number(new URL(fleet.engines[i % o.engines]?.url ?? "").port)));
  const upstreams = fleet.proxies.map((p) => p.url);
  const router = { upstreams, maxStreams: o.maxStreams, nodeFlags: o.routerNodeFlags, ...(o.routerCpus ? { cpus: o.routerCpus } : {}) };
  fleet.routers.push(await startRouter(router), await startRouter(router));
  log(`fleet up: ${o.engines} engines, ${o.upstreams} upstreams, 2 routers (load ${loadavg()[0]?.toFixed(1)})`);
  return upstreams;
}

async function stopFleet(fleet: Fleet): Promise<void> {
  for (const r of fleet.routers) await r[Symbol.asyncDispose]();
  for (const p of fleet.proxies) p.close();
  for (const e of fleet.engines) await e[Symbol.asyncDispose]();
}

interface Settings {
  upstreams: number;
  engines: number;
  streams: number;
  maxStreams: number;
  soakSeconds: number;
  routerNodeFlags: string[];
  /** CPUs of the routers (taskset -c); the bench, its proxies and engines run on the others. "" = no pinning. */
  routerCpus: string;
}

async function phases(fleet: Fleet, upstreams: string[], s: Settings): Promise<Record<string, unknown>> {
  const [a, b] = fleet.routers as [RunningServer, RunningServer];
  const decision = await decisionLatency(a, 2000);
  log(`decision: ${JSON.stringify(decision)}`);
  const hitOne = await prefixHitRate([a], fleet.proxies, 100_000);
  const hitTwo = await prefixHitRate([a, b], fleet.proxies, 200_000);
  log(`prefix hit rate: one router ${hitOne}, two ${hitTwo}`);
  const streams = await manyStreams(a, fleet.engines, s.streams, s.maxStreams);
  log(`streams: ${JSON.stringify(streams)}`);
  const rolling = await rollingRestart(fleet.routers, { upstreams, maxStreams: s.maxStreams, workers: 64, nodeFlags: s.routerNodeFlags, ...(s.routerCpus ? { cpus: s.routerCpus } : {}) });
  log(`rolling restart: ${JSON.stringify(rolling)}`);
  const soaked = await soak(fleet.routers[0] ?? a, s.soakSeconds, s.maxStreams + 44);
  log(`soak: growth ${String(soaked.rss_growth_last5min)}`);
  return {
    ...decision,
    ...streams,
    ...soaked,
    ...rolling,
    rss_mb: Math.max(decision.rss_mb ?? 0, ...(soaked.rss_samples_mb as number[])),
    prefix_hit_rate_one_router: hitOne,
    prefix_hit_rate_two_routers: hitTwo,
    baseline: "prefix hit rate through one router, same run",
    two_vs_one_router_hit_rate_ratio: hitTwo / hitOne,
  };
}

/**
 * The routers get the last CPU to themselves, as a router pod has its own CPU in a cluster: on
 * this 2-core machine the engines, the 100 proxies and the load client would otherwise preempt a
 * router in the middle of a decision, and its p99 would measure the bench's own load (8.8 ms at
 * load 12, 1.7 ms at load 5, against 0.045 ms for the same ranking in-process).
 */
function defaultRouterCpus(): string {
  return cpus().length >= 2 ? String(cpus().length - 1) : "";
}

/** Pins this process (and so the engines and proxies it starts) to the CPUs the routers do not use. */
function pinBench(routerCpus: string): void {
  if (!routerCpus) return;
  const others = cpus()
    .map((_, i) => i)
    .filter((i) => !routerCpus.split(",").includes(String(i)));
  execFileSync("taskset", ["-a", "-p", "-c", others.join(","), String(process.pid)], { stdio: "ignore" });
}

function settings(v: Record<string, string | undefined>): Settings {
  return {
    upstreams: Number(v.upstreams ?? 100),
    engines: Number(v.engines ?? 2),
    streams: Number(v.streams ?? 1000),
    maxStreams: Number(v["max-streams"] ?? 256),
    soakSeconds: Number(v.soak ?? 600),
    // The flags the operator gives the router pod (NODE_OPTIONS), unless the command line names others.
    routerNodeFlags: (v["router-node-flags"] ?? ROUTER_NODE_OPTIONS).split(" ").filter(Boolean),
    routerCpus: v["router-cpus"] ?? defaultRouterCpus(),
  };
}

async function main(): Promise<void> {
  const { values: v } = benchArgs({
    options: { upstreams: { type: "string" }, engines: { type: "string" }, streams: { type: "string" }, "max-streams": { type: "string" }, soak: { type: "string" }, "router-node-flags": { type: "string" }, "router-cpus": { type: "string" }, out: { type: "string" } },
  });
  const s = settings(v);
  pinBench(s.routerCpus);
  const out = resolve(v.out ?? join(ROOT, "bench/results/scale-router.json"));
  const fleet: Fleet = { engines: [], proxies: [], routers: [] };
  const startedAt = new Date().toISOString();
  try {
    const upstreams = await startFleet(fleet, s);
    const measured = await phases(fleet, upstreams, s);
    const result = {
      ...measured,
      upstreams: s.upstreams,
      engines: s.engines,
      max_streams: s.maxStreams,
      router_node_flags: s.routerNodeFlags,
      router_cpus: s.routerCpus || "any",
      machine: { cpus: cpus().length, model: cpus()[0]?.model, load_avg_at_end: loadavg(), shared: true },
      started_at: startedAt,
      finished_at: new Date().toISOString(),
    };
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
    console.log(JSON.stringify({ ...result, rss_samples_mb: undefined }, null, 2));
    console.log(`prefix hit rate, two routers vs one (baseline, same run): ${Number(measured.two_vs_one_router_hit_rate_ratio).toFixed(3)}x`);
  } finally {
    await stopFleet(fleet);
  }
}

await main();
