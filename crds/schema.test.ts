import { test } from "node:test";
import assert from "node:assert/strict";
import { KINDS } from "./schema/kinds.ts";
import { buildCRD } from "./generate.ts";

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
