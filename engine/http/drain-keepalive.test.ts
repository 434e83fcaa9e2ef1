/**
 * The drain delay under a busy keep-alive client: requests keep arriving on reused connections
 * while readiness is down and none may be lost. Closing idle connections whenever a request ended
 * during the delay raced the client's next request on the same connection ("socket hang up": 60
 * of 8,914 requests in bench:scale-router's rolling restart of two routers).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Agent, request } from "node:http";
import type { AddressInfo } from "node:net";
import { drainingServer } from "./drain.ts";

function post(port: number, agent: Agent): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, method: "POST", path: "/v1/completions", agent, headers: { "content-type": "application/json" } }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("error", reject);
    req.end('{"prompt":"x"}');
  });
}

test("requests on reused connections during the drain delay are all served", async () => {
  const d = drainingServer((_req, res) => {
    // A short answer a moment later, as a router's relay of a one-token completion.
    setTimeout(() => res.writeHead(200, { "content-type": "application/json" }).end('{"ok":true}'), 1);
  });
  await new Promise<void>((r) => d.server.listen(0, "127.0.0.1", r));
  const port = (d.server.address() as AddressInfo).port;
  const agent = new Agent({ keepAlive: true, maxSockets: 16 });
  const errors: string[] = [];
  let served = 0;
  let stop = false;
  const clients = Array.from({ length: 16 }, async () => {
    while (!stop) {
      try {
        if ((await post(port, agent)) === 200) served++;
      } catch (err) {
        errors.push((err as Error).message);
      }
    }
  });
  await new Promise((r) => setTimeout(r, 200));
  const drained = d.drain({ delayMs: 1500, timeoutMs: 2000 });
  // Clients that have not seen readiness drop keep sending for most of the delay.
  await new Promise((r) => setTimeout(r, 1200));
  stop = true;
  await Promise.all(clients);
  const result = await drained;
  agent.destroy();
  assert.ok(served > 500, `only ${served} requests were served`);
  assert.deepEqual(errors.slice(0, 5), [], `${errors.length} of ${served + errors.length} requests were lost during the drain delay`);
  assert.equal(result.cut, 0);
});
