import { test } from "node:test";
import assert from "node:assert/strict";
import type { AddressInfo } from "node:net";
import express from "express";
import { errorHandler } from "../http/http-error.ts";
import { admission } from "./admission.ts";

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
