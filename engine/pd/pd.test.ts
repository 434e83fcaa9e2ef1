/**
 * Standalone P/D: router + prefill + decode on a tiny synthetic GGUF (real llama.cpp).
 * The prefill pod has 1 sequence and flash attention on; the decode pod has 3 sequences and
 * flash attention off, so the KV state must be normalised in transit (stream count, V layout).
 * Every hand-off mechanism (kv-transport.ts) gives the aggregated greedy output: the native TCP
 * stream (the default where the decode pod offers it), HTTP by choice, and HTTP as the fallback
 * from a decode pod that offers no TCP port.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createEngineMetrics } from "../metrics/engine-metrics.ts";
import { createRouterApp } from "../router/router-app.ts";
import { completionText, listen, postJson, sseEvents, startPod, type Running, type RunningPod } from "../../testing/engine.ts";

const MODEL = "synthetic://tiny";
let aggregated: RunningPod;
let prefill: RunningPod;
let decode: RunningPod;
let router: Running;
let brokenRouter: Running;
let httpPrefill: RunningPod;
let httpRouter: Running;
let httpOnlyDecode: RunningPod;
let fallbackRouter: Running;
let tcpOnlyPrefill: RunningPod;
let tcpOnlyRouter: Running;

before(async () => {
  aggregated = await startPod({ model: MODEL, parallel: 2 });
  decode = await startPod({ model: MODEL, role: "decode", parallel: 3 });
  prefill = await startPod({ model: MODEL, role: "prefill", parallel: 1, flashAttention: true });
  router = await listen(createRouterApp({ prefill: [prefill.url], decode: [decode.url], metrics: createEngineMetrics("router") }));
  // a decode pod that is gone: nothing listens on port 9 of loopback
  brokenRouter = await listen(createRouterApp({ prefill: [prefill.url], decode: ["http://127.0.0.1:9"], metrics: createEngineMetrics("router") }));
  httpPrefill = await startPod({ model: MODEL, role: "prefill", parallel: 1, flashAttention: true, kvTransport: "http" });
  httpRouter = await listen(createRouterApp({ prefill: [httpPrefill.url], decode: [decode.url], metrics: createEngineMetrics("router") }));
  httpOnlyDecode = await startPod({ model: MODEL, role: "decode", parallel: 2, kvTransport: "http" });
  fallbackRouter = await listen(createRouterApp({ prefill: [prefill.url], decode: [httpOnlyDecode.url], metrics: createEngineMetrics("router") }));
  tcpOnlyPrefill = await startPod({ model: MODEL, role: "prefill", parallel: 1, kvTransport: "tcp" });
  tcpOnlyRouter = await listen(createRouterApp({ prefill: [tcpOnlyPrefill.url], decode: [httpOnlyDecode.url], metrics: createEngineMetrics("router") }));
});
after(async () => {
  for (const r of [tcpOnlyRouter, tcpOnlyPrefill, fallbackRouter, httpOnlyDecode, httpRouter, httpPrefill, brokenRouter, router, prefill, decode, aggregated])
    await r?.[Symbol.asyncDispose]();
});

/** Hand-offs a prefill pod made by `path` (NaN when it made none: the series does not exist). */
async function handoffs(url: string, path: string, outcome = "ok"): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith("llmfleet_kv_handoffs_total{") && l.includes(`path="${path}"`) && l.includes(`outcome="${outcome}"`));
  return line ? Number(line.split(" ").pop()) : NaN;
}

const prompts = ["hello world", "the capital of France is", "a b c d e f g h i j k l m n o p q r s t u v w x y z"];

test("greedy output through router+prefill+decode equals the aggregated output", async () => {
  for (const prompt of prompts) {
    const body = { prompt, max_tokens: 24 };
    assert.equal(await completionText(router.url, body), await completionText(aggregated.url, body), prompt);
  }
});

test("the default hand-off went over the native TCP stream; greedy output is the same over HTTP and over the HTTP fallback", async () => {
  assert.ok((await handoffs(prefill.url, "tcp")) >= prompts.length, "the prefill pod moved states over TCP");
  assert.ok(Number.isNaN(await handoffs(prefill.url, "http")), "and none over HTTP");
  const debug = (await (await fetch(`${decode.url}/internal/kv-debug`)).json()) as { tcp: { received: number; staged: number } };
  assert.ok(debug.tcp.received >= prompts.length);
  assert.equal(debug.tcp.staged, 0, "every staged state was taken by its generate call");
  const transport = (await (await fetch(`${decode.url}/internal/kv-transport`)).json()) as { tcpPort?: number; tcpStreams?: number };
  assert.equal(transport.tcpStreams, 16, "the decode pod says it takes hand-offs striped over up to 16 connections (LFKN v2)");
  for (const prompt of prompts) {
    const body = { prompt, max_tokens: 24 };
    const expected = await completionText(aggregated.url, body);
    assert.equal(await completionText(httpRouter.url, body), expected, `http: ${prompt}`);
    assert.equal(await completionText(fallbackRouter.url, body), expected, `fallback: ${prompt}`);
  }
  assert.ok((await handoffs(httpPrefill.url, "http")) >= prompts.length, "--kv-transport http moves states over HTTP");
  assert.ok(Number.isNaN(await handoffs(httpPrefill.url, "tcp")));
  assert.ok((await handoffs(prefill.url, "http")) >= prompts.length, "a decode pod with no TCP port gets the state over HTTP");
});

test("--kv-transport tcp against a decode pod that offers no TCP port is a clear 502, not a silent fallback", async () => {
  const r = await postJson(`${tcpOnlyRouter.url}/v1/completions`, { prompt: "hello", max_tokens: 4 });
  assert.equal(r.status, 502);
  assert.match((r.json.error as { message: string }).message, /--kv-transport tcp: decode pod .* offers no TCP hand-off port/);
});

test("streaming through the router carries the same text and the router records TTFT", async () => {
  const body = { prompt: prompts[1], max_tokens: 10, temperature: 0, stream: true };
  const res = await fetch(`${router.url}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const events = await sseEvents(res);
  assert.equal(events.at(-1), "[DONE]");
  const text = events
    .slice(0, -1)
    .map((e) => (JSON.parse(e) as { choices: { text: string }[] }).choices[0]!.text)
    .join("");
  assert.equal(text, await completionText(aggregated.url, { prompt: prompts[1], max_tokens: 10 }));
  const metrics = await (await fetch(`${router.url}/metrics`)).text();
  assert.match(metrics, /llmfleet_ttft_seconds_count\{role="router"\} [1-9]/);
});

test("validation errors from the prefill pod reach the client unchanged", async () => {
  const r = await postJson(`${router.url}/v1/completions`, { model: "nope", prompt: "x" });
  assert.equal(r.status, 404);
  const bad = await fetch(`${router.url}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: "{" });
  assert.equal(bad.status, 400);
});

test("a dead decode pod fails the request with a clear error instead of hanging", async () => {
  const r = await postJson(`${brokenRouter.url}/v1/completions`, { prompt: "hello", max_tokens: 4 });
  assert.equal(r.status, 502);
  assert.match((r.json.error as { message: string }).message, /hand-off to http:\/\/127\.0\.0\.1:9/);
  // How far it got, for whoever reads the error: the time it took and the bytes written.
  assert.match((r.json.error as { message: string }).message, /failed \(after \d+\.\d s, \d+ bytes of the stream written\)/);
});

test("the prefill pod's reused prefix reaches the answer's usage as cached_tokens, over TCP and over HTTP", async () => {
  for (const [name, r] of [["tcp", router], ["http", httpRouter]] as const) {
    const prompt = `a prompt of its own for the ${name} hand-off: ${Array.from({ length: 40 }, (_, i) => `w${i}`).join(" ")}`;
    const cached = async (): Promise<number> => {
      const res = await postJson(`${r.url}/v1/completions`, { prompt, max_tokens: 4 });
      assert.equal(res.status, 200, JSON.stringify(res.json));
      return (res.json.usage as { prompt_tokens_details: { cached_tokens: number } }).prompt_tokens_details.cached_tokens;
    };
    const first = await cached();
    const again = await cached();
    assert.ok(again > first && again > 20, `${name}: the repeat reused the prefill pod's prefix (cached_tokens ${first} then ${again})`);
  }
});
