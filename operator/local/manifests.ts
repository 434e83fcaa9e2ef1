// Reads the same custom resources users apply to a cluster, for the local fleet: schema defaults
// and validation come from the CRD schemas themselves (TypeBox), so a manifest that a cluster
// would refuse for its schema is refused here too, naming the field.
import { readFileSync } from "node:fs";
import { TypeRegistry, type TSchema } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";
import { parseAllDocuments } from "yaml";
import { KINDS } from "../../crds/schema/kinds.ts";
import { API_VERSION } from "../../crds/schema/common.ts";
import type { DecodePool, GPUNodeGroup, KVStore, Model, PrefillPool } from "../api.ts";

export const LOCAL_NAMESPACE = "local";

export interface LocalFleetSpec {
  models: Model[];
  prefillPools: PrefillPool[];
  decodePools: DecodePool[];
  kvStores: KVStore[];
  nodeGroups: GPUNodeGroup[];
}

interface RawObject {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string };
  spec?: unknown;
}

interface UnsafeSchema {
  type?: string;
  enum?: unknown[];
  pattern?: string;
  maxLength?: number;
  items?: TSchema;
  "x-kubernetes-int-or-string"?: boolean;
}

function matches(schema: UnsafeSchema, value: unknown): boolean {
  if (typeof value !== "string") return false;
  return (schema.pattern === undefined || new RegExp(schema.pattern).test(value)) && (schema.maxLength === undefined || value.length <= schema.maxLength);
}

/** Checks the Type.Unsafe schemas (enums, durations, quantities, lists, maps) by their JSON-schema fields. */
function checkUnsafe(schema: UnsafeSchema, value: unknown): boolean {
  if (schema.enum) return schema.enum.includes(value);
  if (schema["x-kubernetes-int-or-string"]) return Number.isInteger(value) || matches(schema, value);
  if (schema.type === "string") return matches(schema, value);
  if (schema.type === "array") return Array.isArray(value) && value.every((v) => !schema.items || Value.Check(schema.items, v));
  if (schema.type === "object") return typeof value === "object" && value !== null && Object.values(value).every((v) => typeof v === "string");
  return true;
}

if (!TypeRegistry.Has("Unsafe")) TypeRegistry.Set("Unsafe", (schema, value) => checkUnsafe(schema as UnsafeSchema, value));

function checked(raw: RawObject, source: string): RawObject & { spec: unknown } {
  const def = KINDS.find((k) => k.kind === raw.kind);
  const name = raw.metadata?.name;
  if (raw.apiVersion !== API_VERSION || !def) throw new Error(`${source}: ${raw.apiVersion}/${raw.kind} is not an llmfleet kind (${API_VERSION})`);
  if (!name) throw new Error(`${source}: ${raw.kind} without metadata.name`);
  const spec = Value.Default(def.spec, structuredClone(raw.spec ?? {}));
  const first = [...Value.Errors(def.spec, spec)][0];
  if (first) throw new Error(`${source}: ${raw.kind} ${name}: spec${first.path.replaceAll("/", ".")}: ${first.message}`);
  return { ...raw, spec };
}

export function readFleet(path: string): LocalFleetSpec {
  const fleet: LocalFleetSpec = { models: [], prefillPools: [], decodePools: [], kvStores: [], nodeGroups: [] };
  const lists: Record<string, unknown[]> = {
    Model: fleet.models,
    PrefillPool: fleet.prefillPools,
    DecodePool: fleet.decodePools,
    KVStore: fleet.kvStores,
    GPUNodeGroup: fleet.nodeGroups,
  };
  parseAllDocuments(readFileSync(path, "utf8")).forEach((doc, i) => {
    if (doc.errors.length > 0) throw new Error(`${path}: document ${i + 1}: ${doc.errors[0]?.message}`);
    const raw = doc.toJS() as RawObject | null;
    if (!raw) return;
    const obj = checked(raw, `${path} document ${i + 1}`);
    const name = obj.metadata?.name ?? "";
    lists[obj.kind ?? ""]?.push({ ...obj, metadata: { name, namespace: LOCAL_NAMESPACE, uid: `local-${obj.kind}-${name}`, generation: 1 } });
  });
  if (fleet.models.length === 0) throw new Error(`${path}: no Model to serve`);
  return fleet;
}
