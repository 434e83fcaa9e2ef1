// The informer supervisor against the real API server: a dropped connection restarts the watch
// with backoff and loses no change. (A real 410 Gone could not be provoked here: this API
// server's watch cache answers even very old resourceVersions, after an etcd compaction too;
// the 410 path relists exactly as the first list does.)
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { KubeConfig, type V1ConfigMap } from "@kubernetes/client-node";
import { eventually } from "../../testing/eventually.ts";
import { kubectlOk } from "../../testing/kubectl.ts";
import { KubeClient, KubeTimeoutError } from "./client.ts";
import type { ResourceType } from "./resources.ts";
import { ensureNamespace } from "../../testing/cluster.ts";
import { startTcpProxy, type TcpProxy } from "../../testing/tcp-proxy.ts";
import { Informer } from "./informer.ts";

const NS = "it-informer";
const ConfigMap: ResourceType = { group: "", version: "v1", kind: "ConfigMap", plural: "configmaps", namespaced: true };
let proxy: TcpProxy;
let client: KubeClient;
/** The same API server through the same proxy, with a short request timeout. */
let impatient: KubeClient;
const errors: unknown[] = [];

before(async () => {
  await kubectlOk(["delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=60s"]);
  await ensureNamespace(NS);
  const kc = new KubeConfig();
  kc.loadFromFile(process.env.KUBECONFIG ?? "");
  const server = new URL(kc.getCurrentCluster()?.server ?? "");
  proxy = await startTcpProxy(server.hostname, Number(server.port));
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error("no cluster");
  kc.clusters = kc.clusters.map((c) => (c.name === cluster.name ? { ...c, server: `https://127.0.0.1:${proxy.port}` } : c));
  client = KubeClient.fromKubeConfig(kc);
  impatient = KubeClient.fromKubeConfig(kc, { requestTimeoutMs: 1500 });
});

after(async () => {
  await proxy.close();
});

async function configMap(name: string, value: string): Promise<void> {
  await kubectlOk(["apply", "-n", NS, "-f", "-"], { stdin: JSON.stringify({ apiVersion: "v1", kind: "ConfigMap", metadata: { name }, data: { v: value } }) });
}

test("a dropped watch restarts with backoff, and changes made meanwhile are not lost", async () => {
  const inf = new Informer<V1ConfigMap>(client, ConfigMap, { namespace: NS, backoffMs: 100, maxBackoffMs: 500, onError: (e) => errors.push(e) });
  const seen: string[] = [];
  inf.on((type, obj) => seen.push(`${type} ${obj.metadata?.name}=${obj.data?.v ?? ""}`));
  void inf.run();
  try {
    await watchSurvivesOutage(inf, seen);
  } finally {
    inf.stop();
  }
});

async function watchSurvivesOutage(inf: Informer<V1ConfigMap>, seen: string[]): Promise<void> {
  await inf.waitForSync();
  await configMap("a", "1");
  await eventually(() => assert.equal(inf.get(`${NS}/a`)?.data?.v, "1"));
  proxy.cut();
  await configMap("a", "2");
  await configMap("b", "1");
  await kubectlOk(["delete", "-n", NS, "configmap", "a"]);
  await eventually(() => assert.ok(inf.restarts >= 1, "the supervisor saw the failure"));
  proxy.resume();
  await eventually(() => {
    assert.equal(inf.get(`${NS}/a`), undefined, "the deletion during the outage is seen");
    assert.equal(inf.get(`${NS}/b`)?.data?.v, "1");
  });
  assert.ok(seen.includes("DELETED a=2") || seen.includes("DELETED a=1"), seen.join("; "));
}

test("a request that gets no answer fails after the client's timeout, naming the server", async () => {
  proxy.stall();
  try {
    const t0 = Date.now();
    await assert.rejects(impatient.get(ConfigMap, NS, "anything"), (err: unknown) => {
      assert.ok(err instanceof KubeTimeoutError, String(err));
      assert.match(err.message, /within 1500 ms/);
      assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${proxy.port}`));
      return true;
    });
    assert.ok(Date.now() - t0 < 10_000);
  } finally {
    proxy.resume();
  }
});

test("a watch that stalls without closing is dropped and restarted, and what changed meanwhile is seen", async () => {
  const inf = new Informer<V1ConfigMap>(impatient, ConfigMap, { namespace: NS, backoffMs: 100, maxBackoffMs: 500, stallMs: 1500 });
  void inf.run();
  try {
    await inf.waitForSync();
    const before = inf.restarts;
    proxy.stall();
    await configMap("stalled", "1");
    await eventually(() => assert.ok(inf.restarts > before, "the stall detector dropped the watch"), { timeoutMs: 20_000 });
    proxy.resume();
    await eventually(() => assert.equal(inf.get(`${NS}/stalled`)?.data?.v, "1"), { timeoutMs: 20_000 });
  } finally {
    proxy.resume();
    inf.stop();
  }
});
