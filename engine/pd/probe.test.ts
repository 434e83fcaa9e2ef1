/**
 * A prefill pod's probe of a decode pod (tcp-handoff.ts probe): an answer is kept 30 s, but a probe
 * that got none (its 2 s timeout on a loaded machine) only 3 s, so that a decode pod slow to answer
 * once does not send every hand-off of the next 30 s over HTTP.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { probe } from "./tcp-handoff.ts";

test("a probe that timed out is tried again after 3 s; one that was answered is kept", async () => {
  let calls = 0;
  const server = http.createServer((_req, res) => {
    calls++;
    const answer = (): void => void res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ tcpPort: 1234, firstToken: true }));
    // The first probe waits past the prober's 2 s timeout.
    if (calls === 1) setTimeout(answer, 2_500);
    else answer();
  });
  server.listen(0, "127.0.0.1");
  await new Promise((r) => server.once("listening", r));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    assert.equal(await probe(base, {}), undefined, "no answer within 2 s");
    assert.equal(await probe(base, {}), undefined, "kept a moment");
    assert.equal(calls, 1);
    await new Promise((r) => setTimeout(r, 3_100));
    assert.equal((await probe(base, {}))?.tcpPort, 1234, "asked again after 3 s");
    assert.equal(calls, 2);
    assert.equal((await probe(base, {}))?.tcpPort, 1234);
    assert.equal(calls, 2, "an answer is kept");
  } finally {
    server.closeAllConnections();
    server.close();
  }
});
