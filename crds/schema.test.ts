import { test } from "node:test";
import assert from "node:assert/strict";
import { KINDS } from "./schema/kinds.ts";
import { buildCRD } from "./generate.ts";
import { RUNTIME_DEFAULTS } from "./schema/runtime.ts";

type Schema = { description?: string; properties?: Record<string, Schema>; items?: Schema; "x-kubernetes-validations"?: unknown[] };

function undocumented(schema: Schema, path: string, out: string[]): string[] {
  for (const [name, child] of Object.entries(schema.properties ?? {})) {
    const p = `${path}.${name}`;
    if (!child.description) out.push(p);
    undocumented(child, p, out);
    if (child.items) undocumented(child.items, `${p}[]`, out);
  }
  return out;
}

test("every spec and status field has a description, so kubectl explain reads well", () => {
  for (const def of KINDS) {
    const crd = buildCRD(def) as { spec: { versions: Array<{ schema: { openAPIV3Schema: Schema } }> } };
    const root = crd.spec.versions[0]?.schema.openAPIV3Schema;
    assert.ok(root);
    const missing = undocumented(root.properties?.spec ?? {}, `${def.kind}.spec`, []).concat(
      undocumented(root.properties?.status ?? {}, `${def.kind}.status`, []),
    );
    assert.deepEqual(missing, [], `${def.kind}: fields without description`);
  }
});

test("pools and Model expose the scale subresource and every kind the status subresource", () => {
  for (const def of KINDS) {
    const crd = buildCRD(def) as { spec: { versions: Array<{ subresources: { status?: object; scale?: { specReplicasPath: string } } }> } };
    const sub = crd.spec.versions[0]?.subresources;
    assert.ok(sub?.status, `${def.kind} status subresource`);
    const scalable = ["Model", "PrefillPool", "DecodePool"].includes(def.kind);
    assert.equal(sub?.scale?.specReplicasPath, scalable ? ".spec.replicas.desired" : undefined, def.kind);
  }
});

test("a structural schema: no additionalProperties beside properties, no TypeBox leftovers", () => {
  const text = JSON.stringify(KINDS.map(buildCRD));
  assert.doesNotMatch(text, /"additionalProperties":false/);
  assert.doesNotMatch(text, /"\$id"|"anyOf":\[\{"const"/);
});

test("Model.spec.runtime states the defaults the operator applies, and refuses native-only fields on backend llama", () => {
  const crd = buildCRD(KINDS.find((k) => k.kind === "Model")!) as { spec: { versions: Array<{ schema: { openAPIV3Schema: Schema } }> } };
  const runtime = crd.spec.versions[0]?.schema.openAPIV3Schema.properties?.spec?.properties?.runtime;
  const described = (field: string): string => runtime?.properties?.[field]?.description ?? "";
  const d = RUNTIME_DEFAULTS;
  assert.match(described("backend"), new RegExp(`Default ${d.backend}\\.`));
  assert.match(described("batchSize"), new RegExp(`Default ${d.batchSize}\\.`));
  assert.match(described("decodeLookahead"), new RegExp(`Default ${d.decodeLookahead}\\.`));
  assert.match(described("pipelineDecode"), new RegExp(`Default ${d.pipelineDecode}\\.`));
  assert.match(described("gpuLayers"), /Default: all \(-1\) on pods with GPUs \(gpusPerReplica > 0\), 0 on CPU pods/);
  assert.match(described("contextSize"), new RegExp(`Default ${d.onGPUs.contextSize} when the Model is on GPUs .*, else ${d.onCPUs.contextSize}\\.`));
  assert.match(described("parallel"), new RegExp(`Default ${d.onGPUs.parallel} when the Model is on GPUs .*, else ${d.onCPUs.parallel}\\.`));
  assert.match(described("flashAttention"), /Default on when the Model is on GPUs .*, else off\./);
  assert.match(described("splitMode"), new RegExp(`Default ${d.splitMode}\\.`));
  assert.deepEqual(
    (runtime?.["x-kubernetes-validations"] as Array<{ message: string }>).map((v) => v.message),
    ["gpuLayers, decodeLookahead, pipelineDecode, ragRecompute, splitMode and tensorSplit apply only to backend native", "tensorSplit needs a share above 0"],
  );
});
