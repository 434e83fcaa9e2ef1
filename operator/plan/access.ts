// Model.spec.access as engine flags, volumes and RBAC (docs/security.md):
// - the router gets the tenants and limits as --access-tenants, reads each tenant's key Secret
//   through the API (its Role may get/list/watch exactly those Secrets, by name), splits limits
//   by the ready routers behind its own Service (--router-service), and sends the fleet token;
// - every engine pod of the Model (prefill, decode, aggregated) mounts the fleet Secret: the token
//   it requires (--fleet-token-file) and the KV encryption master key (--kv-encryption-key-file).
import type { V1PolicyRule, V1Volume, V1VolumeMount } from "@kubernetes/client-node";
import type { KVStore, Model } from "../api.ts";
import { childName, ROUTER_SERVICE_PORT, serviceURL } from "./labels.ts";

export const FLEET_SECRET_PATH = "/var/run/llmfleet/fleet";
export const FLEET_TOKEN_KEY = "token";
export const KV_ENCRYPTION_KEY = "kvEncryptionKey";

export interface AccessWiring {
  args: string[];
  volumes: V1Volume[];
  mounts: V1VolumeMount[];
}

const NONE: AccessWiring = { args: [], volumes: [], mounts: [] };

/** The fleet Secret, mounted read-only: the token always, the KV key where KV entries are written. */
function fleetSecret(model: Model, withKvKey: boolean): AccessWiring {
  const ref = model.spec.access?.fleetSecretRef;
  if (!ref) return NONE;
  const items = [{ key: FLEET_TOKEN_KEY, path: FLEET_TOKEN_KEY }, ...(withKvKey ? [{ key: KV_ENCRYPTION_KEY, path: KV_ENCRYPTION_KEY }] : [])];
  const args = ["--fleet-token-file", `${FLEET_SECRET_PATH}/${FLEET_TOKEN_KEY}`];
  if (withKvKey) args.push("--kv-encryption-key-file", `${FLEET_SECRET_PATH}/${KV_ENCRYPTION_KEY}`);
  return {
    args,
    volumes: [{ name: "fleet-secret", secret: { secretName: ref.name, items, defaultMode: 0o440 } }],
    mounts: [{ name: "fleet-secret", mountPath: FLEET_SECRET_PATH, readOnly: true }],
  };
}

export const KV_STORE_SECRET_PATH = "/var/run/llmfleet/kvstore";

/** Engine pods of the Model: prefill and aggregated pods write KV entries, so they get the KV key too. */
export function engineAccess(model: Model, role: "prefill" | "decode" | "aggregated"): AccessWiring {
  return fleetSecret(model, role !== "decode");
}

/**
 * The KV store's token (KVStore spec.fleetSecretRef) on the pods that call the store (prefill,
 * aggregated): mounted beside the fleet Secret and sent instead of the fleet token. None when the
 * store has no token, or when it is the Model's fleet Secret (the fleet token is sent already).
 */
export function kvStoreClientAccess(model: Model, store: KVStore | undefined, role: "prefill" | "decode" | "aggregated"): AccessWiring {
  const ref = store?.spec.fleetSecretRef;
  if (!ref || role === "decode" || ref.name === model.spec.access?.fleetSecretRef?.name) return NONE;
  return {
    args: ["--kv-store-token-file", `${KV_STORE_SECRET_PATH}/${FLEET_TOKEN_KEY}`],
    volumes: [{ name: "kvstore-secret", secret: { secretName: ref.name, items: [{ key: FLEET_TOKEN_KEY, path: FLEET_TOKEN_KEY }], defaultMode: 0o440 } }],
    mounts: [{ name: "kvstore-secret", mountPath: KV_STORE_SECRET_PATH, readOnly: true }],
  };
}

/** The KV store's own pods: they require the store's token. */
export function kvStoreAccess(store: KVStore): AccessWiring {
  const ref = store.spec.fleetSecretRef;
  if (!ref) return NONE;
  return {
    args: ["--fleet-token-file", `${KV_STORE_SECRET_PATH}/${FLEET_TOKEN_KEY}`],
    volumes: [{ name: "kvstore-secret", secret: { secretName: ref.name, items: [{ key: FLEET_TOKEN_KEY, path: FLEET_TOKEN_KEY }], defaultMode: 0o440 } }],
    mounts: [{ name: "kvstore-secret", mountPath: KV_STORE_SECRET_PATH, readOnly: true }],
  };
}

function apiKeysMode(model: Model): boolean {
  const access = model.spec.access;
  return access !== undefined && (access.mode ?? "apiKeys") === "apiKeys";
}

/** The router's flags and mounts; open mode (no spec.access, or mode open) adds only the fleet token. */
export function routerAccess(model: Model): AccessWiring {
  const fleet = fleetSecret(model, false);
  if (!apiKeysMode(model)) return fleet;
  const ns = model.metadata?.namespace ?? "";
  const tenants = (model.spec.access?.tenants ?? []).map((t) => ({
    name: t.name,
    secretName: t.secretRef.name,
    limits: t.limits ?? {},
    ...(t.sharedPrefixNamespace ? { sharedPrefixNamespace: t.sharedPrefixNamespace } : {}),
  }));
  const self = serviceURL(childName(model.metadata?.name ?? "", "router"), ns, ROUTER_SERVICE_PORT);
  return { ...fleet, args: [...fleet.args, "--access-tenants", JSON.stringify(tenants), "--access-namespace", ns, "--router-service", self] };
}

/** What the router's Role adds for access: read exactly its tenants' Secrets (list/watch by metadata.name). */
export function routerAccessRules(model: Model): V1PolicyRule[] {
  if (!apiKeysMode(model)) return [];
  const names = [...new Set((model.spec.access?.tenants ?? []).map((t) => t.secretRef.name))].sort();
  return names.length === 0 ? [] : [{ apiGroups: [""], resources: ["secrets"], resourceNames: names, verbs: ["get", "list", "watch"] }];
}
