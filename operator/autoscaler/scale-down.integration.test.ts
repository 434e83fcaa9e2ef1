// Scale-down on the real control plane (kube-apiserver, kube-controller-manager, kwok) with load
// running through it: three pods of a prefill pool, each backed by a server with the engine's
// graceful drain (engine/http/drain.ts) that holds requests for a while and exports
// llmfleet_running_sequences on /metrics. The two older pods are one idle and one busy, the newest
// busy: left to itself the ReplicaSet would remove the newest. The autoscaler scales 3 → 2 and,
// before it does, sets each pod's controller.kubernetes.io/pod-deletion-cost to its requests in
// flight, so the ReplicaSet removes the idle pod; the deleted pod's server then drains as its
// engine would on SIGTERM, and every request of the load completes.
// What kwok cannot show: kwok pods run no container, so no kubelet sends SIGTERM and nothing
// enforces terminationGracePeriodSeconds; the test starts the drain itself when the pod gets its
// deletionTimestamp, and checks the grace period the planner set covers the drain.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import type { IncomingMessage, ServerResponse } from "node:http";
import { request } from "node:http";
import type { AddressInfo } from "node:net";
import type { V1Pod } from "@kubernetes/client-node";
import { drainingServer, type DrainingServer } from "../../engine/http/drain.ts";
import { createKwokGpuNode } from "../../scripts/cluster/kwok-nodes.ts";
import { adminClient, ensureNamespace, installCRDs, jsonOf } from "../../testing/cluster.ts";
import { eventually } from "../../testing/eventually.ts";
import { kubectlOk } from "../../testing/kubectl.ts";
import { TEST_MODEL_YAML } from "../../testing/manifests.ts";
import { buildCaches } from "../reconcilers/caches.ts";
import { registerReconcilers } from "../reconcilers/reconcilers.ts";
import { Manager } from "../runtime/manager.ts";
import { createOperatorMetrics } from "../runtime/metrics.ts";
import { registerAutoscaler, type Autoscaler } from "./controller.ts";
import { DELETION_COST_ANNOTATION } from "./deletion-cost.ts";

const NS = "it-scale-down";
const NODE = "it-scale-down-cpu-0";
const HOLD_MS = 1500;

/** One pod's engine stand-in: requests to /work are held HOLD_MS; /metrics reports those in flight. */
class Backend {
  running = 0;
  served = 0;
  readonly server: DrainingServer;

  constructor() {
    this.server = drainingServer((req, res) => this.handle(req, res));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    if (req.url === "/metrics") {
      res.end(`llmfleet_running_sequences ${this.running}\nllmfleet_queue_depth 0\nllmfleet_prompt_tokens_total ${this.served * 100}\n`);
      return;
    }
    this.running++;
    setTimeout(() => {
      this.running--;
      this.served++;
      res.end("ok");
    }, HOLD_MS);
  }

  async listen(): Promise<void> {
    await new Promise<void>((r) => this.server.server.listen(0, "127.0.0.1", r));
  }

  url(path: string): string {
    return `http://127.0.0.1:${(this.server.server.address() as AddressInfo).port}${path}`;
  }
}

const backends = [new Backend(), new Backend(), new Backend()];
/** Pod name → its backend, assigned as the pods appear (oldest first). */
const byPod = new Map<string, Backend>();
let manager: Manager;
let caches: ReturnType<typeof buildCaches>;
let autoscaler: Autoscaler | undefined;
const logs: string[] = [];

const manifests = `
${TEST_MODEL_YAML}
---
apiVersion: serving.llmfleet.dev/v1alpha1
kind: PrefillPool
metadata: {name: p}
spec: {modelRef: {name: m}, gpusPerReplica: 0, replicas: {min: 2, max: 3, desired: 2}, autoscaling: {mode: slo, scaleDownStabilization: 3s}}
`;

function get(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: "POST", agent: false }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("error", reject);
    req.end();
  });
}

/** The pool's pods (by its status.selector: the Model's router runs in the namespace too). */
async function poolPods(): Promise<V1Pod[]> {
  const pool = await jsonOf<{ status?: { selector?: string } }>(["get", "-n", NS, "prefillpool", "p", "-o", "json"]);
  assert.ok(pool.status?.selector, "the pool publishes its selector");
  return (await jsonOf<{ items: V1Pod[] }>(["get", "pods", "-n", NS, "-l", pool.status.selector, "-o", "json"])).items;
}

async function runningPods(): Promise<V1Pod[]> {
  const list = { items: await poolPods() };
  return list.items
    .filter((p) => p.status?.phase === "Running")
    .sort((a, b) => String(a.metadata?.creationTimestamp).localeCompare(String(b.metadata?.creationTimestamp)));
}

async function assignPods(count: number): Promise<V1Pod[]> {
  return eventually(
    async () => {
      const pods = await runningPods();
      assert.equal(pods.length, count, `${count} running pods`);
      for (const p of pods) if (!byPod.has(p.metadata?.name ?? "")) byPod.set(p.metadata?.name ?? "", backends[byPod.size] as Backend);
      return pods;
    },
    { timeoutMs: 60_000, message: `${count} pods running` },
  );
}

before(async () => {
  await installCRDs();
  await kubectlOk(["delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=60s"]);
  await kubectlOk(["delete", "node", NODE, "--ignore-not-found"]);
  await ensureNamespace(NS);
  await createKwokGpuNode(process.env.KUBECONFIG ?? "", NODE, { gpus: 0 });
  for (const b of backends) await b.listen();
  manager = new Manager(adminClient(), createOperatorMetrics(), "it-scale-down");
  manager.log = (msg) => logs.push(msg);
  caches = buildCaches(manager, NS);
  registerReconcilers(manager, caches, { engineImage: "llmfleet/engine:0.1.0", engineGPUImage: "llmfleet/engine:0.1.0-cuda" });
  await manager.startInformers();
  void manager.runWorkers(2);
  await kubectlOk(["apply", "-n", NS, "-f", "-"], { stdin: manifests });
});

after(async () => {
  autoscaler?.stop();
  manager.stop();
  for (const b of backends) b.server.server.close();
  await kubectlOk(["delete", "node", NODE, "--ignore-not-found"]);
});

/** Sends requests back to back to `backend` until `stop` says so; resolves with their status codes. */
async function load(backend: Backend, stop: () => boolean): Promise<number[]> {
  const codes: number[] = [];
  while (!stop()) codes.push(await get(backend.url("/work")));
  return codes;
}

test("a scale-down removes the idlest pod (by its deletion cost), and no request of the load is lost", async () => {
  let stopped = false;
  try {
    await assignPods(2);
    await kubectlOk(["patch", "-n", NS, "prefillpool", "p", "--type=merge", "-p", '{"spec":{"replicas":{"desired":3}}}']);
    const pods = await assignPods(3);
    // By the backend each pod was given, not by creation time: the first two pods can share a
    // creationTimestamp (one-second resolution), and then their sorted order is arbitrary (seen in CI).
    const podOf = (b: Backend | undefined): string => [...byPod].find(([, v]) => v === b)?.[0] ?? "";
    const [idle, busyOld, newest] = [podOf(backends[0]), podOf(backends[1]), podOf(backends[2])];
    // Load on the older busy pod and the newest, two request loops each, the second half a hold
    // later: one loop alone leaves its pod with nothing in flight between a response and its next
    // request, and a deletion-cost scrape that fell in that gap read the busy pod as idle (a tie
    // the ReplicaSet broke against the test once in CI).
    const staggered = async (b: Backend): Promise<number[]> => {
      await new Promise((r) => setTimeout(r, HOLD_MS / 2));
      return load(b, () => stopped);
    };
    const loads = [backends[1], backends[2]].flatMap((b) => [load(b as Backend, () => stopped), staggered(b as Backend)]);
    await eventually(() => assert.ok((backends[1] as Backend).running >= 2 && (backends[2] as Backend).running >= 2, "both loops of each busy pod in flight"), { timeoutMs: 10_000, message: "load running" });
    autoscaler = registerAutoscaler(manager, caches, {
      intervalSeconds: 1,
      targets: async () => backends.map((b) => b.url("/metrics")),
      podMetricsUrl: (pod) => byPod.get(pod.metadata?.name ?? "")?.url("/metrics"),
      modelLoadSeconds: 1,
    });
    const gone = await eventually(
      async () => {
        const names = pods.map((p) => p.metadata?.name ?? "");
        const now = { items: await poolPods() };
        const leaving = names.filter((n) => !now.items.some((p) => p.metadata?.name === n && !p.metadata?.deletionTimestamp));
        assert.equal(leaving.length, 1, `one pod leaving: ${leaving.join(", ")}`);
        return leaving[0] ?? "";
      },
      { timeoutMs: 60_000, message: "a pod removed by the scale-down" },
    );
    assert.equal(gone, idle, `the idle pod went, not ${gone} (the busy old pod is ${busyOld}, the newest ${newest})`);
    // As the engine does on SIGTERM: readiness drops, then it waits for what is in flight.
    const drained = await (byPod.get(gone) as Backend).server.drain({ delayMs: 200, timeoutMs: 10_000 });
    assert.equal(drained.cut, 0);
    stopped = true;
    const codes = (await Promise.all(loads)).flat();
    assert.ok(codes.length >= 4, `load ran through the scale-down: ${codes.length} requests`);
    assert.deepEqual([...new Set(codes)], [200], "every request of the load succeeded");
    await assertCostsAndGrace(busyOld ?? "", newest ?? "");
  } catch (err) {
    console.error(`--- manager log ---\n${logs.join("\n")}`);
    throw err;
  } finally {
    stopped = true;
    autoscaler?.stop();
  }
});

async function assertCostsAndGrace(busyOld: string, newest: string): Promise<void> {
  const left = { items: await poolPods() };
  const alive = left.items.filter((p) => !p.metadata?.deletionTimestamp);
  assert.deepEqual(alive.map((p) => p.metadata?.name).sort(), [busyOld, newest].sort());
  for (const p of alive) {
    const cost = Number(p.metadata?.annotations?.[DELETION_COST_ANNOTATION]);
    assert.ok(cost >= 1 && cost <= 2, `${p.metadata?.name} costs its requests in flight (1 or 2), not ${cost}`);
    // The planner's grace period covers the engine's drain (delay + timeout + 5 s).
    assert.ok((p.spec?.terminationGracePeriodSeconds ?? 0) > 30, `grace period ${p.spec?.terminationGracePeriodSeconds}`);
  }
}

