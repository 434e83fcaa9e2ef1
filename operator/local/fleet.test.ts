import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { readFleet } from "./manifests.ts";
import { planLocalFleet, processSpecs } from "./fleet.ts";
import { rewriteServiceURLs } from "./processes.ts";
import { routerWiring } from "./routers.ts";
import { ROUTER_NODE_OPTIONS } from "../plan/model.ts";
import { tempDir } from "../../testing/temp-dir.ts";

function manifest(text: string): string {
  const path = join(tempDir("llmfleet-local-"), "fleet.yaml");
  writeFileSync(path, text);
  return path;
}

test("the quickstart plans a router, a prefill and a decode process wired on loopback", () => {
  const planned = planLocalFleet(readFleet("examples/quickstart.yaml"));
  assert.deepEqual(
    planned.map((d) => `${d.name}:${d.role}x${d.replicas}`),
    ["shared-kv-kvstore:kvstorex1", "gemma-prefill-prefill:prefillx1", "gemma-decode-decode:decodex1", "gemma-270m-router:routerx1"],
  );
  const specs = processSpecs(planned, { routerPort: 8080, basePort: 18080, threads: 1 });
  const router = specs.find((s) => s.name === "gemma-270m-router");
  const prefill = specs.find((s) => s.name === "gemma-prefill-prefill");
  assert.equal(router?.port, 8080);
  assert.equal(router?.args[router.args.indexOf("--prefill") + 1], `http://127.0.0.1:${prefill?.port}`);
  assert.equal(prefill?.args[prefill.args.indexOf("--port") + 1], String(prefill?.port));
  assert.equal(prefill?.args[prefill.args.indexOf("--threads") + 1], "1");
  const store = specs.find((s) => s.name === "shared-kv-kvstore");
  assert.equal(prefill?.args[prefill.args.indexOf("--kv-store") + 1], `http://127.0.0.1:${store?.port}`, "prefill pods use the local KV store");
  // Every engine process but the router gets a KV port of its own, distinct from every HTTP port.
  const kv = specs.filter((s) => s.name !== "gemma-270m-router").map((s) => Number(s.args[s.args.lastIndexOf("--kv-port") + 1]));
  const http = specs.map((s) => s.port);
  assert.equal(new Set([...kv, ...http]).size, kv.length + http.length, `ports ${http.join(",")} and KV ports ${kv.join(",")} are all distinct`);
  assert.equal(router?.args.includes("--kv-port"), false);
  // The planned environment goes with the process: the router's heap cap as the operator sets it.
  assert.equal(router?.env?.NODE_OPTIONS, ROUTER_NODE_OPTIONS);
  // ...but not the pod's cache path: a local process uses this machine's model and addon cache.
  for (const s of specs) assert.equal(s.env?.LLMFLEET_CACHE, undefined, `${s.name} keeps this machine's cache`);
});

test("replicas become processes, and a Service URL resolves to all of them", () => {
  const urls = new Map([["pf-prefill", ["http://127.0.0.1:1", "http://127.0.0.1:2"]]]);
  assert.deepEqual(rewriteServiceURLs(["--prefill", "http://pf-prefill.local.svc:8000", "--x", "http://other.local.svc"], urls), [
    "--prefill",
    "http://127.0.0.1:1,http://127.0.0.1:2",
    "--x",
    "http://other.local.svc",
  ]);
});

test("a manifest the CRD schema refuses is refused locally, naming the field", () => {
  const bad = manifest(`apiVersion: serving.llmfleet.dev/v1alpha1
kind: PrefillPool
metadata: {name: p}
spec: {modelRef: {name: m}, replicas: {min: 1, max: 2}, autoscaling: {mode: magic}}
`);
  assert.throws(() => readFleet(bad), /PrefillPool p: spec\.autoscaling\.mode/);
  const missing = manifest(`apiVersion: serving.llmfleet.dev/v1alpha1
kind: Model
metadata: {name: m}
spec: {source: {uri: "file:///m.gguf"}}
---
apiVersion: serving.llmfleet.dev/v1alpha1
kind: DecodePool
metadata: {name: d}
spec: {modelRef: {name: other}, replicas: {min: 1, max: 2}}
`);
  assert.throws(() => planLocalFleet(readFleet(missing)), /decode pool d: Model "other" not found/);
  const vllm = manifest(`apiVersion: serving.llmfleet.dev/v1alpha1
kind: Model
metadata: {name: m}
spec: {source: {uri: "file:///m", format: safetensors}, runtime: {engine: vllm}}
`);
  assert.throws(() => planLocalFleet(readFleet(vllm)), /Model m: runtime.engine vllm is not supported by this operator yet/, "an invalid spec is refused too");
});

test("a router is wired to the Services its planned arguments name, per role", () => {
  const planned = planLocalFleet(readFleet("examples/quickstart.yaml"));
  const router = planned.find((d) => d.role === "router");
  assert.ok(router);
  const wiring = routerWiring(router, "/tmp/upstreams.json");
  assert.deepEqual(wiring.services, { prefill: ["gemma-prefill-prefill"], decode: ["gemma-decode-decode"], aggregated: [] });
  assert.ok(wiring.serves("gemma-decode-decode"));
  assert.ok(!wiring.serves("shared-kv-kvstore"), "the KV store is not behind the router");
});
