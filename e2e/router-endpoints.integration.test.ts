// The router's --discover-endpoints against a real API server: a Service's EndpointSlices (written
// here as the EndpointSlice controller would) become the router's pods, follow the slices as pods
// come and go, and fall back to the Service URL when no pod is known. Real engine pods on the tiny
// synthetic GGUF, on loopback: EndpointSlices refuse loopback addresses, so the slices name
// 192.0.2.1 (a documentation address) and the router maps it to 127.0.0.1.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { adminClient, ensureNamespace } from "../testing/cluster.ts";
import { R } from "../lib/kube/resources.ts";
import { kubectlOk } from "../testing/kubectl.ts";
import { eventually } from "../testing/eventually.ts";
import { createEngineMetrics } from "../engine/metrics/engine-metrics.ts";
import { createRouterApp } from "../engine/router/router-app.ts";
import { RouterUpstreams } from "../engine/router/upstreams.ts";
import { discoverEndpoints, type EndpointDiscovery, type EndpointSlice } from "../engine/router/endpoint-slices.ts";
import { completionText, listen, metricValue, startPod, type Running, type RunningPod } from "../testing/engine.ts";

const NS = "it-router-endpoints";
const SERVICE_URL = `http://pool.${NS}.svc:80`;
const client = adminClient();
let pods: RunningPod[];
let router: Running;
let upstreams: RouterUpstreams;
let discovery: EndpointDiscovery;

function slice(name: string, port: number, ready: (boolean | null)[]): EndpointSlice {
  return {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: { name, namespace: NS, labels: { "kubernetes.io/service-name": "pool", "endpointslice.kubernetes.io/managed-by": "it.llmfleet.dev" } },
    addressType: "IPv4",
    ports: [{ name: "http", port }],
    endpoints: ready.map((r, i) => ({ addresses: [`192.0.2.${i + 1}`], conditions: { ready: r } })),
  };
}

const portOf = (p: RunningPod): number => Number(new URL(p.url).port);

before(async () => {
  await kubectlOk(["delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=60s"]);
  await ensureNamespace(NS);
  await kubectlOk(["create", "service", "clusterip", "pool", "-n", NS, "--tcp=80:8080"]);
  pods = [await startPod({ model: "synthetic://tiny" }), await startPod({ model: "synthetic://tiny" })];
  // 192.0.2.1 is ready on both pods' ports; 192.0.2.2 (not ready) must never be used.
  await client.create(R.EndpointSlice, slice("pool-a", portOf(pods[0]!), [true, false]), "it");
  await client.create(R.EndpointSlice, slice("pool-b", portOf(pods[1]!), [null]), "it");
  const lists = { prefill: [], decode: [], aggregated: [SERVICE_URL] };
  upstreams = new RouterUpstreams(lists, "round-robin");
  discovery = discoverEndpoints(client, lists, upstreams, { mapUrl: (u) => u.replace("//192.0.2.1:", "//127.0.0.1:") });
  router = await listen(createRouterApp({ ...lists, policy: "round-robin", upstreams, metrics: createEngineMetrics("router") }));
});

after(async () => {
  discovery?.[Symbol.dispose]();
  for (const r of [router, ...(pods ?? [])]) await r?.[Symbol.asyncDispose]();
  await kubectlOk(["delete", "namespace", NS, "--ignore-not-found", "--wait=false"]);
});

test("the Service's ready endpoints become the router's pods, and requests reach each pod", async () => {
  await discovery.synced;
  assert.deepEqual(Object.keys(upstreams.snapshot().aggregated).sort(), pods.map((p) => p.url).sort());
  for (let i = 0; i < 4; i++) await completionText(router.url, { prompt: `hello ${i}`, max_tokens: 2 });
  for (const p of pods) assert.equal(await metricValue(p.url, "llmfleet_generated_tokens_total"), 4, `${p.url} served its share`);
});

test("a slice that goes away takes its pod out; with no pod left the Service URL serves again", async () => {
  await client.delete(R.EndpointSlice, NS, "pool-b");
  await eventually(() => assert.deepEqual(Object.keys(upstreams.snapshot().aggregated), [pods[0]!.url]), { timeoutMs: 10_000 });
  await client.delete(R.EndpointSlice, NS, "pool-a");
  await eventually(() => assert.deepEqual(Object.keys(upstreams.snapshot().aggregated), [SERVICE_URL]), { timeoutMs: 10_000 });
  await client.create(R.EndpointSlice, slice("pool-c", portOf(pods[1]!), [true]), "it");
  await eventually(() => assert.deepEqual(Object.keys(upstreams.snapshot().aggregated), [pods[1]!.url]), { timeoutMs: 10_000 });
});
