/**
 * Standalone (tiny synthetic GGUF): the malformed-body battery against every role that takes a
 * JSON body — the router (disaggregated and aggregated), an aggregated pod, a prefill pod, a
 * decode pod and the kvstore. Every malformed, deeply nested, wrongly typed, oversized or
 * non-JSON body gets a 4xx with an OpenAI-style error body, never a 5xx; the pods stay up.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createEngineMetrics } from "../metrics/engine-metrics.ts";
import { createRouterApp } from "../router/router-app.ts";
import { createKvStoreApp } from "./kvstore-app.ts";
import { createKvStoreMetrics } from "../kvstore/store-metrics.ts";
import { TieredStore } from "../kvstore/tiered-store.ts";
import { MemoryTier } from "../kvstore/memory-tier.ts";
import { completionText, listen, startPod, type Running, type RunningPod } from "../../testing/engine.ts";

const MODEL = "synthetic://tiny";
let aggregated: RunningPod;
let prefill: RunningPod;
let decode: RunningPod;
let pdRouter: Running;
let aggRouter: Running;
let kvstore: Running;

before(async () => {
  aggregated = await startPod({ model: MODEL, parallel: 1 });
  decode = await startPod({ model: MODEL, role: "decode", parallel: 1 });
  prefill = await startPod({ model: MODEL, role: "prefill", parallel: 1, decode: [decode.url] });
  pdRouter = await listen(createRouterApp({ prefill: [prefill.url], decode: [decode.url], metrics: createEngineMetrics("router") }));
  aggRouter = await listen(createRouterApp({ prefill: [], decode: [], aggregated: [aggregated.url], metrics: createEngineMetrics("router") }));
  const tiers = [new MemoryTier({ name: "ram", capacityBytes: 1 << 20, ttlMs: undefined })];
  const metrics = createKvStoreMetrics(tiers);
  const store = new TieredStore(tiers, metrics);
  kvstore = await listen(createKvStoreApp({ store, metrics, config: { blockTokens: 16, codec: "none", tenantSalt: "" } }));
});
after(async () => {
  for (const r of [pdRouter, aggRouter, prefill, decode, aggregated, kvstore]) await r?.[Symbol.asyncDispose]();
});

const DEEP = 100_000;
const deepArray = `${"[".repeat(DEEP)}${"]".repeat(DEEP)}`;
const deepObject = `${'{"a":'.repeat(DEEP)}1${"}".repeat(DEEP)}`;

interface Case {
  name: string;
  body: string | Uint8Array;
  type?: string;
}

/** Bodies that are not a valid request of any kind. */
const RAW_CASES: Case[] = [
  { name: "deep array", body: deepArray },
  { name: "deep object", body: deepObject },
  { name: "deep value in a field", body: `{"prompt":${deepArray},"messages":${deepArray},"request":${deepArray},"keys":${deepArray}}` },
  { name: "text/plain", body: '{"prompt":"hi"}', type: "text/plain" },
  { name: "form", body: "prompt=hi", type: "application/x-www-form-urlencoded" },
  { name: "invalid JSON", body: "{nope" },
  { name: "truncated JSON", body: '{"prompt": "hi"' },
  { name: "empty", body: "" },
  { name: "invalid UTF-8", body: new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]) },
  { name: "null", body: "null" },
  { name: "number", body: "42" },
  { name: "string", body: '"hello"' },
  { name: "array", body: "[1,2]" },
  { name: "too large", body: JSON.stringify({ prompt: "x".repeat(9 * 2 ** 20) }) },
];

/** Valid JSON objects with wrong types: bodies of the OpenAI endpoints, and `request`s of the internal ones. */
const WRONG_TYPES: object[] = [
  {},
  { prompt: 3, messages: "x" },
  { prompt: { a: 1 }, messages: [1] },
  { prompt: "x", messages: [{ role: "user", content: "x" }], max_tokens: "5" },
  { prompt: "x", messages: [{ role: "user", content: "x" }], temperature: "hot" },
  { prompt: "x", messages: [{ role: "user", content: "x" }], logprobs: "x", presence_penalty: 5 },
  { prompt: "x", messages: [{ role: "user", content: "x" }], tools: 5, response_format: { type: "nope" } },
  { prompt: "x", messages: [{ role: "user", content: [{ type: "text" }] }], stop: [null] },
  { prompt: ["a", 1], messages: [{ role: "user", content: { text: "x" } }], stream: "yes" },
  { prompt: "x", messages: [{ role: "user", content: "x" }], n: 3 },
];

async function send(url: string, c: Case): Promise<{ status: number; text: string }> {
  const res = await fetch(url, { method: "POST", headers: { "content-type": c.type ?? "application/json" }, body: c.body as BodyInit });
  return { status: res.status, text: await res.text() };
}

function assertClientError(where: string, r: { status: number; text: string }): void {
  assert.ok(r.status >= 400 && r.status < 500, `${where}: status ${r.status} ${r.text.slice(0, 200)}`);
  const body = JSON.parse(r.text) as { error?: { message?: unknown; type?: unknown } };
  assert.equal(typeof body.error?.message, "string", `${where}: ${r.text.slice(0, 200)}`);
  assert.equal(body.error?.type, "invalid_request_error", where);
}

/** Every POST endpoint that takes JSON, by role. */
function targets(): [string, string][] {
  return [
    ["router (P/D) completions", `${pdRouter.url}/v1/completions`],
    ["router (P/D) chat", `${pdRouter.url}/v1/chat/completions`],
    ["router (aggregated) chat", `${aggRouter.url}/v1/chat/completions`],
    ["aggregated completions", `${aggregated.url}/v1/completions`],
    ["aggregated chat", `${aggregated.url}/v1/chat/completions`],
    ["prefill /internal/prefill", `${prefill.url}/internal/prefill`],
    ["prefill chat", `${prefill.url}/v1/chat/completions`],
    ["decode /internal/generate", `${decode.url}/internal/generate/some-id`],
    ["decode completions", `${decode.url}/v1/completions`],
    ["kvstore lookup", `${kvstore.url}/v1/kv/lookup`],
  ];
}

test("malformed, deeply nested, non-JSON and oversized bodies are 4xx on every role", async () => {
  for (const [where, url] of targets()) {
    for (const c of RAW_CASES) assertClientError(`${where} / ${c.name}`, await send(url, c));
  }
});

test("wrongly typed requests are 400s on every role, as a body and as the internal routes' request", async () => {
  for (const [where, url] of targets().filter(([w]) => !w.startsWith("kvstore"))) {
    const internal = url.includes("/internal/");
    for (const bad of WRONG_TYPES) {
      const body = internal ? { request: bad, kind: url.includes("prefill") ? "completion" : "chat", handoffId: "h", decodeUrl: decode.url } : bad;
      const r = await send(url, { name: "wrong types", body: JSON.stringify(body) });
      assertClientError(`${where} / ${JSON.stringify(bad)}`, r);
    }
  }
  const kv = await send(`${kvstore.url}/v1/kv/lookup`, { name: "keys", body: JSON.stringify({ keys: [1, 2] }) });
  assertClientError("kvstore / keys of numbers", kv);
});

test("the error names the parameter, at the router as at the pod", async () => {
  for (const url of [`${pdRouter.url}/v1/chat/completions`, `${aggregated.url}/v1/chat/completions`]) {
    const r = await send(url, { name: "x", body: JSON.stringify({ messages: [{ role: "user", content: "x" }], presence_penalty: 5 }) });
    assert.equal(r.status, 400);
    assert.equal((JSON.parse(r.text) as { error: { param: string } }).error.param, "presence_penalty");
  }
  const r = await send(`${pdRouter.url}/v1/completions`, { name: "x", body: deepArray });
  assert.equal((JSON.parse(r.text) as { error: { code: string } }).error.code, "nesting_too_deep");
  const plain = await send(`${pdRouter.url}/v1/completions`, { name: "x", body: "{}", type: "text/plain" });
  assert.equal(plain.status, 415);
  const big = await send(`${pdRouter.url}/v1/completions`, RAW_CASES.at(-1)!);
  assert.equal(big.status, 413);
});

test("after the battery every role still serves", async () => {
  assert.ok((await completionText(pdRouter.url, { prompt: "hello", max_tokens: 3 })).length >= 0);
  assert.ok((await completionText(aggRouter.url, { prompt: "hello", max_tokens: 3 })).length >= 0);
  for (const pod of [aggregated, prefill, decode]) assert.equal((await fetch(`${pod.url}/ready`)).status, 200);
});
