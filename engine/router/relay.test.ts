// A relayed stream's connection header is the server's: keep-alive with its Keep-Alive timeout while
// serving, close once the server drains (so a client does not reuse a connection the drain closes).
import { test } from "node:test";
import assert from "node:assert/strict";
import { request } from "node:http";
import type { AddressInfo } from "node:net";
import express from "express";
import { drainingServer } from "../http/drain.ts";
import { createEngineMetrics } from "../metrics/engine-metrics.ts";
import { relayStream } from "./relay.ts";

function upstream(): Response {
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(new TextEncoder().encode('data: {"choices":[{"text":"hi"}]}\n\ndata: [DONE]\n\n'));
      c.close();
    },
  });
  return new Response(body, { headers: { "content-type": "text/event-stream" } });
}

function headersOf(port: number): Promise<Record<string, string | string[] | undefined>> {
  return new Promise((resolve, reject) => {
    const req = request({ port, host: "127.0.0.1", path: "/stream", method: "POST" }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.headers));
    });
    req.on("error", reject);
    req.end();
  });
}

test("a relayed stream says keep-alive with the server's timeout, and close while the server drains", async () => {
  const metrics = createEngineMetrics("router");
  const app = express();
  app.post("/stream", (_req, res) => void relayStream(upstream(), res, metrics, performance.now()));
  const s = drainingServer(app);
  await new Promise<void>((r) => s.server.listen(0, "127.0.0.1", r));
  const port = (s.server.address() as AddressInfo).port;
  try {
    const serving = await headersOf(port);
    assert.equal(serving.connection, "keep-alive");
    assert.match(String(serving["keep-alive"]), /^timeout=\d+/);
    const drained = s.drain({ delayMs: 1000, timeoutMs: 5000 });
    const draining = await headersOf(port);
    assert.equal(draining.connection, "close", "a response started while draining must not invite another request on its connection");
    await drained;
  } finally {
    s.server.close();
  }
});
