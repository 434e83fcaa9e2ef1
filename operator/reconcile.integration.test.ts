// The operator against a real API server, scheduler and kwok GPU nodes: children with owner
// references, status, drift repair, /scale, late references, an invalid spec and idempotent
// re-applies.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import type { V1Deployment, V1Service, V1StatefulSet } from "@kubernetes/client-node";
import { eventually } from "../testing/eventually.ts";
import { kubectl, kubectlOk } from "../testing/kubectl.ts";
import { createKwokGpuNode } from "../scripts/cluster/kwok-nodes.ts";
import type { Model, PrefillPool } from "./api.ts";
import { ensureNamespace, installCRDs, jsonOf } from "../testing/cluster.ts";
import { dumpLogsOnFailure, healthUrl, startOperator, touchAndAwaitReconcile, type OperatorProcess } from "../testing/operator-process.ts";

const NS = "it-reconcile";
const n = ["-n", NS];
let operator: OperatorProcess;

before(async () => {
  await installCRDs();
  // Idempotent on a reused cluster (KUBECONFIG_REUSE=1): start from a clean namespace and nodes.
  await kubectlOk(["delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=60s"]);
  await kubectlOk(["delete", "node", "it-gpu-0", "it-cpu-0", "--ignore-not-found"]);
  await ensureNamespace(NS);
  await ensureNamespace("llmfleet-system");
  const kubeconfig = process.env.KUBECONFIG ?? "";
  const gpuNode = {
    gpus: 8,
    labels: { "serving.llmfleet.dev/node-group": "h100" },
    taints: [{ key: "llmfleet.dev/gpu", value: "true", effect: "NoSchedule" }],
  };
  await createKwokGpuNode(kubeconfig, "it-gpu-0", gpuNode);
  await createKwokGpuNode(kubeconfig, "it-cpu-0", { gpus: 0 });
  operator = startOperator({ id: "it-reconcile", args: ["--namespace", NS, "--leader-elect", "false"] });
  await kubectlOk(["apply", ...n, "-f", "examples/quickstart.yaml"]);
});

after(async () => {
  await operator.stop();
});

async function deployment(name: string): Promise<V1Deployment> {
  return jsonOf<V1Deployment>(["get", ...n, "deployment", name]);
}

test("each kind gets its children, owned by it, and every pool becomes Ready on kwok GPU nodes", async () =>
  dumpLogsOnFailure(operator, async () => {
    const owners: Array<[string, string, string]> = [
      ["deployment", "gemma-270m-router", "Model"],
      ["service", "gemma-270m-router", "Model"],
      ["deployment", "gemma-prefill-prefill", "PrefillPool"],
      ["service", "gemma-prefill-prefill", "PrefillPool"],
      ["poddisruptionbudget", "gemma-prefill-prefill", "PrefillPool"],
      ["deployment", "gemma-decode-decode", "DecodePool"],
      ["poddisruptionbudget", "gemma-decode-decode", "DecodePool"],
      ["statefulset", "shared-kv-kvstore", "KVStore"],
      ["service", "shared-kv-kvstore", "KVStore"],
    ];
    for (const [kind, name, ownerKind] of owners) {
      const obj = await eventually(() => jsonOf<V1Service>(["get", ...n, kind, name]), { message: `${kind}/${name}` });
      const ref = obj.metadata?.ownerReferences?.[0];
      assert.equal(ref?.kind, ownerKind, `${kind}/${name} owner`);
      assert.equal(ref?.controller, true);
    }
    await eventually(
      async () => {
        for (const kind of ["prefillpool/gemma-prefill", "decodepool/gemma-decode", "kvstore/shared-kv", "model/gemma-270m", "gpunodegroup/h100"]) {
          const obj = await jsonOf<{ status?: { conditions?: Array<{ type: string; status: string }> } }>(["get", ...n, kind]);
          assert.equal(obj.status?.conditions?.find((c) => c.type === "Ready")?.status, "True", `${kind} Ready`);
        }
      },
      { timeoutMs: 60_000, message: "all Ready" },
    );
  }));

test("engine pods carry the wiring, GPU requests and the node group's placement", async () => {
  const prefill = await deployment("gemma-prefill-prefill");
  const pod = prefill.spec?.template.spec;
  const args = pod?.containers[0]?.args ?? [];
  assert.equal(args[args.indexOf("--decode") + 1], `http://gemma-decode-decode.${NS}.svc:8000`);
  assert.equal(args[args.indexOf("--kv-store") + 1], `http://shared-kv-kvstore.${NS}.svc:8000`);
  assert.equal(pod?.containers[0]?.resources?.limits?.["nvidia.com/gpu"], "1");
  assert.equal(pod?.nodeSelector?.["serving.llmfleet.dev/node-group"], "h100");
  assert.ok(pod?.tolerations?.some((tol) => tol.key === "llmfleet.dev/gpu"));
  const router = (await deployment("gemma-270m-router")).spec?.template.spec?.containers[0]?.args ?? [];
  assert.equal(router[router.indexOf("--prefill") + 1], `http://gemma-prefill-prefill.${NS}.svc:8000`);
  const pods = await jsonOf<{ items: Array<{ spec: { nodeName?: string }; status: { phase: string } }> }>([
    "get",
    ...n,
    "pods",
    "-l",
    "app.kubernetes.io/component=prefill",
  ]);
  assert.equal(pods.items[0]?.spec.nodeName, "it-gpu-0");
  const model = await jsonOf<Model>(["get", ...n, "model", "gemma-270m"]);
  assert.equal(model.status?.endpoint, `http://gemma-270m-router.${NS}.svc`);
});

test("drift is repaired: a deleted child comes back, an edited one is restored", async () =>
  dumpLogsOnFailure(operator, async () => {
    const before = await deployment("gemma-decode-decode");
    await kubectlOk(["delete", ...n, "deployment", "gemma-decode-decode", "--wait=false"]);
    await eventually(async () => assert.notEqual((await deployment("gemma-decode-decode")).metadata?.uid, before.metadata?.uid), {
      message: "deployment recreated",
    });
    await kubectlOk(["scale", ...n, "deployment", "gemma-prefill-prefill", "--replicas=5"]);
    await kubectlOk(["set", "image", ...n, "deployment/gemma-prefill-prefill", "engine=rogue:1"]);
    await eventually(
      async () => {
        const d = await deployment("gemma-prefill-prefill");
        assert.equal(d.spec?.replicas, 1);
        assert.equal(d.spec?.template.spec?.containers[0]?.image, "llmfleet/engine:0.1.0-cuda", "the GPU pool's image, restored");
      },
      { message: "drift repaired" },
    );
    await kubectlOk(["delete", ...n, "service", "shared-kv-kvstore", "--wait=false"]);
    await eventually(() => jsonOf<V1Service>(["get", ...n, "service", "shared-kv-kvstore"]), { message: "service recreated" });
  }));

test("kubectl scale on a pool drives its Deployment; beyond max is refused", async () => {
  await kubectlOk(["scale", ...n, "prefillpool", "gemma-prefill", "--replicas=3"]);
  await eventually(async () => assert.equal((await deployment("gemma-prefill-prefill")).spec?.replicas, 3), { message: "deployment scaled" });
  await eventually(async () => {
    const pool = await jsonOf<PrefillPool>(["get", ...n, "prefillpool", "gemma-prefill"]);
    assert.equal(pool.status?.desiredReplicas, 3);
    assert.equal(pool.status?.readyReplicas, 3);
  });
  const raw = await kubectlOk(["get", "--raw", `/apis/serving.llmfleet.dev/v1alpha1/namespaces/${NS}/prefillpools/gemma-prefill/scale`]);
  const scale = JSON.parse(raw) as { spec: { replicas: number }; status: { replicas: number; selector: string } };
  assert.equal(scale.spec.replicas, 3);
  assert.match(scale.status.selector, /app.kubernetes.io\/component=prefill/);
  const res = await kubectl(["scale", ...n, "prefillpool", "gemma-prefill", "--replicas=99"]);
  assert.notEqual(res.code, 0);
  assert.match(res.stderr, /spec.replicas.desired.*desired must be between min and max/);
});

test("a pool whose Model does not exist says so, and reconciles as soon as it appears", async () =>
  dumpLogsOnFailure(operator, async () => {
    const pool = `{"apiVersion":"serving.llmfleet.dev/v1alpha1","kind":"DecodePool","metadata":{"name":"late"},"spec":{"modelRef":{"name":"late-model"},"gpusPerReplica":0,"replicas":{"min":1,"max":2}}}`;
    await kubectlOk(["apply", ...n, "-f", "-"], { stdin: pool });
    await eventually(async () => {
      const p = await jsonOf<PrefillPool>(["get", ...n, "decodepool", "late"]);
      const cond = p.status?.conditions?.find((c) => c.type === "ReferencesResolved");
      assert.equal(cond?.reason, "ModelNotFound");
      assert.match(cond?.message ?? "", /Model "late-model" not found/);
    });
    assert.notEqual((await kubectl(["get", ...n, "deployment", "late-decode"])).code, 0, "no children while unresolved");
    await kubectlOk(["apply", ...n, "-f", "-"], {
      stdin: `{"apiVersion":"serving.llmfleet.dev/v1alpha1","kind":"Model","metadata":{"name":"late-model"},"spec":{"source":{"uri":"file:///models/x.gguf"}}}`,
    });
    await eventually(() => deployment("late-decode"), { message: "pool reconciled after its Model appeared" });
    await eventually(async () => {
      const p = await jsonOf<PrefillPool>(["get", ...n, "decodepool", "late"]);
      assert.equal(p.status?.conditions?.find((c) => c.type === "ReferencesResolved")?.status, "True");
    });
  }));

test("a pool whose Model runs an engine pools cannot use is InvalidSpec with a Warning Event, and is reconciled once the Model changes", async () =>
  dumpLogsOnFailure(operator, async () => {
    // Its own Model and no node group, so the quickstart fleet the next test checks is untouched.
    const model = (engine: string, format: string): string =>
      `{"apiVersion":"serving.llmfleet.dev/v1alpha1","kind":"Model","metadata":{"name":"other-engine"},"spec":{"source":{"uri":"file:///models/x","format":"${format}"},"runtime":{"engine":"${engine}"}}}`;
    const pool = `{"apiVersion":"serving.llmfleet.dev/v1alpha1","kind":"DecodePool","metadata":{"name":"other-engine"},"spec":{"modelRef":{"name":"other-engine"},"gpusPerReplica":0,"replicas":{"min":1,"max":2}}}`;
    await kubectlOk(["apply", ...n, "-f", "-"], { stdin: model("vllm", "safetensors") });
    await kubectlOk(["apply", ...n, "-f", "-"], { stdin: pool });
    await eventually(async () => {
      const p = await jsonOf<PrefillPool>(["get", ...n, "decodepool", "other-engine"]);
      const ready = p.status?.conditions?.find((c) => c.type === "Ready");
      assert.equal(ready?.reason, "InvalidSpec");
      assert.match(ready?.message ?? "", /Model "other-engine" has runtime.engine vllm; prefill and decode pools run only the bundled engine/);
      const m = await jsonOf<Model>(["get", ...n, "model", "other-engine"]);
      assert.equal(m.status?.conditions?.find((c) => c.type === "Ready")?.reason, "InvalidSpec");
    });
    const events = await jsonOf<{ items: Array<{ type: string; reason: string; regarding: { kind: string; name: string } }> }>([
      "get",
      "events.events.k8s.io",
      ...n,
    ]);
    const warned = events.items.filter((e) => e.regarding.name === "other-engine" && e.type === "Warning" && e.reason === "InvalidSpec");
    assert.deepEqual(warned.map((e) => e.regarding.kind).sort(), ["DecodePool", "Model"], "a Warning Event on each says why");
    assert.match(operator.logs(), /reconcile DecodePool\/it-reconcile\/other-engine: invalid spec, not retried until it changes/);
    for (const d of ["other-engine-decode", "other-engine-router"]) {
      assert.notEqual((await kubectl(["get", ...n, "deployment", d])).code, 0, `no ${d} for an invalid spec`);
    }
    await kubectlOk(["apply", ...n, "-f", "-"], { stdin: model("bundled", "gguf") });
    await eventually(() => deployment("other-engine-decode"), { message: "pool reconciled once its Model was fixed" });
    await eventually(() => deployment("other-engine-router"), { message: "Model reconciled once fixed" });
  }));

test("re-applying the same manifests changes nothing and triggers no rollout", async () => {
  const names = ["gemma-270m-router", "gemma-prefill-prefill", "gemma-decode-decode"];
  const objects = ["prefillpool/gemma-prefill", "decodepool/gemma-decode", "model/gemma-270m", "kvstore/shared-kv", "gpunodegroup/h100"];
  const snapshot = async (): Promise<string[]> => Promise.all(names.map(async (d) => `${d}@${(await deployment(d)).metadata?.generation}`));
  const sts = async (): Promise<number | undefined> => (await jsonOf<V1StatefulSet>(["get", ...n, "statefulset", "shared-kv-kvstore"])).metadata?.generation;
  const rv = async (): Promise<string[]> =>
    Promise.all(objects.map(async (o) => `${o}@${(await jsonOf<PrefillPool>(["get", ...n, o])).metadata?.resourceVersion}`));
  const before = await snapshot();
  const stsBefore = await sts();
  const rvBefore = await rv();
  const out = await kubectlOk(["apply", ...n, "-f", "examples/quickstart.yaml"]);
  assert.doesNotMatch(out, /configured/, "kubectl reports every object unchanged");
  assert.deepEqual(await rv(), rvBefore, "the re-apply wrote nothing");
  // So it sent the operator no event. Touch every re-applied object (metadata only) and wait until
  // each kind's controller has reconciled since: a reconcile that rewrote a status or a child has
  // done so by then, and the assertions below see it.
  const touched = await touchAndAwaitReconcile(operator, NS, objects);
  assert.deepEqual(await snapshot(), before);
  assert.deepEqual(await rv(), touched, "no status is rewritten when nothing changed");
  assert.equal(await sts(), stsBefore);
  const pool = await jsonOf<PrefillPool>(["get", ...n, "prefillpool", "gemma-prefill"]);
  assert.equal(pool.spec.replicas.desired, 3, "replicas set through /scale are not reverted by a re-apply");
});

test("the operator serves /healthz, /readyz and its reconcile metrics", async () => {
  const base = healthUrl(operator);
  assert.equal((await fetch(`${base}/healthz`)).status, 200);
  assert.equal((await fetch(`${base}/readyz`)).status, 200);
  const metrics = await (await fetch(`${base}/metrics`)).text();
  const ok = /llmfleet_operator_reconcile_duration_seconds_count\{controller="prefillpool",result="ok"\} (\d+)/.exec(metrics);
  assert.ok(Number(ok?.[1]) > 0, "reconcile durations are recorded");
  assert.match(metrics, /llmfleet_operator_workqueue_depth \d+/);
  assert.match(metrics, /llmfleet_operator_reconcile_errors_total|# TYPE llmfleet_operator_reconcile_errors_total counter/);
});
