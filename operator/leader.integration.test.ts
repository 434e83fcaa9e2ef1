// Two operator replicas elect one leader through a Lease; when the leader dies the other takes
// over within the lease duration and reconciles.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import type { V1Lease } from "@kubernetes/client-node";
import { eventually } from "../testing/eventually.ts";
import { kubectlOk } from "../testing/kubectl.ts";
import { ensureNamespace, installCRDs, jsonOf } from "../testing/cluster.ts";
import { startOperator, type OperatorProcess } from "../testing/operator-process.ts";

const NS = "it-leader";
const LEASE = "it-leader-lease";
const args = ["--namespace", NS, "--lease-name", LEASE, "--lease-duration", "4", "--retry-period", "1"];
let a: OperatorProcess;
let b: OperatorProcess;

before(async () => {
  await installCRDs();
  await kubectlOk(["delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=60s"]);
  await ensureNamespace(NS);
  await ensureNamespace("llmfleet-system");
  await kubectlOk(["delete", "lease", "-n", "llmfleet-system", LEASE, "--ignore-not-found"]);
});

after(async () => {
  await Promise.all([a?.stop(), b?.stop()]);
});

const holder = async (): Promise<string | undefined> =>
  (await jsonOf<V1Lease>(["get", "lease", "-n", "llmfleet-system", LEASE])).spec?.holderIdentity ?? undefined;

function model(name: string): string {
  return JSON.stringify({
    apiVersion: "serving.llmfleet.dev/v1alpha1",
    kind: "Model",
    metadata: { name, namespace: NS },
    spec: { source: { uri: "file:///m.gguf" } },
  });
}

test("one of two replicas leads; the other stands by without reconciling", async () => {
  a = startOperator({ id: "replica-a", args });
  await eventually(async () => assert.equal(await holder(), "replica-a"), { message: "replica-a leads" });
  b = startOperator({ id: "replica-b", args });
  await eventually(() => assert.match(b.logs(), /waiting for leadership/), { message: "replica-b started" });
  await kubectlOk(["apply", "-f", "-"], { stdin: model("first") });
  await eventually(() => kubectlOk(["get", "deployment", "-n", NS, "first-router"]), { message: "leader reconciles" });
  assert.equal(await holder(), "replica-a");
  assert.doesNotMatch(b.logs(), /became leader/);
});

test("when the leader is killed, the standby takes over within the lease and reconciles", async () => {
  const killedAt = Date.now();
  await a.kill();
  await eventually(async () => assert.equal(await holder(), "replica-b"), { timeoutMs: 20_000, message: "replica-b takes over" });
  const takeover = Date.now() - killedAt;
  assert.ok(takeover < 15_000, `takeover took ${takeover} ms`);
  assert.match(b.logs(), /became leader/);
  await kubectlOk(["apply", "-f", "-"], { stdin: model("second") });
  await eventually(() => kubectlOk(["get", "deployment", "-n", NS, "second-router"]), { message: "new leader reconciles" });
});

test("a leader that stops cleanly releases the lease at once", async () => {
  a = startOperator({ id: "replica-c", args });
  await eventually(() => assert.match(a.logs(), /waiting for leadership/));
  await b.stop();
  await eventually(async () => assert.equal(await holder(), "replica-c"), { timeoutMs: 10_000, message: "replica-c takes the released lease" });
});
