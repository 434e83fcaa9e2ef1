// Building blocks shared by every llmfleet custom resource. These TypeBox schemas are the one
// source of truth: the TypeScript types are inferred from them (Static<>), and crds/generate.ts
// turns them into the CRD YAML. Every field carries a description so `kubectl explain` reads well.
import { Type, type Static, type TSchema, type TUnsafe, type ObjectOptions } from "@sinclair/typebox";

export const GROUP = "serving.llmfleet.dev";
export const VERSION = "v1alpha1";
export const API_VERSION = `${GROUP}/${VERSION}`;

export interface CelRule {
  rule: string;
  message: string;
  fieldPath?: string;
  reason?: "FieldValueInvalid" | "FieldValueRequired" | "FieldValueForbidden" | "FieldValueDuplicate";
}

/** Attaches CEL rules (x-kubernetes-validations) to a schema. */
export function cel(...rules: CelRule[]): { "x-kubernetes-validations": CelRule[] } {
  return { "x-kubernetes-validations": rules };
}

export function StringEnum<T extends string[]>(values: [...T], opts: { description: string; default?: T[number] }): TUnsafe<T[number]> {
  return Type.Unsafe<T[number]>({ type: "string", enum: values, ...opts });
}

/** Kubernetes-style duration: "500ms", "3m", "1h30m". Bounded length keeps CEL cost estimates low. */
export const DURATION_PATTERN = "^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$";
export function Duration(description: string, defaultValue?: string): TUnsafe<string> {
  return Type.Unsafe<string>({
    type: "string",
    maxLength: 32,
    pattern: DURATION_PATTERN,
    description: `${description} A duration such as "500ms", "30s", "3m" or "1h30m".`,
    ...(defaultValue === undefined ? {} : { default: defaultValue }),
  });
}

/** A Kubernetes resource quantity ("64Gi", "1Ti", "500M"). */
export const QUANTITY_PATTERN = "^(\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))))?$";
export function Quantity(description: string): TUnsafe<string | number> {
  return Type.Unsafe<string | number>({
    "x-kubernetes-int-or-string": true,
    anyOf: [{ type: "integer" }, { type: "string" }],
    pattern: QUANTITY_PATTERN,
    description: `${description} A Kubernetes quantity such as "64Gi" or "1Ti".`,
  });
}

export function StringMap(description: string): TUnsafe<Record<string, string>> {
  return Type.Unsafe<Record<string, string>>({
    type: "object",
    additionalProperties: { type: "string", maxLength: 253 },
    maxProperties: 64,
    description,
  });
}

export const DNS1123_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
export function Name(description: string): TSchema {
  return Type.String({ minLength: 1, maxLength: 63, pattern: DNS1123_PATTERN, description });
}

/** A reference to another llmfleet object in the same namespace. */
export function LocalRef(kind: string, description: string) {
  return Type.Object(
    {
      name: Type.String({
        minLength: 1,
        maxLength: 63,
        pattern: DNS1123_PATTERN,
        description: `Name of the ${kind} in the same namespace (a DNS-1123 label).`,
      }),
    },
    { description },
  );
}
export type LocalRef = { name: string };

function rangeBounds(what: string, minDefault: number) {
  return {
    min: Type.Integer({ minimum: 0, maximum: 10000, default: minDefault, description: `Fewest ${what}. 0 allows scale to zero. Default ${minDefault}.` }),
    max: Type.Integer({ minimum: 1, maximum: 10000, description: `Most ${what}.` }),
  };
}

const MIN_LE_MAX: CelRule = { rule: "self.min <= self.max", message: "min must be less than or equal to max", fieldPath: ".min" };

/** min/max bounds, e.g. of a node group's size. */
export function CountRange(what: string, minDefault: number) {
  return Type.Object(rangeBounds(what, minDefault), { description: `How many ${what} to run.`, ...cel(MIN_LE_MAX) });
}

/** min/max bounds plus `desired`, the field behind the scale subresource. */
export function ReplicaRange(what: string, minDefault: number) {
  const desired = Type.Integer({
    minimum: 0,
    maximum: 10000,
    description:
      "Replicas wanted now, between min and max. Written by the autoscaler through the scale subresource (also by `kubectl scale`, HPA or KEDA); leave it out of GitOps manifests so autoscaling is not reverted. Defaults to min.",
  });
  return Type.Object(
    { ...rangeBounds(what, minDefault), desired: Type.Optional(desired) },
    {
      description: `How many ${what} to run.`,
      ...cel(MIN_LE_MAX, {
        rule: "!has(self.desired) || (self.desired >= self.min && self.desired <= self.max)",
        message: "desired must be between min and max",
        fieldPath: ".desired",
      }),
    },
  );
}

export const Condition = Type.Object(
  {
    type: Type.String({ maxLength: 316, description: "Type of condition in CamelCase (Ready, ReferencesResolved, Progressing, ...)." }),
    status: StringEnum(["True", "False", "Unknown"], { description: "Status of the condition." }),
    observedGeneration: Type.Optional(Type.Integer({ minimum: 0, description: "The .metadata.generation the condition was computed from." })),
    lastTransitionTime: Type.String({ format: "date-time", description: "When the condition last changed status." }),
    reason: Type.String({ maxLength: 1024, description: "Machine-readable CamelCase reason for the last transition." }),
    message: Type.String({ maxLength: 32768, description: "Human-readable detail about the transition." }),
  },
  { description: "A condition, as in metav1.Condition." },
);
export type Condition = Static<typeof Condition>;

export function statusBase() {
  return {
    observedGeneration: Type.Optional(Type.Integer({ minimum: 0, description: "The .metadata.generation this status was computed from." })),
    conditions: Type.Optional(
      Type.Unsafe<Condition[]>({
        type: "array",
        items: Condition,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        description: "Latest observations of the object's state (Ready, ReferencesResolved, Progressing, ...).",
      }),
    ),
  };
}

export function strictObject<T extends Record<string, TSchema>>(props: T, opts: ObjectOptions & { description: string }) {
  return Type.Object(props, { ...opts });
}
