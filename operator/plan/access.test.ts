// Model.spec.access planned into the router and engine pods: flags the engine accepts, the
// fleet Secret mounted, and a router Role that reads exactly the tenants' Secrets.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { V1Deployment, V1Role } from "@kubernetes/client-node";
import { parseEngineOptions, type EngineOptions } from "../../engine/cli/options.ts";
import { parseAccess } from "../../engine/access/access-sources.ts";
import { serviceOf } from "../../engine/router/endpoint-slices.ts";
import { aDecodePool, aKVStore, aModel, aPrefillPool, NOW } from "../../testing/builders.ts";
import { planModel } from "./model.ts";
import { planDecodePool, planPrefillPool } from "./pools.ts";
import { planKVStore } from "./kvstore.ts";
import type { V1StatefulSet } from "@kubernetes/client-node";
import type { KubeObject } from "../../lib/kube/types.ts";

const IMAGES = { engineImage: "e", engineGPUImage: "e-gpu" };

function withAccess(): ReturnType<typeof aModel> {
  const model = aModel("gemma");
  model.spec.access = {
    mode: "apiKeys",
    fleetSecretRef: { name: "gemma-fleet" },
    tenants: [
      { name: "team-a", secretRef: { name: "keys-a" }, limits: { requestsPerMinute: 60, concurrentStreams: 4 } },
      { name: "team-b", secretRef: { name: "keys-b" }, sharedPrefixNamespace: "common" },
    ],
  };
  return model;
}

const options = (d: KubeObject | undefined): EngineOptions => parseEngineOptions((d as V1Deployment).spec?.template.spec?.containers[0]?.args ?? []) as EngineOptions;
const byKind = (children: KubeObject[], kind: string): KubeObject | undefined => children.find((c) => c.kind === kind);

test("router: tenants and limits as --access-tenants, its own Service for the limit split, the fleet token", () => {
  const model = withAccess();
  const plan = planModel(model, { prefillPools: [aPrefillPool("pf", "gemma")], decodePools: [aDecodePool("dc", "gemma")], ...IMAGES, now: NOW });
  const router = byKind(plan.children, "Deployment") as V1Deployment;
  const opts = options(router);
  const tenants = parseAccess(opts.accessTenants!);
  assert.deepEqual(
    tenants.map((t) => [t.name, t.secretName, t.sharedPrefixNamespace]),
    [
      ["team-a", "keys-a", undefined],
      ["team-b", "keys-b", "common"],
    ],
  );
  assert.deepEqual(tenants[0]!.limits, { requestsPerMinute: 60, concurrentStreams: 4 });
  assert.equal(opts.accessNamespace, "ns");
  assert.equal(serviceOf(opts.routerService!)?.service, "gemma-router");
  assert.equal(opts.fleetTokenFile, "/var/run/llmfleet/fleet/token");
  assert.equal(opts.kvEncryptionKeyFile, undefined, "the router writes no KV");
  const role = byKind(plan.children, "Role") as V1Role;
  assert.deepEqual(
    role.rules?.find((r) => r.resources?.includes("secrets")),
    { apiGroups: [""], resources: ["secrets"], resourceNames: ["keys-a", "keys-b"], verbs: ["get", "list", "watch"] },
  );
});

test("engine pods mount the fleet Secret: token everywhere, the KV key where KV entries are written", () => {
  const model = withAccess();
  const prefill = aPrefillPool("pf", "gemma");
  const decode = aDecodePool("dc", "gemma");
  const world = { model, prefillPools: [prefill], decodePools: [decode], ...IMAGES, now: NOW };
  const p = planPrefillPool(prefill, world).children[0] as V1Deployment;
  const d = planDecodePool(decode, world).children[0] as V1Deployment;
  assert.equal(options(p).fleetTokenFile, "/var/run/llmfleet/fleet/token");
  assert.equal(options(p).kvEncryptionKeyFile, "/var/run/llmfleet/fleet/kvEncryptionKey");
  assert.equal(options(d).fleetTokenFile, "/var/run/llmfleet/fleet/token");
  assert.equal(options(d).kvEncryptionKeyFile, undefined);
  const volume = p.spec?.template.spec?.volumes?.find((v) => v.name === "fleet-secret");
  assert.equal(volume?.secret?.secretName, "gemma-fleet");
  assert.ok(p.spec?.template.spec?.containers[0]?.volumeMounts?.some((m) => m.name === "fleet-secret" && m.readOnly));
});

test("open mode and no spec.access: the router takes no keys and reads no Secret", () => {
  for (const access of [undefined, { mode: "open" as const }]) {
    const model = aModel("gemma");
    if (access) model.spec.access = access;
    const plan = planModel(model, { prefillPools: [aPrefillPool("pf", "gemma")], decodePools: [aDecodePool("dc", "gemma")], ...IMAGES, now: NOW });
    const opts = options(byKind(plan.children, "Deployment"));
    assert.equal(opts.accessTenants, undefined);
    assert.equal(opts.fleetTokenFile, undefined);
    assert.ok(!(byKind(plan.children, "Role") as V1Role).rules?.some((r) => r.resources?.includes("secrets")));
  }
});

test("a KVStore with fleetSecretRef: the store requires its token, the pools that use it mount and send it", () => {
  const store = aKVStore("kv");
  store.spec.fleetSecretRef = { name: "kv-token" };
  const ss = planKVStore(store, { engineImage: "e", now: NOW }).children.find((c) => c.kind === "StatefulSet") as V1StatefulSet;
  const storePod = ss.spec?.template.spec;
  const storeOpts = parseEngineOptions(storePod?.containers[0]?.args ?? []) as EngineOptions;
  assert.equal(storeOpts.role, "kvstore");
  assert.equal(storeOpts.fleetTokenFile, "/var/run/llmfleet/kvstore/token");
  assert.equal(storePod?.volumes?.find((v) => v.name === "kvstore-secret")?.secret?.secretName, "kv-token");
  assert.ok(storePod?.containers[0]?.volumeMounts?.some((m) => m.name === "kvstore-secret" && m.mountPath === "/var/run/llmfleet/kvstore" && m.readOnly));

  const model = withAccess();
  const prefill = aPrefillPool("pf", "gemma");
  prefill.spec.kvStoreRef = { name: "kv" };
  const decode = aDecodePool("dc", "gemma");
  decode.spec.kvStoreRef = { name: "kv" };
  const world = { model, prefillPools: [prefill], decodePools: [decode], kvStore: store, ...IMAGES, now: NOW };
  const p = planPrefillPool(prefill, world).children[0] as V1Deployment;
  const pOpts = options(p);
  assert.equal(pOpts.kvStoreTokenFile, "/var/run/llmfleet/kvstore/token", "prefill sends the store's token to the store");
  assert.equal(pOpts.fleetTokenFile, "/var/run/llmfleet/fleet/token", "and keeps the fleet's for the rest");
  assert.equal(p.spec?.template.spec?.volumes?.find((v) => v.name === "kvstore-secret")?.secret?.secretName, "kv-token");
  const d = planDecodePool(decode, world).children[0] as V1Deployment;
  assert.equal(options(d).kvStoreTokenFile, undefined, "decode pods do not call the store: they do not get its token");
  assert.equal(d.spec?.template.spec?.volumes?.find((v) => v.name === "kvstore-secret"), undefined);

  // The store's token is the Model's fleet Secret: nothing to add, the fleet token is sent.
  store.spec.fleetSecretRef = { name: "gemma-fleet" };
  assert.equal(options(planPrefillPool(prefill, world).children[0]).kvStoreTokenFile, undefined);
  // No token on the store: nothing mounted, the store is open (as before).
  delete store.spec.fleetSecretRef;
  assert.equal(options(planPrefillPool(prefill, world).children[0]).kvStoreTokenFile, undefined);
  const open = planKVStore(store, { engineImage: "e", now: NOW }).children.find((c) => c.kind === "StatefulSet") as V1StatefulSet;
  assert.equal((parseEngineOptions(open.spec?.template.spec?.containers[0]?.args ?? []) as EngineOptions).fleetTokenFile, undefined);
});
