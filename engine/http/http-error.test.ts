/**
 * The error handler's log of server errors (http-error.ts): a 5xx answer is written to stderr
 * with its method, path and message, at most five lines a second, the next line counting those
 * left out; a 4xx answer is the client's and is not logged.
 */
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import type { AddressInfo } from "node:net";
import express from "express";
import { errorHandler, HttpError } from "./http-error.ts";

async function withApp(t: TestContext, fn: (url: string, lines: string[]) => Promise<void>): Promise<void> {
  const lines: string[] = [];
  t.mock.method(console, "error", (line: string) => void lines.push(line));
  const app = express();
  app.get("/boom/:n", (req) => {
    throw new HttpError(502, `upstream ${req.params.n} gone`);
  });
  app.get("/bad", () => {
    throw new HttpError(400, "bad input");
  });
  app.use(errorHandler());
  const server = app.listen(0, "127.0.0.1");
  await new Promise((r) => server.once("listening", r));
  try {
    await fn(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, lines);
  } finally {
    server.close();
  }
}

test("a server error is logged with its method, path and message; a client error is not", (t) =>
  withApp(t, async (url, lines) => {
    assert.equal((await fetch(`${url}/bad`)).status, 400);
    assert.deepEqual(lines, []);
    const res = await fetch(`${url}/boom/1`);
    assert.equal(res.status, 502);
    assert.deepEqual(lines, ["engine: GET /boom/1 answered 502: upstream 1 gone"]);
  }));

test("a burst of server errors logs five lines a second, and the next line says how many were left out", (t) =>
  withApp(t, async (url, lines) => {
    // Wait for a fresh one-second window, so that all twelve land in one.
    await new Promise((r) => setTimeout(r, 1_050));
    for (let i = 0; i < 12; i++) assert.equal((await fetch(`${url}/boom/${i}`)).status, 502);
    const logged = lines.length;
    assert.ok(logged >= 5 && logged < 12, lines.join("\n")); // five (ten if a second began mid-burst)
    await new Promise((r) => setTimeout(r, 1_050));
    await fetch(`${url}/boom/last`);
    assert.match(lines.at(-1) ?? "", /^engine: GET \/boom\/last answered 502: upstream last gone \(\d+ more server errors not logged\)$/);
    const counted = lines.reduce((n, l) => n + Number(/\((\d+) more/.exec(l)?.[1] ?? 0), 0);
    assert.equal(logged + counted, 12, "every error of the burst is logged or counted");
  }));
