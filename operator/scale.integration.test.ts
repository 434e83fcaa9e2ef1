// The operator's request economy on a real API server (issue 25): a node group's status change
// re-queues no pool, one `kubectl scale` applies one Deployment, the slo autoscaler reads pods
// from its cache, the actuator writes no status when nothing changed, and a teardown costs
// fewer than 5 reconciles per object. Counted from the operator's own /metrics.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createKwokGpuNode } from "../scripts/cluster/kwok-nodes.ts";
import { adminClient, ensureNamespace, installCRDs } from "../testing/cluster.ts";
import { eventually } from "../testing/eventually.ts";
import { kubectlOk } from "../testing/kubectl.ts";
import { dumpLogsOnFailure, healthUrl, startOperator, type OperatorProcess } from "../testing/operator-process.ts";
import { childApplies, countRequests, delta, fleetManifests, parseSnapshot, quiescent, statusApplies, type OperatorSnapshot } from "../testing/scale-fleet.ts";
import { R } from "../lib/kube/resources.ts";
import type { PrefillPool } from "./api.ts";

const NS = "it-scale";
const MODELS = 3;
const INTERVAL = 2;
let operator: OperatorProcess;

async function snapshot(): Promise<OperatorSnapshot> {
  return parseSnapshot(await (await fetch(`${healthUrl(operator)}/metrics`)).text());
}

const quiet = (): Promise<number> => quiescent(snapshot, { quietMs: 3 * INTERVAL * 1000, timeoutMs: 180_000 });

async function allPoolsReady(): Promise<void> {
  const admin = adminClient();
  await eventually(
    async () => {
      const pools = [...(await admin.list<PrefillPool>(R.PrefillPool, { namespace: NS })).items, ...(await admin.list<PrefillPool>(R.DecodePool, { namespace: NS })).items];
      assert.equal(pools.length, 2 * MODELS);
      for (const p of pools) assert.ok(p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True"), `${p.metadata?.name} Ready`);
    },
    { timeoutMs: 180_000, intervalMs: 1000, message: "every pool Ready" },
  );
}

before(async () => {
  await installCRDs();
  await kubectlOk(["delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=60s"]);
  await kubectlOk(["delete", "node", "it-scale-cpu", "--ignore-not-found"]);
  await ensureNamespace(NS);
  await createKwokGpuNode(process.env.KUBECONFIG ?? "", "it-scale-cpu", { gpus: 0 });
  operator = startOperator({ id: "it-scale", args: ["--namespace", NS, "--leader-elect", "false", "--autoscale-interval", String(INTERVAL)] });
  await kubectlOk(["apply", "--server-side", "-f", "-"], { stdin: fleetManifests({ namespace: NS, models: MODELS, mode: "slo", externalPools: ["m0-prefill"] }) });
  await dumpLogsOnFailure(operator, async () => {
    await allPoolsReady();
    await quiet();
  });
});

after(async () => {
  await operator.stop();
});

test("at idle: the slo autoscaler lists no pods (it reads its informer's cache) and nothing writes a status that did not change", async () =>
  dumpLogsOnFailure(operator, async () => {
    const before = await snapshot();
    // Five autoscaler and actuator passes over three Models' six pools.
    await new Promise((r) => setTimeout(r, 5 * INTERVAL * 1000));
    const d = delta(before, await snapshot());
    assert.equal(countRequests(d.requests, (verb, resource) => verb === "list" && resource === "pods"), 0, JSON.stringify(d.requests));
    assert.equal(statusApplies(d.requests), 0, `status writes at idle: ${JSON.stringify(d.requests)}`);
    assert.equal(childApplies(d.requests), 0, JSON.stringify(d.requests));
  }));

test("no status write since the operator started left its object unchanged (a comparison that sees a change the API server does not is a flip)", async () =>
  dumpLogsOnFailure(operator, async () => {
    const writes = (await snapshot()).statusWrites;
    const changed = [...writes].filter(([k]) => k.endsWith(" changed")).reduce((a, [, v]) => a + v, 0);
    assert.ok(changed > 0, `the fleet's statuses were written (Ready pools): ${JSON.stringify([...writes])}`);
    const unchanged = [...writes].filter(([k]) => k.endsWith(" unchanged"));
    assert.deepEqual(unchanged, [], `status writes that changed nothing: ${JSON.stringify(unchanged)}`);
  }));

test("a node group's status change re-queues the group alone, not the pools on it", async () =>
  dumpLogsOnFailure(operator, async () => {
    const before = await snapshot();
    // A status write by someone else: the group reconciles (and writes its status back), pools must not.
    await kubectlOk(["patch", "-n", NS, "gpunodegroup", "gpus", "--subresource=status", "--type=merge", "-p", '{"status":{"readyNodes":99}}']);
    await eventually(async () => assert.ok(((await snapshot()).reconciles.get("gpunodegroup") ?? 0) > (before.reconciles.get("gpunodegroup") ?? 0)));
    await quiet();
    const d = delta(before, await snapshot());
    assert.equal(d.reconciles.prefillpool ?? 0, 0, JSON.stringify(d.reconciles));
    assert.equal(d.reconciles.decodepool ?? 0, 0, JSON.stringify(d.reconciles));
    assert.equal(d.reconciles.model ?? 0, 0, JSON.stringify(d.reconciles));
  }));

test("one kubectl scale applies the scaled pool's Deployment and nothing else", async () =>
  dumpLogsOnFailure(operator, async () => {
    const before = await snapshot();
    await kubectlOk(["scale", "-n", NS, "prefillpool", "m0-prefill", "--replicas=3"]);
    await eventually(
      async () => assert.equal((await adminClient().get<PrefillPool>(R.PrefillPool, NS, "m0-prefill")).status?.readyReplicas, 3),
      { timeoutMs: 120_000, intervalMs: 1000, message: "m0-prefill at 3 ready replicas" },
    );
    await quiet();
    const d = delta(before, await snapshot());
    assert.deepEqual(
      Object.entries(d.requests).filter(([k]) => k.startsWith("apply ") && !k.includes("/")),
      [["apply deployments", 1]],
      `child applies: ${JSON.stringify(d.requests)}`,
    );
  }));

test("a teardown costs fewer than 5 reconciles per deleted object", async () =>
  dumpLogsOnFailure(operator, async () => {
    const before = await snapshot();
    await kubectlOk(["delete", "-n", NS, "models,prefillpools,decodepools", "--all", "--wait=false"]);
    await eventually(
      async () => {
        const left = await adminClient().list(R.Deployment, { namespace: NS });
        assert.equal(left.items.length, 0, "deployments left");
      },
      { timeoutMs: 120_000, intervalMs: 1000, message: "the fleet's Deployments gone" },
    );
    await quiet();
    const d = delta(before, await snapshot());
    const reconciles = Object.entries(d.reconciles).filter(([c]) => !c.endsWith("-actuation")).reduce((a, [, v]) => a + v, 0);
    assert.ok(reconciles < 5 * 3 * MODELS, `${reconciles} reconciles for ${3 * MODELS} objects: ${JSON.stringify(d.reconciles)}`);
  }));
