/**
 * The first token ahead of its state (handoff-routes.ts firstTokenAhead, staged-wait.ts), on the
 * tiny synthetic GGUF (real llama.cpp) through real pods: once the prefill pod knows its decode
 * URL stages at itself, it answers with the first token before it sends the state; the decode
 * pod's generate call waits for a state on its way, and computes the prompt itself when the state
 * never comes (the prefill pod says its send failed, or the state is of other tokens). Every
 * answer is the aggregated pod's.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { awaitStaged, SendFailures, StagedWaitError } from "./staged-wait.ts";
import { eventually } from "../../testing/eventually.ts";
import { completionText, postJson, sseEvents, startPdFleet, type PdFleet } from "../../testing/engine.ts";

let fleet: PdFleet;

before(async () => {
  fleet = await startPdFleet("synthetic://tiny");
  // The first hand-off goes the late way and teaches the prefill pod that decode.url is a pod.
  await completionText(fleet.router.url, { prompt: "warm up", max_tokens: 2 });
});
after(() => fleet?.[Symbol.asyncDispose]());

/** A labelled counter's value in a pod's /metrics (0 when absent). */
async function counter(url: string, name: string, label: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(name) && l.includes(label));
  return line ? Number(line.split(" ").pop()) : 0;
}

type Answer = ReturnType<typeof postJson>;

const prefillAt = (request: Record<string, unknown>, handoffId = randomUUID()): Answer =>
  postJson(`${fleet.prefill.url}/internal/prefill`, { request, kind: "completion", handoffId, decodeUrl: fleet.decode.url });

const generate = (id: string, request: Record<string, unknown>, extra: Record<string, unknown>): Answer =>
  postJson(`${fleet.decode.url}/internal/generate/${id}`, { request, kind: "completion", ...extra });

test("the prefill pod answers with the first token ahead of the state, and every answer through the router is the aggregated one", async () => {
  const request = { prompt: "the capital of France is", max_tokens: 6, temperature: 0 };
  const exports = (): Promise<number> => counter(fleet.prefill.url, "llmfleet_kv_handoff_seconds_count", 'stage="export"');
  const exportsBefore = await exports();
  const p = await prefillAt(request);
  assert.equal(p.status, 200, JSON.stringify(p.json));
  assert.equal(p.json.early, true, "answered before the send");
  assert.equal(p.json.decodeUrl, fleet.decode.url);
  // Answered before the state was copied out of the engine: the export is counted after it.
  assert.equal(p.json.exportMs, 0);
  assert.equal(p.json.stateBytes, 0);
  await eventually(async () => assert.equal(await exports(), exportsBefore + 1), { timeoutMs: 5_000 });
  const g = await generate(String(p.json.handoffId), request, { firstToken: p.json.firstToken, awaitState: true });
  assert.equal(g.status, 200, JSON.stringify(g.json));
  const expected = await completionText(fleet.aggregated.url, request);
  assert.equal((g.json.choices as { text: string }[])[0]!.text, expected);
  for (const body of [
    { prompt: "a b c d e f g h i j k", max_tokens: 20 },
    { prompt: "a b c d e f g h i j k", max_tokens: 20, stop: [" "] },
    { prompt: "one", max_tokens: 1 },
  ]) {
    assert.equal(await completionText(fleet.router.url, body), await completionText(fleet.aggregated.url, body), JSON.stringify(body));
  }
  const body = { prompt: "one two three four five", max_tokens: 12, temperature: 0, stream: true };
  const res = await fetch(`${fleet.router.url}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const events = await sseEvents(res);
  const texts = events.slice(0, -1).map((e) => (JSON.parse(e) as { choices: { text: string }[] }).choices[0]!.text);
  assert.equal(texts.join(""), await completionText(fleet.aggregated.url, { ...body, stream: false }));
});

test("a generate call that comes before the state waits for it", async () => {
  const request = { prompt: "red green blue yellow", max_tokens: 8, temperature: 0 };
  const first = await prefillAt(request);
  await generate(String(first.json.handoffId), request, { firstToken: first.json.firstToken, awaitState: true });
  const id = randomUUID();
  const waiting = generate(id, request, { firstToken: first.json.firstToken, awaitState: true });
  await new Promise((r) => setTimeout(r, 150));
  const sent = await prefillAt(request, id);
  assert.equal(sent.status, 200);
  const g = await waiting;
  assert.equal(g.status, 200, JSON.stringify(g.json));
  assert.equal((g.json.choices as { text: string }[])[0]!.text, await completionText(fleet.aggregated.url, request));
});

test("a state that never comes: told by the prefill pod, or of other tokens, the decode pod computes the prompt and answers the same", async () => {
  const request = { prompt: "north south east west", max_tokens: 8, temperature: 0 };
  const expected = await completionText(fleet.aggregated.url, request);
  const first = await prefillAt(request);
  await generate(String(first.json.handoffId), request, { firstToken: first.json.firstToken, awaitState: true });

  const failedBefore = await counter(fleet.decode.url, "llmfleet_kv_handoff_failures_total", 'reason="await_failed"');
  const id = randomUUID();
  const waiting = generate(id, request, { firstToken: first.json.firstToken, awaitState: true });
  await new Promise((r) => setTimeout(r, 50));
  const notice = await fetch(`${fleet.decode.url}/internal/handoff-failed/${id}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ message: "test: decode pod full" }) });
  assert.equal(notice.status, 204);
  const g = await waiting;
  assert.equal(g.status, 200, JSON.stringify(g.json));
  assert.equal((g.json.choices as { text: string }[])[0]!.text, expected);
  assert.equal(await counter(fleet.decode.url, "llmfleet_kv_handoff_failures_total", 'reason="await_failed"'), failedBefore + 1);

  const mismatchBefore = await counter(fleet.decode.url, "llmfleet_kv_handoff_failures_total", 'reason="await_mismatch"');
  const other = randomUUID();
  const waitingOther = generate(other, request, { firstToken: first.json.firstToken, awaitState: true });
  await new Promise((r) => setTimeout(r, 50));
  assert.equal((await prefillAt({ prompt: "an entirely different prompt", max_tokens: 8, temperature: 0 }, other)).status, 200);
  const m = await waitingOther;
  assert.equal(m.status, 200, JSON.stringify(m.json));
  assert.equal((m.json.choices as { text: string }[])[0]!.text, expected);
  assert.equal(await counter(fleet.decode.url, "llmfleet_kv_handoff_failures_total", 'reason="await_mismatch"'), mismatchBefore + 1);
});

test("awaitState needs a firstToken; LLMFLEET_FIRST_TOKEN_AHEAD=0 keeps the send before the answer", async () => {
  const request = { prompt: "hello world", max_tokens: 2, temperature: 0 };
  const bad = await generate(randomUUID(), request, { awaitState: true });
  assert.equal(bad.status, 400);
  assert.match(JSON.stringify(bad.json), /awaitState/);
  process.env.LLMFLEET_FIRST_TOKEN_AHEAD = "0";
  try {
    const p = await prefillAt(request);
    assert.equal(p.json.early, undefined);
    assert.equal(typeof p.json.firstToken, "number");
    const g = await generate(String(p.json.handoffId), request, { firstToken: p.json.firstToken });
    assert.equal(g.status, 200, JSON.stringify(g.json));
  } finally {
    delete process.env.LLMFLEET_FIRST_TOKEN_AHEAD;
  }
});

test("awaitStaged: the state when taken, else a failure notice, a timeout or the client's abort, each named", async () => {
  const failures = new SendFailures();
  const open = { timeoutMs: 1_000, signal: new AbortController().signal };
  let n = 0;
  assert.equal(await awaitStaged("a", () => (++n >= 3 ? "state" : undefined), failures, open), "state");
  const reason = async (p: Promise<unknown>): Promise<string> => {
    const err = await p.then(() => assert.fail("resolved"), (e: unknown) => e);
    assert.ok(err instanceof StagedWaitError);
    return err.reason;
  };
  failures.add("b", "refused");
  assert.equal(await reason(awaitStaged("b", () => undefined, failures, open)), "failed");
  assert.equal(await reason(awaitStaged("c", () => undefined, failures, { ...open, timeoutMs: 30 })), "timeout");
  const abort = new AbortController();
  setTimeout(() => abort.abort(), 20);
  assert.equal(await reason(awaitStaged("d", () => undefined, failures, { timeoutMs: 1_000, signal: abort.signal })), "cancelled");
  assert.equal(failures.take("b"), undefined, "a notice is read once");
});
