// The custom resources as TypeScript types, inferred from the CRD schemas (crds/schema).
import type { ModelSpec, ModelStatus } from "../crds/schema/model.ts";
import type { DecodePoolSpec, PoolStatus, PrefillPoolSpec } from "../crds/schema/pools.ts";
import type { KVStoreSpec, KVStoreStatus } from "../crds/schema/kvstore.ts";
import type { GPUNodeGroupSpec, GPUNodeGroupStatus } from "../crds/schema/nodegroup.ts";
import type { CustomObject } from "../lib/kube/types.ts";

export type Model = CustomObject<ModelSpec, ModelStatus>;
export type PrefillPool = CustomObject<PrefillPoolSpec, PoolStatus>;
export type DecodePool = CustomObject<DecodePoolSpec, PoolStatus>;
export type KVStore = CustomObject<KVStoreSpec, KVStoreStatus>;
export type GPUNodeGroup = CustomObject<GPUNodeGroupSpec, GPUNodeGroupStatus>;
export type EnginePool = PrefillPool | DecodePool;
export type PoolRole = "prefill" | "decode";

export type { ModelSpec, ModelStatus, PrefillPoolSpec, DecodePoolSpec, PoolStatus, KVStoreSpec, KVStoreStatus, GPUNodeGroupSpec, GPUNodeGroupStatus };
