/**
 * RAG joins on the P/D path (issue 26): a request with documents sent to the router is joined on
 * the prefill pod (documents from their own KV, moved to their new positions), handed off, and
 * decoded: the same greedy answer as an aggregated pod joining the same documents, with the join
 * in the answer's cached_tokens and the prefill pod's llmfleet_rag_joined_tokens_total. Real
 * llama.cpp on a tiny synthetic GGUF.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { postJson, startPdFleet, type PdFleet } from "../../testing/engine.ts";
import { DOCUMENT_SEPARATOR } from "./documents.ts";

let fleet: PdFleet;

before(async () => {
  // Both join every document (nothing recomputed but the prompt): any difference would show.
  const joins = { kvUnified: true, ragRecompute: 0 };
  fleet = await startPdFleet("synthetic://tiny", { aggregated: joins, prefill: { parallel: 2, ...joins } });
});
after(() => fleet?.[Symbol.asyncDispose]());

async function joinedTokens(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return Number(/^llmfleet_rag_joined_tokens_total(?:\{[^}]*\})? (\S+)$/m.exec(text)?.[1] ?? NaN);
}

const words = (tag: string, n: number): string => Array.from({ length: n }, (_, i) => `${tag}${i}`).join(" ");
const A = `document A: ${words("a", 40)}`;
const B = `document B: ${words("b", 30)}`;
const C = `document C: ${words("c", 30)}`;

type Usage = { prompt_tokens: number; prompt_tokens_details: { cached_tokens: number } };
async function complete(url: string, body: object): Promise<{ text: string; usage: Usage }> {
  const res = await postJson(`${url}/v1/completions`, { max_tokens: 12, temperature: 0, ...body });
  assert.equal(res.status, 200, JSON.stringify(res.json));
  return { text: (res.json.choices as { text: string }[])[0]!.text, usage: res.json.usage as Usage };
}

test("documents through router, prefill and decode are joined on the prefill pod: the aggregated joining pod's answer", async () => {
  const { runtime } = fleet.prefill.pod.service;
  const lead = runtime.tokenize("").length;
  const alone = (d: string): number => runtime.tokenize(`${d}${DOCUMENT_SEPARATOR}`).length - lead;
  // Each document seen once first (its own KV kept), on both paths alike.
  for (const url of [fleet.router.url, fleet.aggregated.url]) await complete(url, { prompt: "first", documents: [A, B, C] });
  for (const [documents, prompt] of [
    [[C, A, B], "in a new order"],
    [[B, C], "two of them"],
  ] as const) {
    const before = await joinedTokens(fleet.prefill.url);
    const pd = await complete(fleet.router.url, { prompt, documents });
    const joined = (await joinedTokens(fleet.prefill.url)) - before;
    assert.equal(
      joined,
      documents.reduce((n, d) => n + alone(d), 0),
      "every document came from its own KV on the prefill pod",
    );
    assert.ok(
      pd.usage.prompt_tokens_details.cached_tokens >= joined,
      `cached_tokens ${pd.usage.prompt_tokens_details.cached_tokens} counts the ${joined} joined`,
    );
    const agg = await complete(fleet.aggregated.url, { prompt, documents });
    assert.equal(pd.text, agg.text, prompt);
    assert.equal(pd.usage.prompt_tokens, agg.usage.prompt_tokens);
  }
  assert.equal(await fleet.prefill.pod.service.runtime.kvStrayTokens?.(), 0);
});

test("a prompt of one token after joined documents (nothing computed after the join before the hand-off) decodes as the aggregated pod does", async () => {
  const { runtime } = fleet.prefill.pod.service;
  const prompt = "x";
  assert.equal(runtime.tokenize(prompt).length - runtime.tokenize("").length, 1, "the prompt is one token");
  for (const documents of [
    [A, C],
    [C, B, A],
  ]) {
    const pd = await complete(fleet.router.url, { prompt, documents });
    const agg = await complete(fleet.aggregated.url, { prompt, documents });
    assert.equal(pd.text, agg.text, documents.length.toString());
  }
});
