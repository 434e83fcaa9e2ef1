import { Type, type Static } from "@sinclair/typebox";
import { cel, Duration, LocalRef, Name, Quantity, statusBase, strictObject, StringEnum } from "./common.ts";

export const KVTier = strictObject(
  {
    name: Name("Tier name, unique in the store (a DNS-1123 label)."),
    medium: StringEnum(["memory", "disk", "objectStore"], {
      description: "memory: the store pod's RAM (LRU by bytes). disk: a persistent volume per store pod. objectStore: an S3-compatible bucket.",
    }),
    capacity: Type.Optional(
      Quantity("Most bytes kept in this tier; the least recently used blocks are evicted (demoted to the next tier) beyond it. Required for memory and disk."),
    ),
    storageClassName: Type.Optional(
      Type.String({ maxLength: 253, description: "StorageClass of the disk tier's volume claim. Default: the cluster default." }),
    ),
    endpoint: Type.Optional(
      Type.String({ maxLength: 2048, pattern: "^https?://[^\\s]+$", description: "S3-compatible endpoint URL of the objectStore tier." }),
    ),
    bucket: Type.Optional(
      Type.String({ minLength: 3, maxLength: 63, pattern: "^[a-z0-9][a-z0-9.-]*[a-z0-9]$", description: "Bucket of the objectStore tier." }),
    ),
    region: Type.Optional(Type.String({ maxLength: 64, description: "Region of the objectStore tier. Default us-east-1." })),
    secretRef: Type.Optional(LocalRef("Secret", "Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for the objectStore tier.")),
    ttl: Type.Optional(Duration("Blocks unused this long are dropped from the tier.")),
  },
  {
    description: "One tier of the store, tried in list order on lookup.",
    ...cel(
      {
        rule: "self.medium == 'objectStore' || has(self.capacity)",
        message: "capacity is required for memory and disk tiers",
        fieldPath: ".capacity",
        reason: "FieldValueRequired",
      },
      {
        rule: "self.medium != 'objectStore' || (has(self.endpoint) && has(self.bucket))",
        message: "endpoint and bucket are required for an objectStore tier",
        fieldPath: ".endpoint",
        reason: "FieldValueRequired",
      },
      {
        rule: "self.medium == 'objectStore' || (!has(self.endpoint) && !has(self.bucket) && !has(self.secretRef))",
        message: "endpoint, bucket and secretRef apply only to an objectStore tier",
        fieldPath: ".medium",
      },
      { rule: "self.medium == 'disk' || !has(self.storageClassName)", message: "storageClassName applies only to a disk tier", fieldPath: ".storageClassName" },
    ),
  },
);
export type KVTier = Static<typeof KVTier>;

/** What users choose; engine/kvcodec/codec-names.ts KV_CODECS (a test keeps the two equal). */
export const CODEC_CHOICES = ["none", "lossless", "compact", "default"];
/** Retired names (the engine's research codecs): refused with the name of what replaces them. */
export const RETIRED_CODECS = ["int8", "qdelta", "qrans", "qrans8", "qpre", "qpre8", "qsink8", "qsink4"];
const quoted = (names: string[]): string => names.map((c) => `'${c}'`).join(", ");

export const KVCodec = strictObject(
  {
    name: Type.String({
      maxLength: 32,
      description:
        "KV codec for stored blocks: none (raw f16, exact), lossless (exact, smaller: byte planes and Brotli), compact (the recommended lossy codec: about 4x smaller than f16, quality held against the measurement's own floor; docs/kv-store.md) or default (= none today). Entries already stored under any codec still load. Default default.",
      default: "default",
      ...cel(
        {
          rule: `!(self in [${quoted(RETIRED_CODECS)}])`,
          message: "this codec name is retired as a setting: use compact (the recommended lossy codec) or lossless (exact); entries stored under it still load",
        },
        { rule: `self in [${quoted([...CODEC_CHOICES, ...RETIRED_CODECS])}]`, message: `must be one of ${CODEC_CHOICES.join(", ")}` },
      ),
    }),
  },
  { description: "How KV blocks are encoded at rest and in transit." },
);

export const KVStoreSpec = strictObject(
  {
    tiers: Type.Unsafe<KVTier[]>({
      type: "array",
      items: KVTier,
      minItems: 1,
      maxItems: 4,
      "x-kubernetes-list-type": "map",
      "x-kubernetes-list-map-keys": ["name"],
      description: "Ordered tiers, fastest first. A hit in a lower tier is promoted; an eviction demotes to the next tier.",
      ...cel(
        { rule: "['memory', 'disk', 'objectStore'].all(m, self.filter(t, t.medium == m).size() <= 1)", message: "at most one tier of each medium" },
        { rule: "!self.exists(t, t.medium == 'memory') || self[0].medium == 'memory'", message: "the memory tier must come first" },
      ),
    }),
    codec: Type.Optional(KVCodec),
    blockTokens: Type.Integer({
      minimum: 16,
      maximum: 8192,
      default: 256,
      description: "Tokens per KV block, the unit of hashing, storage and reuse. Default 256.",
    }),
    replicas: Type.Integer({ minimum: 1, maximum: 64, default: 1, description: "kvstore pods; blocks are sharded across them by hash. Default 1." }),
    tenantSalt: Type.Optional(
      Type.String({ maxLength: 128, description: "Salt mixed into every block key, so caches of different tenants never match. Default: the namespace." }),
    ),
    fleetSecretRef: Type.Optional(
      LocalRef(
        "Secret",
        'The store\'s token: key "token" (at least 16 characters; several, one a line, while it rotates). The store refuses every request without it but its probes and /metrics; the prefill and aggregated pods of every pool that uses the store mount it and send it. Default: none, the store serves anyone who reaches it (its entries are still sealed per tenant when the Model has a fleetSecretRef).',
      ),
    ),
    resources: Type.Optional(
      strictObject(
        {
          cpu: Type.Optional(Quantity("CPU per kvstore pod. Default 1.")),
          memory: Type.Optional(Quantity("Memory per kvstore pod. Default: the memory tier's capacity plus 1Gi.")),
        },
        { description: "CPU and memory per kvstore pod." },
      ),
    ),
  },
  { description: "A tiered store of KV caches shared by the prefill and decode pools that reference it." },
);
export type KVStoreSpec = Static<typeof KVStoreSpec>;

export const KVStoreStatus = Type.Object(
  {
    ...statusBase(),
    replicas: Type.Optional(Type.Integer({ description: "kvstore pods that exist." })),
    readyReplicas: Type.Optional(Type.Integer({ description: "kvstore pods that are ready." })),
    endpoint: Type.Optional(Type.String({ description: "In-cluster URL engines use to reach the store." })),
    tiers: Type.Optional(Type.String({ description: "The tiers in order, e.g. ram(memory),ssd(disk),s3(objectStore)." })),
  },
  { description: "Observed state of the KVStore." },
);
export type KVStoreStatus = Static<typeof KVStoreStatus>;
