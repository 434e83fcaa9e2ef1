/** Standalone: real llama.cpp on a tiny synthetic GGUF, the app in-process on loopback. */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { metricValue, postJson, sseEvents, startPod, type RunningPod } from "../../testing/engine.ts";
import { eventually } from "../../testing/eventually.ts";

const MODEL = "synthetic://tiny";
let pod: RunningPod;

before(async () => {
  pod = await startPod({ model: MODEL, parallel: 1, maxQueue: 1, ctxSize: 256, servedModelName: "team/tiny-chat" });
});
after(async () => {
  await pod[Symbol.asyncDispose]();
});

const completions = (): string => `${pod.url}/v1/completions`;

test("greedy completion is deterministic and reports usage", async () => {
  const body = { model: "default", prompt: "hello world", max_tokens: 8, temperature: 0 };
  const a = await postJson(completions(), body);
  const b = await postJson(completions(), body);
  assert.equal(a.status, 200);
  assert.deepEqual((a.json.choices as object[])[0], (b.json.choices as object[])[0]);
  assert.equal((a.json.usage as { completion_tokens: number }).completion_tokens, 8);
});

test("malformed JSON and invalid parameters are OpenAI-style 400s", async () => {
  const res = await fetch(completions(), { method: "POST", headers: { "content-type": "application/json" }, body: "{nope" });
  assert.equal(res.status, 400);
  const body = (await res.json()) as { error: Record<string, unknown> };
  assert.deepEqual(Object.keys(body.error).sort(), ["code", "message", "param", "type"]);
  assert.equal(body.error.type, "invalid_request_error");
  for (const bad of [{ prompt: 3 }, { prompt: "x", temperature: 9 }, { prompt: "x", max_tokens: 0 }, { prompt: "x", stop: [1] }]) {
    const r = await postJson(completions(), bad);
    assert.equal(r.status, 400, JSON.stringify(bad));
    assert.equal((r.json.error as { type: string }).type, "invalid_request_error");
  }
  const chat = await postJson(`${pod.url}/v1/chat/completions`, { messages: [{ role: "wizard", content: "x" }] });
  assert.equal(chat.status, 400);
  assert.equal((chat.json.error as { param: string }).param, "messages[0].role");
});

test("the API's routes answer another method with a 405 naming the allowed one; an unknown route is a 404", async () => {
  const get = await fetch(completions());
  assert.equal(get.status, 405);
  assert.equal(get.headers.get("allow"), "POST");
  assert.equal(((await get.json()) as { error: { code: string } }).error.code, "method_not_allowed");
  const post = await fetch(`${pod.url}/v1/models`, { method: "POST" });
  assert.equal(post.status, 405);
  assert.equal(post.headers.get("allow"), "GET");
  assert.equal((await fetch(`${pod.url}/v1/nothing`)).status, 404);
});

test("a request that does not fit the context is a 400 naming the context size", async () => {
  const r = await postJson(completions(), { prompt: "hello", max_tokens: 5000 });
  assert.equal(r.status, 400);
  const err = r.json.error as { message: string; code: string };
  assert.equal(err.code, "context_length_exceeded");
  assert.match(err.message, /maximum context length is 256 tokens/);
});

test("an unknown model is a 404 naming the served one", async () => {
  const r = await postJson(completions(), { model: "gpt-17", prompt: "x" });
  assert.equal(r.status, 404);
  assert.equal((r.json.error as { code: string }).code, "model_not_found");
  assert.match((r.json.error as { message: string }).message, /this engine serves 'team\/tiny-chat'/);
  const one = await fetch(`${pod.url}/v1/models/gpt-17`);
  assert.equal(one.status, 404);
  assert.equal(((await one.json()) as { error: { code: string } }).error.code, "model_not_found");
});

test("the served name (a Model resource's), the GGUF's own name and 'default' all answer; /v1/models lists the served name first", async () => {
  const list = (await (await fetch(`${pod.url}/v1/models`)).json()) as { data: { id: string; object: string }[] };
  const ids = list.data.map((m) => m.id);
  assert.equal(ids[0], "team/tiny-chat");
  assert.equal(ids.at(-1), "default");
  assert.equal(ids.length, 3, JSON.stringify(ids));
  for (const id of ids) {
    const r = await postJson(completions(), { model: id, prompt: "hello", max_tokens: 2 });
    assert.equal(r.status, 200, `${id}: ${JSON.stringify(r.json)}`);
    assert.equal(r.json.model, id, "the answer names the model as the request did");
    const one = await fetch(`${pod.url}/v1/models/${encodeURIComponent(id)}`);
    assert.equal(one.status, 200, id);
    assert.deepEqual(Object.keys((await one.json()) as object).sort(), ["created", "id", "object", "owned_by"]);
  }
});

test("streaming sends SSE chunks and [DONE]; chat streams deltas", async () => {
  const res = await fetch(`${pod.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ messages: [{ role: "user", content: "hello" }], max_tokens: 5, temperature: 0, stream: true }),
  });
  assert.match(res.headers.get("content-type") ?? "", /text\/event-stream/);
  const events = await sseEvents(res);
  assert.equal(events.at(-1), "[DONE]");
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e) as { object: string; choices: { delta: { role?: string }; finish_reason: string | null }[] });
  assert.ok(chunks.every((c) => c.object === "chat.completion.chunk"));
  assert.equal(chunks.at(-1)!.choices[0]!.finish_reason, "length");
  const roles = chunks.map((c) => c.choices[0]!.delta.role);
  assert.equal(roles[0], "assistant", "the first delta names the role");
  assert.ok(roles.slice(1).every((r) => r === undefined), `only the first delta names the role, as OpenAI's do: ${JSON.stringify(roles)}`);
});

test("stream_options.include_usage adds a last chunk with the usage; without stream it is a 400", async () => {
  const res = await fetch(completions(), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt: "hello world", max_tokens: 6, temperature: 0, stream: true, stream_options: { include_usage: true } }),
  });
  const events = await sseEvents(res);
  assert.equal(events.at(-1), "[DONE]");
  const last = JSON.parse(events.at(-2)!) as { choices: unknown[]; usage: { completion_tokens: number; prompt_tokens: number } };
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.completion_tokens, 6);
  assert.ok(last.usage.prompt_tokens > 0);
  const bad = await postJson(completions(), { prompt: "x", stream_options: { include_usage: true } });
  assert.equal(bad.status, 400);
  assert.equal((bad.json.error as { param: string }).param, "stream_options");
});

test("a full admission queue answers 429 with Retry-After; a disconnect frees the sequence", async () => {
  const streaming = new AbortController();
  const long = fetch(completions(), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt: "hello", max_tokens: 200, temperature: 0, stream: true }),
    signal: streaming.signal,
  });
  const first = await long;
  const reader = first.body!.getReader();
  await reader.read(); // generation is running: the only sequence is leased
  const queued = postJson(completions(), { prompt: "the", max_tokens: 2 });
  await eventually(async () => assert.equal(await metricValue(pod.url, "llmfleet_queue_depth"), 1), { message: "one request queued" });
  const refused = await postJson(completions(), { prompt: "of", max_tokens: 2 });
  assert.equal(refused.status, 429);
  assert.equal(refused.headers.get("retry-after"), "1");
  streaming.abort();
  assert.equal((await queued).status, 200);
  await eventually(async () => assert.equal(await metricValue(pod.url, "llmfleet_running_sequences"), 0), { message: "the sequence is freed" });
  const generated = await metricValue(pod.url, 'llmfleet_generated_tokens_total{role="aggregated"}');
  assert.ok(generated < 150, `cancelled generation stopped early (generated ${generated})`);
});

test("prefix reuse counts hit tokens", async () => {
  const prompt = "the capital of France is the capital of France and the capital";
  await postJson(completions(), { prompt, max_tokens: 2, temperature: 0 });
  const before = await metricValue(pod.url, 'llmfleet_prefix_hit_tokens_total{role="aggregated"}');
  const r = await postJson(completions(), { prompt: `${prompt} of Paris`, max_tokens: 2, temperature: 0 });
  const hits = (r.json.usage as { prompt_tokens_details: { cached_tokens: number } }).prompt_tokens_details.cached_tokens;
  assert.ok(hits > 10, `reused ${hits} tokens`);
  assert.equal(await metricValue(pod.url, 'llmfleet_prefix_hit_tokens_total{role="aggregated"}'), before + hits);
});

test("/health, /ready, /v1/models and /metrics answer", async () => {
  assert.equal((await fetch(`${pod.url}/health`)).status, 200);
  assert.equal((await fetch(`${pod.url}/ready`)).status, 200);
  const models = (await (await fetch(`${pod.url}/v1/models`)).json()) as { data: { id: string }[] };
  assert.ok(models.data.some((m) => m.id === "default"));
  const metrics = await (await fetch(`${pod.url}/metrics`)).text();
  for (const name of ["llmfleet_ttft_seconds", "llmfleet_inter_token_latency_seconds", "llmfleet_e2e_latency_seconds", "llmfleet_queue_depth"]) {
    assert.match(metrics, new RegExp(`${name}.*role="aggregated"`));
  }
});

test("a request's time before its answer is split into phases, each observed once per request, within its TTFT", async () => {
  const phases = async (): Promise<Record<string, { sum: number; count: number }>> => {
    const out: Record<string, { sum: number; count: number }> = {};
    for (const line of (await (await fetch(`${pod.url}/metrics`)).text()).split("\n")) {
      const m = /^llmfleet_request_phase_seconds_(sum|count)\{.*phase="(\w+)".*\} (\S+)$/.exec(line);
      if (m) (out[m[2]!] ??= { sum: 0, count: 0 })[m[1] as "sum" | "count"] = Number(m[3]);
    }
    return out;
  };
  const ttft = async (): Promise<number> => metricValue(pod.url, 'llmfleet_ttft_seconds_sum{role="aggregated"}');
  const [before, ttftBefore] = [await phases(), await ttft()];
  await postJson(completions(), { prompt: "one two three four five six", max_tokens: 2, temperature: 0 });
  const [after, ttftAfter] = [await phases(), await ttft()];
  let spent = 0;
  for (const phase of ["tokenize", "lease", "kv_load", "prefill"]) {
    assert.equal(after[phase]!.count - (before[phase]?.count ?? 0), 1, phase);
    const s = after[phase]!.sum - (before[phase]?.sum ?? 0);
    assert.ok(s >= 0, `${phase} ${s}`);
    spent += s;
  }
  assert.ok(spent <= ttftAfter - ttftBefore + 1e-6, `the phases (${spent} s) fit in the TTFT (${ttftAfter - ttftBefore} s)`);
});

test("probes and scrapes are not counted as requests (the autoscaler's arrival rate)", async () => {
  const count = async (): Promise<number> => {
    const text = await (await fetch(`${pod.url}/metrics`)).text();
    return text
      .split("\n")
      .filter((l) => l.startsWith("llmfleet_requests_total"))
      .reduce((sum, l) => sum + Number(l.split(" ").at(-1)), 0);
  };
  const before = await count();
  for (let i = 0; i < 3; i++) {
    assert.equal((await fetch(`${pod.url}/health`)).status, 200);
    assert.equal((await fetch(`${pod.url}/ready`)).status, 200);
  }
  assert.equal(await count(), before);
  assert.equal((await fetch(`${pod.url}/v1/models`)).status, 200);
  await eventually(async () => assert.equal(await count(), before + 1), { message: "/v1/models counted" });
});
