import { test } from "node:test";
import assert from "node:assert/strict";
import type { V1StatefulSet } from "@kubernetes/client-node";
import { aKVStore, NOW } from "../../testing/builders.ts";
import { kvStoreMemory, planKVStore, tierArg } from "./kvstore.ts";
import { parseQuantity } from "./quantity.ts";

test("tiers become --tier flags in lookup order", () => {
  const cases: Array<[Parameters<typeof tierArg>[0], string]> = [
    [{ name: "ram", medium: "memory", capacity: "64Gi" }, "name=ram,medium=memory,capacity=64Gi"],
    [{ name: "ssd", medium: "disk", capacity: "1Ti" }, "name=ssd,medium=disk,capacity=1Ti,path=/var/lib/llmfleet/kv/ssd"],
    [
      { name: "s3", medium: "objectStore", endpoint: "http://minio:9000", bucket: "kv", ttl: "168h" },
      "name=s3,medium=objectStore,endpoint=http://minio:9000,bucket=kv,ttl=168h",
    ],
  ];
  for (const [tier, want] of cases) assert.equal(tierArg(tier), want);
});

test("a KVStore becomes a StatefulSet with a claim per disk tier and credentials from its Secret", () => {
  const store = aKVStore("kv");
  store.spec.tiers = [
    { name: "ram", medium: "memory", capacity: "2Gi" },
    { name: "ssd", medium: "disk", capacity: "100Gi", storageClassName: "local-nvme" },
    { name: "s3", medium: "objectStore", endpoint: "http://minio:9000", bucket: "kv", secretRef: { name: "kv-s3" } },
  ];
  const plan = planKVStore(store, { engineImage: "engine:test", now: NOW });
  assert.deepEqual(
    plan.children.map((c) => `${c.kind}/${c.metadata?.name}`),
    ["StatefulSet/kv-kvstore", "Service/kv-kvstore"],
  );
  const sts = plan.children[0] as V1StatefulSet;
  assert.equal(sts.spec?.volumeClaimTemplates?.[0]?.metadata?.name, "kv-ssd");
  assert.equal(sts.spec?.volumeClaimTemplates?.[0]?.spec?.storageClassName, "local-nvme");
  const c = sts.spec?.template.spec?.containers[0];
  assert.equal(c?.args?.filter((a) => a === "--tier").length, 3);
  assert.deepEqual(c?.env?.map((e) => [e.name, e.valueFrom?.secretKeyRef?.name]).slice(1), [
    ["AWS_ACCESS_KEY_ID", "kv-s3"],
    ["AWS_SECRET_ACCESS_KEY", "kv-s3"],
  ]);
  assert.ok(c?.volumeMounts?.some((m) => m.mountPath === "/var/lib/llmfleet/kv/ssd"));
  assert.equal(c?.resources?.requests?.memory, "3072Mi");
  assert.equal(plan.status.tiers, "ram(memory),ssd(disk),s3(objectStore)");
  assert.equal(plan.status.endpoint, "http://kv-kvstore.ns.svc:8000");
  // v2 entry blocks reach the store over the native TCP stream on its kv port, through the Service.
  assert.deepEqual(c?.args?.slice(c.args.indexOf("--kv-port"), c.args.indexOf("--kv-port") + 2), ["--kv-port", "8001"]);
  assert.ok(c?.ports?.some((p) => p.name === "kv" && p.containerPort === 8001));
  const svc = plan.children[1] as { spec?: { ports?: { name?: string; port?: number }[] } };
  assert.ok(svc.spec?.ports?.some((p) => p.name === "kv" && p.port === 8001), JSON.stringify(svc.spec?.ports));
});

test("kvstore memory is the memory tier plus 1Gi unless set", () => {
  const store = aKVStore();
  assert.equal(kvStoreMemory(store), "5120Mi");
  store.spec.resources = { memory: "10Gi" };
  assert.equal(kvStoreMemory(store), "10Gi");
});

test("parseQuantity reads binary, decimal and exponent forms", () => {
  const cases: Array<[string | number, number]> = [
    ["1Ki", 1024],
    ["64Gi", 64 * 2 ** 30],
    ["500M", 5e8],
    ["1.5Gi", 1.5 * 2 ** 30],
    ["100m", 0.1],
    ["1e3", 1000],
    [42, 42],
  ];
  for (const [q, want] of cases) assert.equal(parseQuantity(q), want, String(q));
  assert.throws(() => parseQuantity("12Xi"), /invalid quantity/);
});
