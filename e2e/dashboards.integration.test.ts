// Every query of the Grafana autoscaling view returns data from a real Prometheus scraping a
// running fleet: the operator (pool and node-group gauges) on the real control plane, and real
// engine processes (router, prefill, decode with the real model) serving traffic.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { eventually } from "../testing/eventually.ts";
import { kubectlOk } from "../testing/kubectl.ts";
import { startPrometheus, type Prometheus } from "./harness/prometheus.ts";
import { createKwokGpuNode } from "../scripts/cluster/kwok-nodes.ts";
import { AUTOSCALING_DASHBOARD } from "../operator/dashboards/autoscaling.ts";
import { readFleet } from "../operator/local/manifests.ts";
import { planLocalFleet, processSpecs } from "../operator/local/fleet.ts";
import { startEngine, stopEngines, waitHealthy, type RunningEngine } from "../operator/local/processes.ts";
import { installCRDs, ensureNamespace } from "../testing/cluster.ts";
import { startOperator, type OperatorProcess } from "../testing/operator-process.ts";

const NS = "it-dashboards";
let operator: OperatorProcess;
let engines: RunningEngine[] = [];
let prometheus: Prometheus;

async function startFleet(): Promise<RunningEngine[]> {
  const base = 19_000 + Math.floor(Math.random() * 500) * 4;
  const specs = processSpecs(planLocalFleet(readFleet("examples/quickstart.yaml")), { routerPort: base, basePort: base + 1, threads: 1 });
  const logs: string[] = [];
  const started = specs.map((s) => startEngine(s, (line) => void logs.push(line)));
  try {
    await Promise.all(started.map((e) => waitHealthy(e, 180_000)));
  } catch (err) {
    // Stopped here: `after` only knows the fleet once it started, and a live child keeps the run from ending.
    await stopEngines(started);
    throw new Error(`${(err as Error).message}; the fleet's last log lines:\n${logs.slice(-40).join("\n")}`, { cause: err });
  }
  return started;
}

/** The same long prompt twice: the first prefill writes its KV blocks to the store, the second loads them. */
const LONG = `Here is a long shared context for the store. ${"The quick brown fox jumps over the lazy dog. ".repeat(40)}Question:`;

async function traffic(router: string): Promise<void> {
  for (const [stream, prompt] of [
    [true, "The capital of France is the city of"],
    [false, LONG],
    [true, LONG],
  ] as const) {
    const res = await fetch(`${router}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "default", prompt, max_tokens: 8, temperature: 0, stream }),
    });
    await res.text();
    assert.equal(res.status, 200);
    // KV blocks are written back after the response; give the store a moment before the repeat.
    await new Promise((r) => setTimeout(r, 1500));
  }
}

before(async () => {
  await installCRDs();
  await kubectlOk(["delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=60s"]);
  await ensureNamespace(NS);
  await ensureNamespace("llmfleet-system");
  await kubectlOk(["delete", "node", "dash-gpu-0", "--ignore-not-found"]);
  await createKwokGpuNode(process.env.KUBECONFIG ?? "", "dash-gpu-0", {
    gpus: 8,
    labels: { "serving.llmfleet.dev/node-group": "h100" },
    taints: [{ key: "llmfleet.dev/gpu", value: "true", effect: "NoSchedule" }],
  });
  operator = startOperator({ id: "it-dashboards", args: ["--namespace", NS, "--leader-elect", "false", "--autoscale-interval", "2"] });
  await kubectlOk(["apply", "-n", NS, "-f", "examples/quickstart.yaml"]);
  engines = await startFleet();
  const port = await eventually(() => {
    const m = /health on [\d.]+:(\d+)/.exec(operator.logs());
    assert.ok(m?.[1]);
    return m[1];
  });
  prometheus = await startPrometheus({ operator: [`127.0.0.1:${port}`], engines: engines.map((e) => e.url.replace("http://", "")) });
  const router = engines.find((e) => e.spec.args.includes("router"));
  await traffic(router?.url ?? "");
});

after(async () => {
  await stopEngines(engines);
  await prometheus?.[Symbol.asyncDispose]();
  await operator?.stop();
});

const queries = AUTOSCALING_DASHBOARD.rows.flatMap((row) => row.panels.flatMap((panel) => panel.queries.map((q) => ({ panel: panel.title, ...q }))));

test("the dashboard has panels for every part of the autoscaling view", () => {
  const titles = queries.map((q) => q.panel).join("\n");
  for (const must of [
    /desired vs ready/,
    /TTFT p90 vs SLO/,
    /Inter-token latency/,
    /Queue depth/,
    /Autoscaler decisions/,
    /Nodes/,
    /GPUs/,
    /KV store: hit rate/,
    /per tier/,
    /Prefix reuse/,
    /hand-off/,
    /per tenant/,
  ])
    assert.match(titles, must);
});

for (const q of queries) {
  test(`panel "${q.panel}": ${q.legend} returns data`, async () => {
    await eventually(async () => assert.ok((await prometheus.query(q.expr)).length > 0, `no data for ${q.expr}`), { timeoutMs: 60_000, intervalMs: 1000 });
  });
}
