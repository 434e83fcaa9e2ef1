import { test } from "node:test";
import assert from "node:assert/strict";
import type { V1Container, V1Deployment, V1Role, V1RoleBinding, V1Service } from "@kubernetes/client-node";
import { aDecodePool, aModel, aNodeGroup, aPrefillPool, NOW } from "../../testing/builders.ts";
import { planModel, ROUTER_NODE_OPTIONS, type ModelWorld } from "./model.ts";
import { findCondition } from "./conditions.ts";

function world(over: Partial<ModelWorld> = {}): ModelWorld {
  return { prefillPools: [], decodePools: [], engineImage: "engine:test", engineGPUImage: "engine-gpu:test", now: NOW, ...over };
}

test("a Model becomes the router Deployment and Service, wired to its pools", () => {
  const plan = planModel(aModel("gemma"), world({ prefillPools: [aPrefillPool("pb"), aPrefillPool("pa")], decodePools: [aDecodePool("d")] }));
  assert.deepEqual(
    plan.children.map((c) => `${c.kind}/${c.metadata?.name}`),
    ["Deployment/gemma-router", "Service/gemma-router", "ServiceAccount/gemma-router", "Role/gemma-router", "RoleBinding/gemma-router"],
  );
  const args = (plan.children[0] as V1Deployment).spec?.template.spec?.containers[0]?.args ?? [];
  assert.deepEqual(args.slice(0, 5), ["--role", "router", "--port", "8000", "--drain-delay-seconds"]);
  assert.deepEqual(args.slice(8, 11), ["--policy", "prefix-aware", "--discover-endpoints"]);
  assert.equal(args[args.indexOf("--prefill") + 1], "http://pa-prefill.ns.svc:8000,http://pb-prefill.ns.svc:8000");
  assert.equal(args[args.indexOf("--decode") + 1], "http://d-decode.ns.svc:8000");
  // The heap cap bench:scale-router measures the router with.
  const env = (plan.children[0] as V1Deployment).spec?.template.spec?.containers[0]?.env ?? [];
  assert.equal(env.find((e) => e.name === "NODE_OPTIONS")?.value, ROUTER_NODE_OPTIONS);
  assert.equal((plan.children[1] as V1Service).spec?.ports?.[0]?.port, 80);
  assert.equal(plan.status.endpoint, "http://gemma-router.ns.svc");
  assert.equal(findCondition(plan.status.conditions, "Ready")?.reason, "RollingOut");
});

test("the router reads its pools' EndpointSlices under its own ServiceAccount, and nothing else", () => {
  const plan = planModel(aModel("gemma"), world({ decodePools: [aDecodePool("d")], prefillPools: [aPrefillPool("p")] }));
  const pod = (plan.children[0] as V1Deployment).spec?.template.spec;
  assert.equal(pod?.serviceAccountName, "gemma-router");
  assert.equal(pod?.automountServiceAccountToken, true);
  assert.deepEqual((plan.children[3] as V1Role).rules, [{ apiGroups: ["discovery.k8s.io"], resources: ["endpointslices"], verbs: ["get", "list", "watch"] }]);
  const binding = plan.children[4] as V1RoleBinding;
  assert.deepEqual(binding.roleRef, { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "gemma-router" });
  assert.deepEqual(binding.subjects, [{ kind: "ServiceAccount", name: "gemma-router", namespace: "ns" }]);
  for (const c of plan.children) assert.equal(c.metadata?.ownerReferences?.[0]?.name, "gemma");
});

test("aggregated replicas add a Deployment, Service and PDB at the desired count", () => {
  const model = aModel("gemma");
  model.spec.replicas = { min: 1, max: 4, desired: 3 };
  model.spec.placement = { gpusPerReplica: 1, nodeGroupRef: { name: "h100" } };
  const plan = planModel(model, world({ nodeGroup: aNodeGroup("h100") }));
  assert.deepEqual(plan.children.map((c) => `${c.kind}/${c.metadata?.name}`).slice(5), [
    "Deployment/gemma-aggregated",
    "Service/gemma-aggregated",
    "PodDisruptionBudget/gemma-aggregated",
  ]);
  const agg = plan.children[5] as V1Deployment;
  assert.equal(agg.spec?.replicas, 3);
  assert.equal(agg.spec?.template.spec?.nodeSelector?.["serving.llmfleet.dev/node-group"], "h100");
  const routerArgs = (plan.children[0] as V1Deployment).spec?.template.spec?.containers[0]?.args ?? [];
  assert.equal(routerArgs[routerArgs.indexOf("--aggregated") + 1], "http://gemma-aggregated.ns.svc:8000");
  assert.equal(plan.status.desiredReplicas, 3);
});

test("a missing node group for aggregated replicas is a condition, not children", () => {
  const model = aModel("gemma");
  model.spec.replicas = { min: 1, max: 2 };
  model.spec.placement = { gpusPerReplica: 1, nodeGroupRef: { name: "nope" } };
  const plan = planModel(model, world());
  assert.deepEqual(plan.children, []);
  assert.match(findCondition(plan.status.conditions, "ReferencesResolved")?.message ?? "", /GPUNodeGroup "nope" not found/);
});

test("the Model is Ready when its router and aggregated replicas have rolled out", () => {
  const model = aModel("gemma");
  model.spec.replicas = { min: 1, max: 2 };
  const done = { metadata: { generation: 1 }, status: { observedGeneration: 1, replicas: 1, updatedReplicas: 1, readyReplicas: 1 } };
  const plan = planModel(model, world({ router: done, aggregated: done }));
  assert.equal(findCondition(plan.status.conditions, "Ready")?.status, "True");
  assert.equal(plan.status.readyReplicas, 1);
});

test("aggregated replicas with GPUs get the GPU image and every layer on the GPU; the router and CPU replicas the CPU image", () => {
  const model = aModel("gemma");
  model.spec.replicas = { min: 1, max: 2 };
  const containerOf = (plan: ReturnType<typeof planModel>, name: string): V1Container | undefined =>
    (plan.children.find((c) => c.kind === "Deployment" && c.metadata?.name === name) as V1Deployment).spec?.template.spec?.containers[0];
  const onGPU = planModel(model, world());
  const agg = containerOf(onGPU, "gemma-aggregated");
  assert.equal(agg?.image, "engine-gpu:test");
  assert.equal(agg?.resources?.limits?.["nvidia.com/gpu"], "1");
  assert.deepEqual(agg?.args?.slice(agg.args.indexOf("--backend")), [
    "--backend",
    "native",
    "--ctx-size",
    "4096",
    "--parallel",
    "8",
    "--batch-size",
    "512",
    "--flash-attention",
    "--gpu-layers",
    "all",
    "--decode-lookahead",
    "1",
    "--pipeline-decode",
    "off",
    "--rag-recompute",
    "0.5",
  ]);
  assert.equal(containerOf(onGPU, "gemma-router")?.image, "engine:test");
  model.spec.placement = { gpusPerReplica: 0 };
  const cpu = containerOf(planModel(model, world()), "gemma-aggregated");
  assert.equal(cpu?.image, "engine:test");
  assert.deepEqual(cpu?.args?.slice(cpu.args.indexOf("--backend")), [
    "--backend",
    "native",
    "--ctx-size",
    "2048",
    "--parallel",
    "4",
    "--batch-size",
    "512",
    "--gpu-layers",
    "0",
    "--decode-lookahead",
    "1",
    "--pipeline-decode",
    "off",
    "--rag-recompute",
    "0.5",
  ]);
  const withGPUPool = containerOf(planModel(model, world({ decodePools: [aDecodePool("d", "gemma")] })), "gemma-aggregated");
  assert.ok(withGPUPool?.args?.includes("--flash-attention"), "a GPU pool of the Model puts its CPU replicas on the Model-wide GPU defaults too");
});
