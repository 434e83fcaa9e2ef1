// A Pulumi dynamic provider of ours: each resource is one kwok Node, created and deleted through
// the apiserver. Pulumi serializes the provider's methods and runs them in its dynamic-provider
// host (pulumi-resource-pulumi-nodejs, shipped in @pulumi/pulumi), so they use nothing from this
// file's scope but CLIENT_NODE, captured by value: that host runs in the stack's temp work dir,
// where a bare import would not find our node_modules. The kubeconfig comes from that process's
// environment (KUBECONFIG, or the pod's service account).
import * as pulumi from "@pulumi/pulumi";
import type { V1Node } from "@kubernetes/client-node";

export interface KwokNodeArgs {
  node: pulumi.Input<V1Node>;
}

/** Absolute URL of @kubernetes/client-node, resolved here, where our node_modules are. */
const CLIENT_NODE = import.meta.resolve("@kubernetes/client-node");

interface NodeInputs {
  node: V1Node;
}

const kwokNodeProvider: pulumi.dynamic.ResourceProvider<NodeInputs, NodeInputs> = {
  async create(inputs: NodeInputs): Promise<pulumi.dynamic.CreateResult<NodeInputs>> {
    const k8s = (await import(CLIENT_NODE)) as typeof import("@kubernetes/client-node");
    const kc = new k8s.KubeConfig();
    kc.loadFromDefault();
    const api = kc.makeApiClient(k8s.CoreV1Api);
    const name = inputs.node.metadata?.name ?? "";
    try {
      await api.createNode({ body: inputs.node });
    } catch (err) {
      if ((err as { code?: number }).code !== 409) throw err;
    }
    return { id: name, outs: inputs };
  },
  async delete(id: string): Promise<void> {
    const k8s = (await import(CLIENT_NODE)) as typeof import("@kubernetes/client-node");
    const kc = new k8s.KubeConfig();
    kc.loadFromDefault();
    const api = kc.makeApiClient(k8s.CoreV1Api);
    try {
      await api.deleteNode({ name: id });
    } catch (err) {
      if ((err as { code?: number }).code !== 404) throw err;
    }
  },
  async diff(_id: string, olds: NodeInputs, news: NodeInputs): Promise<pulumi.dynamic.DiffResult> {
    // Compared with sorted keys: the old inputs come back from the stack's state, whose key order
    // need not be ours, and a spurious difference here replaces (deletes) a node. Defined inline,
    // as the provider may use nothing from this file's scope.
    const sorted = (v: unknown): unknown => {
      if (Array.isArray(v)) return v.map(sorted);
      if (v === null || typeof v !== "object") return v;
      const entries = Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      return Object.fromEntries(entries.map(([k, x]) => [k, sorted(x)]));
    };
    const changes = JSON.stringify(sorted(olds.node)) !== JSON.stringify(sorted(news.node));
    return { changes, replaces: changes ? ["node"] : [], deleteBeforeReplace: true };
  },
};

export class KwokNode extends pulumi.dynamic.Resource {
  constructor(name: string, args: KwokNodeArgs, opts?: pulumi.CustomResourceOptions) {
    super(kwokNodeProvider, name, args, opts, "llmfleet", "KwokNode");
  }
}
