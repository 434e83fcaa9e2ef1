// The pulumi provider for real, offline: the operator (operator/main.ts, its own process) runs an
// Automation API stack per GPUNodeGroup with the Pulumi CLI built from its Go modules
// (scripts/pulumi/build.sh), a file:// backend in a temp dir, and the kwok program, whose dynamic
// provider creates and deletes kwok Nodes through this apiserver. Demand up → a run → Nodes appear;
// demand down → Nodes go after the delay; the operator killed mid-run → the next one marks the run
// Aborted and halts the group until the run is acknowledged.
import { TEST_MODEL_YAML } from "../../testing/manifests.ts";
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eventually } from "../../testing/eventually.ts";
import { kubectl, kubectlOk } from "../../testing/kubectl.ts";
import type { GPUNodeGroup } from "../api.ts";
import type { NodeGroupRun } from "../../crds/schema/nodegroup.ts";
import { ensurePulumi } from "../../scripts/pulumi/bins.ts";
import { R } from "../../lib/kube/resources.ts";
import { adminClient, ensureNamespace, installCRDs, jsonOf } from "../../testing/cluster.ts";
import { dumpLogsOnFailure, reconcileCounts, reconciledSince, startOperator, type OperatorProcess } from "../../testing/operator-process.ts";
import { ACTUATION_CONTROLLER } from "./controller.ts";
import { ACK_RUN_ANNOTATION } from "./provider.ts";
import { runState } from "./runs.ts";

const NS = "it-pulumi";
const GROUP = "itpl";
const SELECTOR = `serving.llmfleet.dev/node-group=${GROUP}`;
let env: Record<string, string> = {};
let state = "";
let operator: OperatorProcess | undefined;

const manifests = `
${TEST_MODEL_YAML}
---
apiVersion: serving.llmfleet.dev/v1alpha1
kind: GPUNodeGroup
metadata: {name: ${GROUP}}
spec:
  provider: {kind: pulumi, pulumi: {cloud: kwok}}
  gpusPerNode: 2
  nodes: {min: 1, max: 4}
  scaleDownDelay: 6s
  provisioningTime: 1s
---
apiVersion: serving.llmfleet.dev/v1alpha1
kind: PrefillPool
metadata: {name: p}
spec: {modelRef: {name: m}, nodeGroupRef: {name: ${GROUP}}, gpusPerReplica: 1, replicas: {min: 1, max: 8, desired: 3}}
`;

function start(id: string): OperatorProcess {
  operator = startOperator({ id, args: ["--namespace", NS, "--leader-elect", "false", "--autoscale-interval", "1"], env });
  return operator;
}

before(async () => {
  const root = await ensurePulumi();
  state = mkdtempSync(join(tmpdir(), "llmfleet-pulumi-"));
  mkdirSync(join(state, "backend"));
  mkdirSync(join(state, "tmp"));
  env = {
    LLMFLEET_PULUMI_ROOT: root,
    PULUMI_BACKEND_URL: `file://${state}/backend`,
    PULUMI_HOME: join(state, "home"),
    PULUMI_CONFIG_PASSPHRASE: "integration-test",
    TMPDIR: join(state, "tmp"), // the stacks' work dirs
  };
  await installCRDs();
  await kubectlOk(["delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=60s"]);
  await kubectlOk(["delete", "nodes", "-l", SELECTOR, "--ignore-not-found"]);
  await ensureNamespace(NS);
  await kubectlOk(["apply", "-n", NS, "-f", "-"], { stdin: manifests });
});

after(async () => {
  await operator?.stop();
  await kubectlOk(["delete", "nodes", "-l", SELECTOR, "--ignore-not-found"]);
  rmSync(state, { recursive: true, force: true });
});

const group = (): Promise<GPUNodeGroup> => jsonOf<GPUNodeGroup>(["get", "-n", NS, "gpunodegroup", GROUP]);
const lastRun = async (): Promise<NodeGroupRun | undefined> => (await group()).status?.actuation?.lastRun;
const nodeNames = async (): Promise<string[]> =>
  (await jsonOf<{ items: { metadata: { name: string } }[] }>(["get", "nodes", "-l", SELECTOR])).items.map((n) => n.metadata.name).sort();
const setDesired = (n: number): Promise<string> =>
  kubectlOk(["patch", "-n", NS, "prefillpool", "p", "--type=merge", "-p", JSON.stringify({ spec: { replicas: { desired: n } } })]);

async function expectNodes(names: string[], message: string): Promise<void> {
  await eventually(
    async () => {
      const act = (await group()).status?.actuation;
      const run = act?.lastRun;
      assert.equal(runState(run), "Complete", JSON.stringify(act));
      assert.deepEqual(await nodeNames(), names);
      assert.equal(run?.provider, "pulumi");
      assert.equal(run?.targetNodes, names.length);
    },
    { timeoutMs: 180_000, intervalMs: 500, message },
  );
}

test("the group follows demand through Pulumi runs: up, then down after the delay", async () => {
  const op = start("it-pulumi-a");
  await dumpLogsOnFailure(op, async () => {
    await expectNodes([`${GROUP}-0`, `${GROUP}-1`], "3 GPUs → 2 nodes through a pulumi run");
    const first = await group();
    assert.match(first.status?.actuation?.lastRun?.message ?? "", /^pulumi up on stack it-pulumi-itpl: succeeded \(create \d+/);
    assert.equal(first.status?.actuation?.desiredNodes, 2);
    await setDesired(7);
    await expectNodes([`${GROUP}-0`, `${GROUP}-1`, `${GROUP}-2`, `${GROUP}-3`], "7 GPUs → 4 nodes");
    await setDesired(1);
    await eventually(async () => assert.match((await group()).status?.actuation?.decision ?? "", /^surplus of 3 nodes, removed at/), {
      timeoutMs: 30_000,
      message: "the surplus waits out the scale-down delay, explained in status",
    });
    assert.equal((await nodeNames()).length, 4, "nothing removed inside the delay");
    await expectNodes([`${GROUP}-0`], "1 GPU → 1 node after the delay (newest removed first)");
    await eventually(async () => assert.match((await group()).status?.actuation?.decision ?? "", /^steady at 1 nodes: GPU demand 1 \/ 2 per node = 1/), {
      message: "the next pass finds the group at its desired size",
    });
  });
});

test("an operator killed mid-run leaves the run Progressing; the next operator marks it Aborted and halts until acknowledged", async () => {
  const before = (await lastRun())?.id ?? 0;
  await setDesired(5);
  // Read through the API directly (not kubectl) so a run of a few seconds is not missed.
  const client = adminClient();
  await eventually(
    async () => {
      const g = await client.get<GPUNodeGroup>(R.GPUNodeGroup, NS, GROUP);
      assert.equal(runState(g.status?.actuation?.lastRun), "Progressing");
    },
    { timeoutMs: 60_000, intervalMs: 20, message: "a run in progress" },
  );
  await operator?.kill();
  const cut = await lastRun();
  assert.equal(cut?.id, before + 1);
  const op = start("it-pulumi-b");
  await dumpLogsOnFailure(op, async () => {
    await eventually(async () => assert.equal(runState(await lastRun()), "Aborted"), { timeoutMs: 30_000, message: "the cut-short run is Aborted" });
    const g = await group();
    const aborted = g.status?.actuation?.lastRun;
    assert.equal(aborted?.id, cut?.id, "marked, not re-run");
    assert.match(aborted?.message ?? "", /not re-run/);
    assert.deepEqual(
      aborted?.conditions.map((c) => [c.type, c.status]),
      [
        ["Progressing", "False"],
        ["Complete", "False"],
        ["Failed", "True"],
        ["Aborted", "True"],
      ],
    );
    await eventually(async () => assert.match((await group()).status?.actuation?.decision ?? "", /^halted: run \d+ was aborted/), { timeoutMs: 30_000 });
    // Two more actuator passes (the first may be the one that wrote the halt): a pass that started
    // a run records it in lastRun before it ends, so a broken halt fails the assertion.
    await reconciledSince(op, await reconcileCounts(op), [ACTUATION_CONTROLLER], { passes: 2 });
    assert.equal((await lastRun())?.id, cut?.id, "halted: no new run while unacknowledged");
    await kubectlOk(["annotate", "-n", NS, "gpunodegroup", GROUP, `${ACK_RUN_ANNOTATION}=${cut?.id}`]);
    await expectNodes([`${GROUP}-0`, `${GROUP}-1`, `${GROUP}-2`], "acknowledged: the next run brings 5 GPUs → 3 nodes");
    assert.equal((await lastRun())?.id, (cut?.id ?? 0) + 1);
  });
});

test("the apiserver refuses an aws or gcp group without cluster and nodeGroup; kwok needs neither", async () => {
  const spec = (pulumi: Record<string, string>): string =>
    JSON.stringify({
      apiVersion: "serving.llmfleet.dev/v1alpha1",
      kind: "GPUNodeGroup",
      metadata: { name: "itpl-invalid", namespace: NS },
      spec: { provider: { kind: "pulumi", pulumi }, gpusPerNode: 8, nodes: { min: 0, max: 2 } },
    });
  const refused = await kubectl(["apply", "--dry-run=server", "-f", "-"], { stdin: spec({ cloud: "aws", cluster: "prod" }) });
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /spec\.provider\.pulumi\.cluster: Required value: cluster and nodeGroup are required for aws and gcp/);
  await kubectlOk(["apply", "--dry-run=server", "-f", "-"], { stdin: spec({ cloud: "gcp", cluster: "prod", nodeGroup: "h100" }) });
  await kubectlOk(["apply", "--dry-run=server", "-f", "-"], { stdin: spec({ cloud: "kwok" }) });
});
