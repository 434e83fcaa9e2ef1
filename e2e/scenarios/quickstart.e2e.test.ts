// Scenario 1: the operator installed from the chart; apply examples/quickstart.yaml; every
// resource becomes Ready; completions go client → router Service → prefill → decode (real engine
// processes for the Running pods) and come back.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { eventually } from "../../testing/eventually.ts";
import { kubectlOk } from "../../testing/kubectl.ts";
import { jsonOf } from "../../testing/cluster.ts";
import { quickstartNodes, startFleet, type Fleet } from "./fixture.ts";

const NS = "e2e-quickstart";
let fleet: Fleet;

before(async () => {
  fleet = await startFleet({ namespace: NS, nodes: quickstartNodes("e2e") });
});

after(async () => {
  await fleet?.[Symbol.asyncDispose]();
});

async function completion(url: string): Promise<{ status: number; text: string }> {
  const res = await fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "default", prompt: "The capital of France is the city of", max_tokens: 4, temperature: 0 }),
  });
  const body = (await res.json()) as { choices?: Array<{ text: string }> };
  return { status: res.status, text: body.choices?.[0]?.text ?? JSON.stringify(body) };
}

test("apply the quickstart: every resource becomes Ready and the router answers on the P/D path", () =>
  fleet.dumpOnFailure(async () => {
    await kubectlOk(["apply", "-n", NS, "-f", "examples/quickstart.yaml"]);
    await eventually(
      async () => {
        for (const o of ["model/gemma-270m", "prefillpool/gemma-prefill", "decodepool/gemma-decode", "kvstore/shared-kv", "gpunodegroup/h100"]) {
          const obj = await jsonOf<{ status?: { conditions?: Array<{ type: string; status: string }> } }>(["get", "-n", NS, o]);
          assert.equal(obj.status?.conditions?.find((c) => c.type === "Ready")?.status, "True", o);
        }
      },
      { timeoutMs: 90_000, message: "fleet Ready" },
    );
    const router = await fleet.runner.serviceURL("gemma-270m-router");
    const answer = await eventually(
      async () => {
        const r = await completion(router);
        assert.equal(r.status, 200, r.text);
        return r.text;
      },
      { timeoutMs: 240_000, intervalMs: 2000, message: "router answers" },
    );
    assert.match(answer, /Paris/);
    const prefill = fleet.runner.running().find((e) => e.spec.name.startsWith("gemma-prefill-prefill"));
    const metrics = await (await fetch(`${prefill?.url}/metrics`)).text();
    assert.match(metrics, /llmfleet_kv_handoff_bytes_count\{role="prefill"\} [1-9]/, "the request went through a prefill → decode hand-off");
  }));
