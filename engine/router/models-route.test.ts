/**
 * The model's names through the router (P/D: router + prefill + decode on a tiny synthetic GGUF):
 * the Model resource's name (--served-model-name) is listed first and answers completions end to
 * end, GET /v1/models/{model} is answered from the pod's list (no id becomes a path on a pod), and
 * another method on an API route is a 405 at the router.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { request } from "node:http";
import { createEngineMetrics } from "../metrics/engine-metrics.ts";
import { createRouterApp } from "./router-app.ts";
import { listen, postJson, startPod, type Running, type RunningPod } from "../../testing/engine.ts";

const NAME = "team/chat-1";

/** A GET whose path goes on the wire as written (node:http resolves no dot segments). */
function rawGet(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url.replace(/%2E%2E/g, "DOTS"));
    const req = request({ host: u.hostname, port: u.port, path: u.pathname.replace("DOTS", "%2E%2E") }, (res) => {
      let body = "";
      res.on("data", (d: Buffer) => (body += d.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end();
  });
}
let prefill: RunningPod;
let decode: RunningPod;
let router: Running;

before(async () => {
  decode = await startPod({ model: "synthetic://tiny", role: "decode", parallel: 2, servedModelName: NAME });
  prefill = await startPod({ model: "synthetic://tiny", role: "prefill", parallel: 1, servedModelName: NAME });
  router = await listen(createRouterApp({ prefill: [prefill.url], decode: [decode.url], metrics: createEngineMetrics("router") }));
});
after(async () => {
  await router[Symbol.asyncDispose]();
  await prefill[Symbol.asyncDispose]();
  await decode[Symbol.asyncDispose]();
});

test("the served name is listed first, answers a P/D completion, and is one path segment on the pod", async () => {
  const list = (await (await fetch(`${router.url}/v1/models`)).json()) as { data: { id: string }[] };
  assert.equal(list.data[0]?.id, NAME);
  const r = await postJson(`${router.url}/v1/completions`, { model: NAME, prompt: "hello there", max_tokens: 3, temperature: 0 });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  assert.equal(r.json.model, NAME);
  const one = await fetch(`${router.url}/v1/models/${encodeURIComponent(NAME)}`);
  assert.equal(one.status, 200);
  assert.equal(((await one.json()) as { id: string }).id, NAME);
  // ".." (sent raw: fetch would resolve it away) is an unknown model, never a path out of /v1/models.
  const dots = await rawGet(`${router.url}/v1/models/%2E%2E`);
  assert.equal(dots.status, 404);
  assert.match(dots.body, /The model '\.\.' does not exist; this fleet serves 'team\/chat-1'/);
});

test("another method on an API route is a 405 at the router, before admission or body parsing", async () => {
  const get = await fetch(`${router.url}/v1/chat/completions`);
  assert.equal(get.status, 405);
  assert.equal(get.headers.get("allow"), "POST");
  const body = (await get.json()) as { error: { code: string; type: string } };
  assert.equal(body.error.code, "method_not_allowed");
});
