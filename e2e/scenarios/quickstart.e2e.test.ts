// Scenario 1: apply examples/quickstart.yaml to the real control plane with kwok GPU nodes and
// the operator running; every pool becomes Ready; completions go client → router Service →
// prefill → decode (real engine processes for the Running pods) and come back.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { eventually } from "../harness/eventually.ts";
import { kubectlOk } from "../harness/kubectl.ts";
import { PodRunner } from "../harness/pod-runner.ts";
import { createKwokGpuNode } from "../../scripts/cluster/kwok-nodes.ts";
import { ensureNamespace, installCRDs, jsonOf } from "../../operator/testing/cluster.ts";
import { startOperator, type OperatorProcess } from "../../operator/testing/operator-process.ts";

const NS = "e2e-quickstart";
let operator: OperatorProcess;
let runner: PodRunner;
const log: string[] = [];

before(async () => {
  await installCRDs();
  await kubectlOk(["delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=60s"]);
  await ensureNamespace(NS);
  await ensureNamespace("llmfleet-system");
  await kubectlOk(["delete", "node", "e2e-gpu-0", "e2e-cpu-0", "--ignore-not-found"]);
  const kubeconfig = process.env.KUBECONFIG ?? "";
  await createKwokGpuNode(kubeconfig, "e2e-gpu-0", {
    gpus: 8,
    labels: { "serving.llmfleet.dev/node-group": "h100" },
    taints: [{ key: "llmfleet.dev/gpu", value: "true", effect: "NoSchedule" }],
  });
  await createKwokGpuNode(kubeconfig, "e2e-cpu-0", { gpus: 0 });
  operator = startOperator({ id: "e2e-quickstart", args: ["--namespace", NS, "--leader-elect", "false"] });
  runner = new PodRunner({ namespace: NS, log: (l) => log.push(l) });
  await runner.start();
});

after(async () => {
  await runner?.[Symbol.asyncDispose]();
  await operator?.stop();
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

test("apply the quickstart: every resource becomes Ready and the router answers on the P/D path", async () => {
  try {
    await kubectlOk(["apply", "-n", NS, "-f", "examples/quickstart.yaml"]);
    await eventually(
      async () => {
        for (const o of ["model/gemma-270m", "prefillpool/gemma-prefill", "decodepool/gemma-decode", "gpunodegroup/h100"]) {
          const obj = await jsonOf<{ status?: { conditions?: Array<{ type: string; status: string }> } }>(["get", "-n", NS, o]);
          assert.equal(obj.status?.conditions?.find((c) => c.type === "Ready")?.status, "True", o);
        }
      },
      { timeoutMs: 90_000, message: "fleet Ready" },
    );
    const router = await runner.serviceURL("gemma-270m-router");
    const answer = await eventually(
      async () => {
        const r = await completion(router);
        assert.equal(r.status, 200, r.text);
        return r.text;
      },
      { timeoutMs: 240_000, intervalMs: 2000, message: "router answers" },
    );
    assert.match(answer, /Paris/);
    const prefill = runner.running().find((e) => e.spec.name.startsWith("gemma-prefill-prefill"));
    const metrics = await (await fetch(`${prefill?.url}/metrics`)).text();
    assert.match(metrics, /llmfleet_kv_handoff_bytes_count\{role="prefill"\} [1-9]/, "the request went through a prefill → decode hand-off");
  } catch (err) {
    console.error(`--- operator ---\n${operator.logs()}\n--- engines ---\n${log.join("\n")}`);
    throw err;
  }
});
