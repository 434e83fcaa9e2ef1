/**
 * A decode pool of two pods behind one address, as a Kubernetes Service (or a mesh, which balances
 * HTTP per request) puts them: a proxy that sends each request to the next pod in turn. The KV
 * hand-off and the generate call are two requests, so they land on different pods unless the
 * generate call goes to the pod that staged the state — which the decode pod names in its answer
 * to the hand-off (x-llmfleet-decode-url). kube-proxy balances per connection instead: the last
 * test puts the decode pods behind such a balancer, where the prefill pod's hand-offs spread over
 * the pods only because each opens its own connection.
 * These tests pin the prefill pod to the HTTP hand-off (--kv-transport http), whose Service
 * semantics they are about; the last one does the same for the native TCP hand-off, through a
 * Service that exposes the decode pods' kv port and balances it per connection.
 * Real llama.cpp on the tiny synthetic GGUF.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createServer, request, type Server } from "node:http";
import { connect, createServer as createTcpServer, type AddressInfo } from "node:net";
import { createEngineMetrics } from "../metrics/engine-metrics.ts";
import { createRouterApp } from "../router/router-app.ts";
import { completionText, listen, metricValue, postJson, startPod, type Running, type RunningPod } from "../../testing/engine.ts";
import { DECODE_URL_HEADER } from "./handoff-routes.ts";
import { createModelPod, type ModelPod } from "../pod.ts";

const MODEL = "synthetic://tiny";
let aggregated: RunningPod;
let prefill: RunningPod;
let decodes: RunningPod[];
let service: { url: string; server: Server; requests: number[] };
let router: Running;

/** A round-robin HTTP proxy over `targets` (host:port), one request per pod in turn. */
async function roundRobinService(targets: string[]): Promise<typeof service> {
  const requests = targets.map(() => 0);
  let next = 0;
  const server = createServer((req, res) => {
    const i = next++ % targets.length;
    requests[i]!++;
    const [host, port] = targets[i]!.split(":");
    const upstream = request({ host, port: Number(port), method: req.method, path: req.url, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    upstream.on("error", (err) => res.destroy(err));
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server, requests };
}

before(async () => {
  aggregated = await startPod({ model: MODEL, parallel: 2 });
  decodes = [await startPod({ model: MODEL, role: "decode", parallel: 2 }), await startPod({ model: MODEL, role: "decode", parallel: 2 })];
  service = await roundRobinService(decodes.map((d) => new URL(d.url).host));
  prefill = await startPod({ model: MODEL, role: "prefill", parallel: 1, kvTransport: "http" });
  router = await listen(createRouterApp({ prefill: [prefill.url], decode: [service.url], metrics: createEngineMetrics("router") }));
});
after(async () => {
  for (const r of [router, prefill, ...(decodes ?? []), aggregated]) await r?.[Symbol.asyncDispose]();
  service?.server.closeAllConnections();
  service?.server.close();
});

test("requests through a two-pod decode Service all succeed: generate goes to the pod that staged the KV state", async () => {
  const prompts = ["hello world", "the capital of France is", "a b c d e f g", "one two three four", "red green blue", "x y z"];
  for (const prompt of prompts) {
    const body = { prompt, max_tokens: 12 };
    assert.equal(await completionText(router.url, body), await completionText(aggregated.url, body), prompt);
  }
  // Every hand-off went through the Service, to both pods in turn; the generate calls went to the
  // staging pod directly (through the Service, each would have reached the other pod: handoff_not_found).
  // Plus one probe of what the decode Service takes (GET /internal/kv-transport, cached), on the first pod.
  assert.deepEqual(service.requests, [prompts.length / 2 + 1, prompts.length / 2]);
  let generated = 0;
  for (const d of decodes) generated += await metricValue(d.url, "llmfleet_generated_tokens_total");
  assert.equal(generated, prompts.length * 12);
});

test("the decode pod names itself in its hand-off answer, and the prefill pod reports it", async () => {
  const { status, json } = await postJson(`${prefill.url}/internal/prefill`, { request: { prompt: "hello world", max_tokens: 2 }, kind: "completion", decodeUrl: service.url });
  assert.equal(status, 200);
  assert.ok(
    decodes.some((d) => d.url === json.decodeUrl),
    `prefill reported ${String(json.decodeUrl)}, not one of the pods (${decodes.map((d) => d.url).join(", ")}) behind ${service.url}`,
  );
  // The staged state is there, on that pod, for the generate call.
  assert.equal(typeof json.firstToken, "number", "a greedy request's first token is sampled on the prefill pod");
  const call = { request: { prompt: "hello world", max_tokens: 2, temperature: 0 }, kind: "completion" };
  const gen = await postJson(`${String(json.decodeUrl)}/internal/generate/${String(json.handoffId)}`, { ...call, firstToken: json.firstToken });
  assert.equal(gen.status, 200, JSON.stringify(gen.json));
  // A generate call that leaves the first token out is refused with the reason.
  const again = await postJson(`${prefill.url}/internal/prefill`, { request: call.request, kind: "completion", decodeUrl: service.url });
  const without = await postJson(`${String(again.json.decodeUrl)}/internal/generate/${String(again.json.handoffId)}`, call);
  assert.equal(without.status, 409, "a state of the whole prompt needs the first token that goes with it");
  assert.match(JSON.stringify(without.json), /firstToken/);
  assert.equal(DECODE_URL_HEADER, "x-llmfleet-decode-url");
});

test("a decode pod that names an address the router cannot reach (NAT, port mapping) still serves: generate falls back to the hand-off's URL", async () => {
  const natted = await startPod({ model: MODEL, role: "decode", parallel: 1, advertiseUrl: "http://127.0.0.1:9" });
  const viaNat = await listen(createRouterApp({ prefill: [prefill.url], decode: [natted.url], metrics: createEngineMetrics("router") }));
  try {
    const body = { prompt: "hello world", max_tokens: 8 };
    assert.equal(await completionText(viaNat.url, body), await completionText(aggregated.url, body));
  } finally {
    await viaNat[Symbol.asyncDispose]();
    await natted[Symbol.asyncDispose]();
  }
});

/** A TCP balancer over `targets` (host:port) that picks the next pod per connection, as kube-proxy does. */
async function perConnectionService(targets: string[], port = 0): Promise<{ url: string; connections: number[]; close(): void }> {
  const connections = targets.map(() => 0);
  let next = 0;
  const sockets = new Set<import("node:net").Socket>();
  const server = createTcpServer((client) => {
    const i = next++ % targets.length;
    connections[i]!++;
    const [host, port] = targets[i]!.split(":");
    const upstream = connect(Number(port), host!);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => s.destroy());
      s.on("close", () => sockets.delete(s));
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  const close = (): void => {
    for (const s of sockets) s.destroy();
    server.close();
  };
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, connections, close };
}

test("behind a per-connection balancer (kube-proxy) one prefill pod's hand-offs spread over the decode pods", async () => {
  const tcp = await perConnectionService(decodes.map((d) => new URL(d.url).host));
  try {
    const staged: string[] = [];
    for (let i = 0; i < 6; i++) {
      const { status, json } = await postJson(`${prefill.url}/internal/prefill`, {
        request: { prompt: `hand-off ${i}`, max_tokens: 2 },
        kind: "completion",
        decodeUrl: tcp.url,
      });
      assert.equal(status, 200, JSON.stringify(json));
      staged.push(String(json.decodeUrl));
    }
    // Each hand-off opens its own connection, so the balancer spreads them; with a kept-alive
    // connection every hand-off of this prefill pod would reach the same decode pod.
    assert.deepEqual(tcp.connections, [3, 3]);
    for (const d of decodes) assert.equal(staged.filter((u) => u === d.url).length, 3, `hand-offs staged on ${d.url}: ${staged.join(", ")}`);
  } finally {
    tcp.close();
  }
});

async function freePort(host: string): Promise<number> {
  const s = createTcpServer();
  await new Promise<void>((resolve) => s.listen(0, host, resolve));
  const { port } = s.address() as AddressInfo;
  await new Promise((resolve) => s.close(resolve));
  return port;
}

test("TCP hand-offs through a Service exposing the kv port spread over the decode pods, and generate reaches the pod that staged each", async () => {
  // Two decode pods as Kubernetes runs them: each its own address, the same HTTP and kv ports.
  const kvPort = await freePort("127.0.0.1");
  const pods: { pod: ModelPod; server: Server; url: string }[] = [];
  let kvService: Awaited<ReturnType<typeof perConnectionService>> | undefined;
  let httpService: typeof service | undefined;
  let tcpPrefill: RunningPod | undefined;
  let tcpRouter: Running | undefined;
  try {
    for (const host of ["127.0.0.2", "127.0.0.3"]) {
      const port = await freePort(host);
      const pod = await createModelPod({ model: MODEL, role: "decode", threads: 1, ctxSize: 512, parallel: 2, maxQueue: 8, host, port, kvPort });
      const server = await new Promise<Server>((resolve) => {
        const s = pod.app.listen(port, host, () => resolve(s));
      });
      pods.push({ pod, server, url: `http://${host}:${port}` });
    }
    httpService = await roundRobinService(pods.map((p) => new URL(p.url).host));
    kvService = await perConnectionService(
      pods.map((p) => `${new URL(p.url).hostname}:${kvPort}`),
      kvPort,
    );
    tcpPrefill = await startPod({ model: MODEL, role: "prefill", parallel: 1, kvTransport: "tcp" });
    tcpRouter = await listen(createRouterApp({ prefill: [tcpPrefill.url], decode: [httpService.url], metrics: createEngineMetrics("router") }));
    const prompts = ["hello world", "the capital of France is", "a b c d e f g", "one two three four"];
    for (const prompt of prompts) {
      const body = { prompt, max_tokens: 8 };
      assert.equal(await completionText(tcpRouter.url, body), await completionText(aggregated.url, body), prompt);
    }
    assert.deepEqual(kvService.connections, [2, 2], "each hand-off its own connection, balanced over the pods");
    for (const p of pods) assert.equal(await metricValue(p.url, "llmfleet_generated_tokens_total"), 2 * 8, `tokens generated on ${p.url}`);
  } finally {
    await tcpRouter?.[Symbol.asyncDispose]();
    await tcpPrefill?.[Symbol.asyncDispose]();
    kvService?.close();
    httpService?.server.closeAllConnections();
    httpService?.server.close();
    for (const p of pods) {
      p.server.closeAllConnections();
      await new Promise((resolve) => p.server.close(resolve));
      await p.pod[Symbol.asyncDispose]();
    }
  }
});
