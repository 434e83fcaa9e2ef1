/**
 * P/D's first token sampled on the prefill pod (serving/first-token.ts), through the router on the
 * tiny synthetic GGUF (real llama.cpp): the answer is the aggregated one however it ends (one token,
 * a stop string, streamed), requests whose sampler state matters hand off the prompt but its last
 * token as before, and a generate call's firstToken is checked.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { firstTokenEligible } from "../serving/first-token.ts";
import { completionText, metricValue, postJson, sseEvents, startPdFleet, type PdFleet } from "../../testing/engine.ts";

let fleet: PdFleet;

before(async () => {
  fleet = await startPdFleet("synthetic://tiny");
});
after(() => fleet?.[Symbol.asyncDispose]());

/** The prefill pod's answer for a request (what the router gets before the generate call). */
async function prefilled(request: Record<string, unknown>): Promise<Record<string, unknown>> {
  const p = await postJson(`${fleet.prefill.url}/internal/prefill`, { request, kind: "completion", decodeUrl: fleet.decode.url });
  assert.equal(p.status, 200, JSON.stringify(p.json));
  return p.json;
}

test("which requests may take their first token from the prefill pod", () => {
  const greedy = { temperature: 0, topK: 40, topP: 1 };
  assert.equal(firstTokenEligible(greedy), true);
  assert.equal(firstTokenEligible({ ...greedy, temperature: 0.8 }), true, "unseeded sampling: any draw is the answer's");
  assert.equal(firstTokenEligible({ ...greedy, seed: 7 }), true, "a seed does not change a greedy answer");
  assert.equal(firstTokenEligible({ ...greedy, temperature: 0.8, seed: 7 }), false, "a seeded draw stays the aggregated pod's");
  assert.equal(firstTokenEligible({ ...greedy, grammar: "root ::= \"a\"" }), false);
  assert.equal(firstTokenEligible({ ...greedy, logprobs: 2 }), false);
  assert.equal(firstTokenEligible({ ...greedy, presencePenalty: 0.5 }), false);
  assert.equal(firstTokenEligible({ ...greedy, frequencyPenalty: -1 }), false);
  assert.equal(firstTokenEligible({ ...greedy, logitBias: [[5, 10]] }), true, "a bias applies the same on both pods");
});

test("the first token comes from the prefill pod and the answer equals the aggregated one, at any length and with a stop string", async () => {
  for (const body of [
    { prompt: "the capital of France is", max_tokens: 1 },
    { prompt: "the capital of France is", max_tokens: 2 },
    { prompt: "a b c d e f g h i j k", max_tokens: 20 },
    { prompt: "a b c d e f g h i j k", max_tokens: 20, stop: [" "] },
  ]) {
    assert.equal(typeof (await prefilled({ ...body, temperature: 0 })).firstToken, "number");
    assert.equal(await completionText(fleet.router.url, body), await completionText(fleet.aggregated.url, body), JSON.stringify(body));
  }
  const usage = (await postJson(`${fleet.router.url}/v1/completions`, { prompt: "hello world", max_tokens: 5 })).json.usage as { completion_tokens: number };
  assert.equal(usage.completion_tokens, 5, "the prefill pod's token counts once");
  assert.ok((await metricValue(fleet.prefill.url, "llmfleet_kv_handoff_first_tokens_total")) >= 9, "the prefill pod counts the hand-offs that carried a first token");
});

test("streamed, the first token is the first event and the text is the aggregated text", async () => {
  const body = { prompt: "one two three four five", max_tokens: 12, temperature: 0, stream: true };
  const res = await fetch(`${fleet.router.url}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const events = await sseEvents(res);
  assert.equal(events.at(-1), "[DONE]");
  const texts = events.slice(0, -1).map((e) => (JSON.parse(e) as { choices: { text: string }[] }).choices[0]!.text);
  const expected = await completionText(fleet.aggregated.url, { ...body, stream: false });
  assert.equal(texts.join(""), expected);
  assert.ok(texts[0] && expected.startsWith(texts[0]), "the first event carries the first token's text");
});

test("requests whose sampler state matters hand off the prompt but its last token, and still give the aggregated answer", async () => {
  for (const extra of [{ logprobs: 2 }, { presence_penalty: 0.5 }, { temperature: 0.9, seed: 11 }]) {
    const body = { prompt: "red green blue yellow", max_tokens: 8, ...extra };
    assert.equal((await prefilled(body)).firstToken, undefined, JSON.stringify(extra));
    assert.equal(await completionText(fleet.router.url, body), await completionText(fleet.aggregated.url, body), JSON.stringify(extra));
  }
});

test("a generate call's firstToken must be a token of the model", async () => {
  const request = { prompt: "hello world", max_tokens: 2, temperature: 0 };
  for (const bad of [-1, 1.5, "3", 1 << 30]) {
    const p = await prefilled(request);
    const g = await postJson(`${String(p.decodeUrl)}/internal/generate/${String(p.handoffId)}`, { request, kind: "completion", firstToken: bad });
    assert.equal(g.status, 400, JSON.stringify(bad));
    assert.match(JSON.stringify(g.json), /firstToken/);
  }
});
