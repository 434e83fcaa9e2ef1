// Scenario 3: faults. A decode engine killed mid-stream, the KV store down, the operator pod
// restarted, the API server restarted: no request hangs, and the fleet recovers each time.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import type { V1Deployment } from "@kubernetes/client-node";
import { restartApiserver } from "../harness/apiserver.ts";
import { eventually } from "../../testing/eventually.ts";
import { kubectlOk } from "../../testing/kubectl.ts";
import { jsonOf } from "../../testing/cluster.ts";
import { quickstartNodes, startFleet, type Fleet } from "./fixture.ts";

const NS = "e2e-faults";
let fleet: Fleet;
let router = "";

before(async () => {
  fleet = await startFleet({ namespace: NS, nodes: quickstartNodes("e2e-f") });
  await kubectlOk(["apply", "-n", NS, "-f", "examples/quickstart.yaml"]);
  router = await fleet.runner.serviceURL("gemma-270m-router");
  await eventually(() => complete("warm-up", 2), { timeoutMs: 240_000, intervalMs: 2000, message: "fleet serves" });
});

after(async () => {
  await fleet?.[Symbol.asyncDispose]();
});

async function complete(prompt: string, maxTokens: number): Promise<string> {
  const res = await fetch(`${router}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "default", prompt, max_tokens: maxTokens, temperature: 0 }),
    signal: AbortSignal.timeout(60_000),
  });
  const text = await res.text();
  assert.equal(res.status, 200, text);
  return text;
}

/** Reads an SSE stream to its end; calls `onFirst` after the first chunk. Resolves with the text read. */
async function stream(onFirst: () => void): Promise<string> {
  const res = await fetch(`${router}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "default", prompt: "Once upon a time", max_tokens: 400, temperature: 0, stream: true }),
  });
  const reader = res.body?.getReader();
  let text = "";
  let first = true;
  for (;;) {
    const chunk = await reader?.read().catch(() => ({ done: true, value: undefined }));
    if (!chunk || chunk.done) return text;
    text += new TextDecoder().decode(chunk.value);
    if (first) onFirst();
    first = false;
  }
}

test("a decode engine killed mid-stream ends the stream (no hang) and the fleet serves again", () =>
  fleet.dumpOnFailure(async () => {
    let killed = "";
    const started = Date.now();
    const text = await stream(() => (killed = fleet.runner.kill("gemma-decode-decode")));
    assert.ok(killed, "the decode engine was killed after the first token");
    assert.ok(Date.now() - started < 60_000, "the stream ended instead of hanging");
    assert.doesNotMatch(text, /data: \[DONE\][\s\S]*finish_reason":"length/, "a killed stream does not pretend to have finished");
    await eventually(() => complete("after the decode restart", 2), { timeoutMs: 120_000, intervalMs: 2000, message: "serves after decode restart" });
    assert.ok(fleet.runner.restartCount(killed) >= 1);
  }));

test("with the KV store down, requests are still answered (prefill recomputes)", () =>
  fleet.dumpOnFailure(async () => {
    const store = fleet.runner.kill("shared-kv-kvstore", { hold: true });
    try {
      assert.match(await complete("The capital of France is the city of", 4), /Paris/);
    } finally {
      fleet.runner.release(store);
    }
  }));

test("a restarted operator pod takes over and reconciles", () =>
  fleet.dumpOnFailure(async () => {
    const sys = `${NS}-system`;
    const before = [...fleet.operators.processes.keys()];
    await kubectlOk(["delete", "pod", "-n", sys, "-l", "app.kubernetes.io/name=llmfleet-operator", "--wait=false"]);
    await eventually(
      () =>
        assert.ok(
          [...fleet.operators.processes.keys()].some((p) => !before.includes(p)),
          "a new operator pod runs",
        ),
      { timeoutMs: 90_000 },
    );
    await kubectlOk(["scale", "-n", NS, "decodepool", "gemma-decode", "--replicas=2"]);
    await eventually(async () => assert.equal((await jsonOf<V1Deployment>(["get", "-n", NS, "deployment", "gemma-decode-decode"])).spec?.replicas, 2), {
      timeoutMs: 90_000,
      message: "the new operator reconciles",
    });
  }));

test("while the API server restarts, the fleet keeps serving; afterwards the operator reconciles again", () =>
  fleet.dumpOnFailure(async () => {
    const serving = complete("The capital of France is the city of", 4);
    await restartApiserver(3000);
    assert.match(await serving, /Paris/);
    await kubectlOk(["scale", "-n", NS, "decodepool", "gemma-decode", "--replicas=1"]);
    await eventually(async () => assert.equal((await jsonOf<V1Deployment>(["get", "-n", NS, "deployment", "gemma-decode-decode"])).spec?.replicas, 1), {
      timeoutMs: 120_000,
      message: "reconciles after the API server came back",
    });
    await eventually(() => complete("after the API server restart", 2), { timeoutMs: 120_000, intervalMs: 2000 });
  }));
