// Scenario 4: GitOps. A sync tool re-applies the same manifests (server-side apply under its own
// field manager, as Argo CD and Flux do): nothing changes, no rollout starts, and replicas the
// autoscaler set through /scale are not reverted.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import type { V1Deployment } from "@kubernetes/client-node";
import { eventually } from "../../testing/eventually.ts";
import { kubectl, kubectlOk } from "../../testing/kubectl.ts";
import { jsonOf } from "../../testing/cluster.ts";
import { touchAndAwaitReconcile } from "../../testing/operator-process.ts";
import type { PrefillPool } from "../../operator/api.ts";
import { quickstartNodes, startFleet, type Fleet } from "./fixture.ts";

const NS = "e2e-gitops";
let fleet: Fleet;
/** The objects examples/quickstart.yaml holds. */
const SYNCED = ["model/gemma-270m", "prefillpool/gemma-prefill", "decodepool/gemma-decode", "kvstore/shared-kv", "gpunodegroup/h100"];
const sync = (): Promise<string> => kubectlOk(["apply", "-n", NS, "--server-side", "--field-manager=gitops-sync", "-f", "examples/quickstart.yaml"]);

before(async () => {
  fleet = await startFleet({ namespace: NS, nodes: quickstartNodes("e2e-g") });
});

after(async () => {
  await fleet?.[Symbol.asyncDispose]();
});

async function generations(): Promise<string[]> {
  const names = ["gemma-270m-router", "gemma-prefill-prefill", "gemma-decode-decode"];
  return Promise.all(names.map(async (d) => `${d}@${(await jsonOf<V1Deployment>(["get", "-n", NS, "deployment", d])).metadata?.generation}`));
}

test("re-syncing the same manifests changes nothing and keeps autoscaled replicas", () =>
  fleet.dumpOnFailure(async () => {
    await sync();
    await eventually(() => jsonOf<V1Deployment>(["get", "-n", NS, "deployment", "gemma-decode-decode"]), { timeoutMs: 60_000 });
    // An autoscaler's write (HPA, KEDA or ours): an update of the scale subresource.
    await kubectlOk(["scale", "-n", NS, "prefillpool", "gemma-prefill", "--replicas=3"]);
    await eventually(async () => assert.equal((await jsonOf<V1Deployment>(["get", "-n", NS, "deployment", "gemma-prefill-prefill"])).spec?.replicas, 3));
    const before = await generations();
    const diff = await kubectl(["diff", "-n", NS, "--server-side", "--field-manager=gitops-sync", "-f", "examples/quickstart.yaml"]);
    assert.equal(diff.code, 0, `a sync would change something:\n${diff.stdout}`);
    assert.match(await sync(), /serverside-applied/);
    // A sync that changes nothing sends the operator no event. Touch the synced objects (metadata
    // only) and wait until each kind has been reconciled since, against the spec the sync left.
    const [operator] = [...fleet.operators.processes.values()];
    assert.ok(operator, "an operator process runs");
    await touchAndAwaitReconcile(operator, NS, SYNCED);
    assert.deepEqual(await generations(), before, "no Deployment changed, so no rollout");
    assert.equal((await jsonOf<PrefillPool>(["get", "-n", NS, "prefillpool", "gemma-prefill"])).spec.replicas.desired, 3, "the autoscaled replicas stand");
    assert.equal((await jsonOf<V1Deployment>(["get", "-n", NS, "deployment", "gemma-prefill-prefill"])).spec?.replicas, 3);
  }));
