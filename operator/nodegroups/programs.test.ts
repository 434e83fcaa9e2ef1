// The cloud programs under Pulumi's own mocks (pulumi.runtime.setMocks): the resources they
// register and their inputs, with no cloud and no CLI.
import { before, test } from "node:test";
import assert from "node:assert/strict";
import * as pulumi from "@pulumi/pulumi";
import { programFor, type ProgramInputs } from "./programs.ts";

const registered: pulumi.runtime.MockResourceArgs[] = [];

before(async () => {
  await pulumi.runtime.setMocks(
    {
      newResource: (args) => {
        registered.push(args);
        return { id: `${args.name}-id`, state: args.inputs as Record<string, unknown> };
      },
      call: (args) => args.inputs as Record<string, unknown>,
    },
    "llmfleet-nodegroups",
    "test",
    true,
  );
});

const inputs = (over: Partial<ProgramInputs>): ProgramInputs => ({
  cloud: "aws",
  desired: 3,
  min: 1,
  max: 8,
  cluster: "prod",
  nodeGroup: "h100",
  region: "us-east-2",
  gpusPerNode: 8,
  gpuType: "NVIDIA-H100-80GB-HBM3",
  labels: { "serving.llmfleet.dev/node-group": "h100" },
  taints: [{ key: "nvidia.com/gpu", value: "present", effect: "NoSchedule" }],
  config: { nodeRoleArn: "arn:aws:iam::1:role/n", subnetIds: "subnet-a,subnet-b", instanceType: "p5.48xlarge", machineType: "a3-highgpu-8g" },
  kwokNodes: [],
  ...over,
});

function outputValue<T>(o: pulumi.Output<T>): Promise<T> {
  return new Promise((resolve) => o.apply(resolve));
}

function only(type: string): pulumi.runtime.MockResourceArgs {
  const found = registered.filter((r) => r.type === type);
  const [first, ...rest] = found;
  assert.ok(first && rest.length === 0, `${type}: ${registered.map((r) => r.type).join(", ")}`);
  return first;
}

test("aws: an EKS managed node group with scalingConfig.desiredSize = desired nodes, on a provider for the region", async () => {
  registered.length = 0;
  const out = (await programFor(inputs({ cloud: "aws", desired: 5 }))()) as { desiredSize: pulumi.Output<number> };
  assert.equal(await outputValue(out.desiredSize), 5);
  const ng = only("aws:eks/nodeGroup:NodeGroup").inputs as Record<string, unknown>;
  assert.deepEqual(ng.scalingConfig, { desiredSize: 5, minSize: 1, maxSize: 8 });
  assert.equal(ng.clusterName, "prod");
  assert.equal(ng.nodeGroupName, "h100");
  assert.deepEqual(ng.subnetIds, ["subnet-a", "subnet-b"]);
  assert.deepEqual(ng.instanceTypes, ["p5.48xlarge"]);
  assert.deepEqual(ng.taints, [{ key: "nvidia.com/gpu", value: "present", effect: "NO_SCHEDULE" }]);
  assert.deepEqual(ng.labels, { "serving.llmfleet.dev/node-group": "h100" });
  assert.equal((only("pulumi:providers:aws").inputs as Record<string, unknown>).region, "us-east-2");
});

test("gcp: a GKE node pool with nodeCount = desired nodes and the GPUs per node as guest accelerators", async () => {
  registered.length = 0;
  const out = (await programFor(inputs({ cloud: "gcp", desired: 2, region: "us-central1" }))()) as { nodeCount: pulumi.Output<number> };
  assert.equal(await outputValue(out.nodeCount), 2);
  const pool = only("gcp:container/nodePool:NodePool").inputs as Record<string, unknown> & { nodeConfig: Record<string, unknown> };
  assert.equal(pool.nodeCount, 2);
  assert.equal(pool.cluster, "prod");
  assert.equal(pool.location, "us-central1");
  assert.equal(pool.nodeConfig.machineType, "a3-highgpu-8g");
  assert.deepEqual(pool.nodeConfig.guestAccelerators, [{ type: "NVIDIA-H100-80GB-HBM3", count: 8 }]);
  assert.deepEqual(pool.nodeConfig.taints, [{ key: "nvidia.com/gpu", value: "present", effect: "NO_SCHEDULE" }]);
});

test("aws and gcp refuse a spec without cluster or nodeGroup", async () => {
  await assert.rejects(programFor(inputs({ cloud: "aws", cluster: undefined }))(), /cluster is required for aws/);
  await assert.rejects(programFor(inputs({ cloud: "gcp", nodeGroup: undefined }))(), /nodeGroup is required for gcp/);
});

test("kwok: one dynamic KwokNode per wanted node, carrying the Node manifest", async () => {
  registered.length = 0;
  const node = (name: string): ProgramInputs["kwokNodes"][number] => ({ apiVersion: "v1", kind: "Node", metadata: { name } });
  const out = (await programFor(inputs({ cloud: "kwok", kwokNodes: [node("g-0"), node("g-1")] }))()) as { nodes: pulumi.Output<string[]> };
  assert.deepEqual(await outputValue(out.nodes), ["g-0-id", "g-1-id"]);
  const nodes = registered.filter((r) => r.type === "pulumi-nodejs:dynamic/llmfleet:KwokNode");
  assert.equal(nodes.length, 2, registered.map((r) => r.type).join(", "));
  assert.deepEqual(
    nodes.map((r) => r.name),
    ["g-0", "g-1"],
  );
  assert.deepEqual((nodes[0]?.inputs as { node: unknown }).node, node("g-0"));
});
