/**
 * Standalone (tiny synthetic GGUF, real llama.cpp): the OpenAI features of the native backend
 * through the HTTP API of an aggregated pod and of router → prefill → decode: logprobs, logit
 * bias, penalties, echo, grammar-constrained JSON, tool calls, the message shapes of the SDKs,
 * streamed usage; and the llama backend's refusals.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createEngineMetrics } from "../metrics/engine-metrics.ts";
import { createRouterApp } from "../router/router-app.ts";
import { listen, postJson, sseEvents, startPod, type Running, type RunningPod } from "../../testing/engine.ts";

const MODEL = "synthetic://tiny";
let pod: RunningPod;
let prefill: RunningPod;
let decode: RunningPod;
let router: Running;

before(async () => {
  pod = await startPod({ model: MODEL, parallel: 2, ctxSize: 1024 });
  decode = await startPod({ model: MODEL, role: "decode", parallel: 2, ctxSize: 1024 });
  prefill = await startPod({ model: MODEL, role: "prefill", parallel: 1, ctxSize: 1024 });
  router = await listen(createRouterApp({ prefill: [prefill.url], decode: [decode.url], metrics: createEngineMetrics("router") }));
});
after(async () => {
  for (const r of [router, prefill, decode, pod]) await r?.[Symbol.asyncDispose]();
});

type Json = Record<string, unknown>;
const USER = [{ role: "user", content: "hello there" }];

async function chat(url: string, body: Json): Promise<Json> {
  const r = await postJson(`${url}/v1/chat/completions`, { messages: USER, temperature: 0, max_tokens: 8, ...body });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  return r.json;
}

async function complete(url: string, body: Json): Promise<Json> {
  const r = await postJson(`${url}/v1/completions`, { prompt: "hello there", temperature: 0, max_tokens: 8, ...body });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  return r.json;
}

const choice = (json: Json): Json => (json.choices as Json[])[0]!;
const message = (json: Json): { content: string | null; tool_calls?: { id: string; type: string; function: { name: string; arguments: string } }[] } =>
  choice(json).message as never;

async function streamChunks(url: string, path: string, body: Json): Promise<Json[]> {
  const res = await fetch(`${url}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ...body, stream: true }) });
  assert.equal(res.status, 200);
  const events = await sseEvents(res);
  assert.equal(events.at(-1), "[DONE]");
  return events.slice(0, -1).map((e) => JSON.parse(e) as Json);
}

interface ChatLogprob {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: { token: string; logprob: number }[];
}

test("chat logprobs: each token's logprob and its top alternatives, most likely first; greedy picks the first", async () => {
  const json = await chat(pod.url, { logprobs: true, top_logprobs: 3, max_tokens: 6 });
  const content = (choice(json).logprobs as { content: ChatLogprob[] }).content;
  assert.equal(content.length, (json.usage as { completion_tokens: number }).completion_tokens);
  for (const lp of content) {
    assert.ok(lp.logprob <= 0 && Number.isFinite(lp.logprob));
    assert.equal(lp.top_logprobs.length, 3);
    assert.ok(lp.top_logprobs[0]!.logprob >= lp.top_logprobs[1]!.logprob && lp.top_logprobs[1]!.logprob >= lp.top_logprobs[2]!.logprob);
    assert.equal(lp.logprob, lp.top_logprobs[0]!.logprob, "greedy: the chosen token is the most likely one");
    assert.deepEqual(lp.bytes, [...Buffer.from(lp.token)]);
  }
  assert.equal(content.map((c) => c.token).join(""), message(json).content);
  const plain = await chat(pod.url, { max_tokens: 6 });
  assert.equal(message(plain).content, message(json).content, "logprobs do not change the output");
  assert.equal(choice(plain).logprobs, null);
});

test("completion logprobs (tokens, token_logprobs, top_logprobs, text_offset), whole and streamed", async () => {
  const json = await complete(pod.url, { logprobs: 2, max_tokens: 5 });
  const lp = choice(json).logprobs as { tokens: string[]; token_logprobs: number[]; top_logprobs: Json[]; text_offset: number[] };
  assert.equal(lp.tokens.length, 5);
  assert.equal(lp.token_logprobs.length, 5);
  assert.ok(lp.token_logprobs.every((x) => x <= 0));
  assert.deepEqual(lp.text_offset[0], 0);
  const chunks = await streamChunks(pod.url, "/v1/completions", { prompt: "hello there", temperature: 0, max_tokens: 5, logprobs: 2 });
  const streamed = chunks.flatMap((c) => ((choice(c).logprobs as { token_logprobs: number[] } | null)?.token_logprobs ?? []) as number[]);
  assert.deepEqual(streamed, lp.token_logprobs);
});

/** The id of the only token whose text is `text` (none for a byte of a character, or a text several tokens have). */
function tokenId(text: string): number | undefined {
  const rt = pod.pod.service.runtime;
  if (text.includes("\uFFFD")) return undefined;
  const ids: number[] = [];
  for (let t = 0; t < rt.features.vocabSize; t++) if (rt.tokenPiece!(t) === text) ids.push(t);
  return ids.length === 1 ? ids[0] : undefined;
}

test("logit_bias: +100 forces a token, -100 bans the greedy choice", async () => {
  const forced = pod.pod.service.runtime.tokenize("a").at(-1)!;
  const text = message(await chat(pod.url, { logit_bias: { [forced]: 100 }, max_tokens: 4 })).content!;
  assert.equal(text, pod.pod.service.runtime.detokenize([forced, forced, forced, forced]));
  // A prompt whose greedy first token is a whole token with a text (not a byte of a character).
  let found: { prompt: string; id: number; logprob: number } | undefined;
  for (const prompt of ["hello", "the", "once upon a time", "a b c", "1 2 3", "x", "we", "it is"]) {
    const lp = (choice(await complete(pod.url, { prompt, logprobs: 0, max_tokens: 1 })).logprobs as { tokens: string[]; token_logprobs: number[] }) ?? undefined;
    const id = tokenId(lp.tokens[0]!);
    if (id !== undefined) found = { prompt, id, logprob: lp.token_logprobs[0]! };
    if (found) break;
  }
  assert.ok(found, "a prompt whose first greedy token is a whole token");
  const banned = choice(await complete(pod.url, { prompt: found.prompt, logprobs: 0, max_tokens: 1, logit_bias: { [found.id]: -100 } })).logprobs as {
    tokens: string[];
    token_logprobs: number[];
  };
  assert.notEqual(tokenId(banned.tokens[0]!), found.id);
  assert.ok(banned.token_logprobs[0]! < found.logprob, "the next most likely token instead");
  const tooBig = await postJson(`${pod.url}/v1/chat/completions`, { messages: USER, logit_bias: { "99999999": 1 } });
  assert.equal(tooBig.status, 400);
  assert.equal((tooBig.json.error as { param: string }).param, "logit_bias");
});

test("presence and frequency penalties change greedy output towards fewer repeats", async () => {
  const count = (s: string): number => pod.pod.service.runtime.tokenize(s).length;
  const plain = message(await chat(pod.url, { max_tokens: 40 })).content!;
  const penalised = message(await chat(pod.url, { max_tokens: 40, frequency_penalty: 2, presence_penalty: 2 })).content!;
  assert.notEqual(penalised, plain);
  const distinct = (s: string): number => new Set(pod.pod.service.runtime.tokenize(s)).size / count(s);
  assert.ok(distinct(penalised) >= distinct(plain), `distinct ratio ${distinct(penalised)} vs ${distinct(plain)}`);
});

test("echo returns the prompt before the completion", async () => {
  const plain = choice(await complete(pod.url, { max_tokens: 4 })).text as string;
  assert.equal(choice(await complete(pod.url, { max_tokens: 4, echo: true })).text, `hello there${plain}`);
});

test("developer role, text parts and name render as the equivalent plain messages", async () => {
  const sdk = await chat(pod.url, {
    messages: [
      { role: "developer", content: [{ type: "text", text: "Be " }, { type: "text", text: "brief." }] },
      { role: "user", name: "ann", content: [{ type: "text", text: "hello" }] },
    ],
  });
  const plain = await chat(pod.url, { messages: [{ role: "system", content: "Be brief." }, { role: "user", content: "ann: hello" }] });
  assert.equal(message(sdk).content, message(plain).content);
  assert.deepEqual((sdk.usage as Json).prompt_tokens, (plain.usage as Json).prompt_tokens);
});

const SCHEMA = {
  type: "object",
  properties: { ok: { type: "boolean" }, size: { enum: ["small", "large"] }, tags: { type: "array", items: { enum: ["a", "b"] }, maxItems: 3 } },
  required: ["ok", "size", "tags"],
  additionalProperties: false,
};

function assertMatchesSchema(text: string): void {
  const v = JSON.parse(text) as { ok: unknown; size: unknown; tags: unknown[] };
  assert.deepEqual(Object.keys(v), ["ok", "size", "tags"]);
  assert.equal(typeof v.ok, "boolean");
  assert.ok(["small", "large"].includes(v.size as string));
  assert.ok(Array.isArray(v.tags) && v.tags.length <= 3 && v.tags.every((t) => t === "a" || t === "b"));
}

test("json_schema output parses and validates, greedy and sampled, whole and streamed, aggregated and P/D", async () => {
  const response_format = { type: "json_schema", json_schema: { name: "answer", schema: SCHEMA, strict: true } };
  const body = { response_format, max_tokens: 200 };
  const whole = await chat(pod.url, body);
  assert.equal(choice(whole).finish_reason, "stop");
  assertMatchesSchema(message(whole).content!);
  for (const seed of [1, 2, 3]) assertMatchesSchema(message(await chat(pod.url, { ...body, temperature: 1, seed })).content!);
  const chunks = await streamChunks(router.url, "/v1/chat/completions", { messages: USER, temperature: 0, ...body, stream_options: { include_usage: true } });
  const text = chunks.map((c) => ((c.choices as Json[])[0]?.delta as { content?: string } | undefined)?.content ?? "").join("");
  assert.equal(text, message(whole).content, "P/D streamed equals aggregated");
  assert.equal((chunks.at(-1)!.usage as { completion_tokens: number }).completion_tokens, (whole.usage as { completion_tokens: number }).completion_tokens);
  assert.equal(message(await chat(router.url, body)).content, message(whole).content);
});

test("json_object output is a JSON object (bounded by max_tokens on a random model: parsed only when complete)", async () => {
  const json = await chat(pod.url, { response_format: { type: "json_object" }, max_tokens: 30 });
  const text = message(json).content!;
  assert.match(text, /^\{/);
  if (choice(json).finish_reason === "stop") assert.equal(typeof JSON.parse(text), "object");
});

const WEATHER = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Weather in a city",
    parameters: { type: "object", properties: { city: { enum: ["Paris", "Rome"] } }, required: ["city"] },
  },
};
const TIME = { type: "function", function: { name: "get_time", parameters: { type: "object", properties: {}, additionalProperties: false } } };

test("tool_choice required / named: the answer is a tool call whose arguments validate, whole and streamed, aggregated and P/D", async () => {
  for (const tool_choice of ["required", { type: "function", function: { name: "get_weather" } }] as const) {
    const body = { tools: [WEATHER, TIME], tool_choice, max_tokens: 300 };
    const json = await chat(pod.url, body);
    assert.equal(choice(json).finish_reason, "tool_calls");
    const calls = message(json).tool_calls!;
    assert.ok(calls.length >= 1);
    for (const call of calls) {
      assert.equal(call.type, "function");
      assert.match(call.id, /^call_/);
      const args = JSON.parse(call.function.arguments) as Json;
      if (call.function.name === "get_weather") assert.ok(["Paris", "Rome"].includes(args.city as string));
      else assert.deepEqual(args, {});
    }
    if (typeof tool_choice === "object") assert.ok(calls.every((c) => c.function.name === "get_weather"));
    const chunks = await streamChunks(router.url, "/v1/chat/completions", { messages: USER, temperature: 0, ...body });
    const streamed = chunks.flatMap((c) => ((choice(c).delta as { tool_calls?: { function: { name: string; arguments: string } }[] }).tool_calls ?? []));
    assert.deepEqual(
      streamed.map((c) => c.function),
      calls.map((c) => c.function),
    );
    assert.equal(choice(chunks.at(-1)!).finish_reason, "tool_calls");
  }
});

test("a tool round trip: the call and its result render into the next turn; auto and none answer in text", async () => {
  const first = await chat(pod.url, { tools: [WEATHER], tool_choice: "required", max_tokens: 300 });
  const call = message(first).tool_calls![0]!;
  const history = [...USER, { role: "assistant", content: null, tool_calls: [call] }, { role: "tool", tool_call_id: call.id, content: '{"temp": 21}' }];
  const second = await postJson(`${router.url}/v1/chat/completions`, { messages: history, tools: [WEATHER], tool_choice: "none", temperature: 0, max_tokens: 5 });
  assert.equal(second.status, 200);
  assert.equal(typeof message(second.json).content, "string");
  const tokens = (json: Json): number => (json.usage as { prompt_tokens: number }).prompt_tokens;
  assert.ok(tokens(second.json) > tokens(await chat(pod.url, {})), "the call and its result are in the prompt");
  const auto = await chat(pod.url, { messages: history, tools: [WEATHER], tool_choice: "auto", max_tokens: 5 });
  assert.ok(tokens(auto) > tokens(first), "tools, the call and its result are in the prompt");
  assert.ok(["stop", "length", "tool_calls"].includes(choice(auto).finish_reason as string));
});

test("streamed usage arrives through the router (P/D) for completions and chat", async () => {
  for (const [path, body] of [
    ["/v1/completions", { prompt: "hello", max_tokens: 4, temperature: 0 }],
    ["/v1/chat/completions", { messages: USER, max_tokens: 4, temperature: 0 }],
  ] as const) {
    const chunks = await streamChunks(router.url, path, { ...body, stream_options: { include_usage: true } });
    const last = chunks.at(-1)!;
    assert.deepEqual(last.choices, []);
    assert.equal((last.usage as { completion_tokens: number }).completion_tokens, 4);
  }
});

test("the llama backend refuses what it cannot do, naming the parameter", async () => {
  await using llama = await startPod({ model: MODEL, backend: "llama", parallel: 1 });
  for (const [param, extra] of [
    ["logprobs", { logprobs: true }],
    ["presence_penalty", { presence_penalty: 1 }],
    ["logit_bias", { logit_bias: { "1": 5 } }],
    ["response_format", { response_format: { type: "json_object" } }],
    ["tool_choice", { tools: [WEATHER], tool_choice: "required" }],
  ] as const) {
    const r = await postJson(`${llama.url}/v1/chat/completions`, { messages: USER, max_tokens: 2, ...extra });
    assert.equal(r.status, 400, param);
    assert.equal((r.json.error as { param: string }).param, param);
    assert.match((r.json.error as { message: string }).message, /llama backend/);
  }
  assert.equal((await postJson(`${llama.url}/v1/chat/completions`, { messages: USER, max_tokens: 2 })).status, 200);
});
