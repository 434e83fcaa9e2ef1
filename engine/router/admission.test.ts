import { test } from "node:test";
import assert from "node:assert/strict";
import type { AddressInfo } from "node:net";
import express from "express";
import { errorHandler } from "../http/http-error.ts";
import { createEngineMetrics } from "../metrics/engine-metrics.ts";
import { admission } from "./admission.ts";
import { createRouterApp } from "./router-app.ts";

test("past --max-streams a request gets 429 with Retry-After at once, and a finished stream frees its slot", async () => {
  const releases: Array<() => void> = [];
  const admit = admission(2);
  const app = express();
  app.use("/v1/completions", admit);
  app.post("/v1/completions", (_req, res) => {
    res.status(200).set("content-type", "text/event-stream").flushHeaders();
    releases.push(() => res.end("data: [DONE]\n\n"));
  });
  app.use(errorHandler());
  const server = app.listen(0, "127.0.0.1");
  await new Promise((r) => server.once("listening", r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/completions`;
  try {
    const first = await Promise.all([fetch(url, { method: "POST" }), fetch(url, { method: "POST" })]);
    assert.deepEqual(first.map((r) => r.status), [200, 200]);
    assert.equal(admit.inFlight, 2);
    const refused = await fetch(url, { method: "POST" });
    assert.equal(refused.status, 429);
    assert.equal(refused.headers.get("retry-after"), "1");
    assert.equal(((await refused.json()) as { error: { code: string } }).error.code, "router_at_capacity");
    releases.shift()?.();
    await first[0]?.text();
    await new Promise((r) => setTimeout(r, 50));
    const again = await fetch(url, { method: "POST" });
    assert.equal(again.status, 200, "a slot freed by a finished stream is taken again");
    for (const r of releases.splice(0)) r();
    await Promise.all([first[1]?.text(), again.text()]);
  } finally {
    server.close();
  }
});

test("the router exports the streams it has admitted (llmfleet_router_streams_in_flight)", async () => {
  const releases: Array<() => void> = [];
  const upstream = express();
  upstream.post("/v1/completions", (_req, res) => {
    res.status(200).set("content-type", "text/event-stream").flushHeaders();
    releases.push(() => res.end("data: [DONE]\n\n"));
  });
  const pod = upstream.listen(0, "127.0.0.1");
  await new Promise((r) => pod.once("listening", r));
  const podUrl = `http://127.0.0.1:${(pod.address() as AddressInfo).port}`;
  const router = createRouterApp({ prefill: [], decode: [], aggregated: [podUrl], metrics: createEngineMetrics("router"), maxStreams: 4 }).listen(0, "127.0.0.1");
  await new Promise((r) => router.once("listening", r));
  const url = `http://127.0.0.1:${(router.address() as AddressInfo).port}`;
  const gauge = async (): Promise<number> => Number(/^llmfleet_router_streams_in_flight\{[^}]*\} (\S+)$/m.exec(await (await fetch(`${url}/metrics`)).text())?.[1]);
  try {
    assert.equal(await gauge(), 0);
    const streams = await Promise.all([1, 2].map(() => fetch(`${url}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: '{"model":"m","prompt":"x","stream":true}' })));
    assert.deepEqual(streams.map((r) => r.status), [200, 200]);
    assert.equal(await gauge(), 2);
    for (const r of releases.splice(0)) r();
    await Promise.all(streams.map((r) => r.text()));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(await gauge(), 0);
  } finally {
    router.close();
    pod.close();
  }
});
