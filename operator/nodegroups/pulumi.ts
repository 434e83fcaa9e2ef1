// The pulumi provider: one Automation API stack per GPUNodeGroup (spec.provider.pulumi.stack, by
// default <namespace>-<name>), in project llmfleet-nodegroups, running the inline program for the
// group's cloud (programs.ts) with the change as its inputs. The CLI is `pulumi` on PATH (or in
// opts.pulumiRoot/bin, else LLMFLEET_PULUMI_ROOT); its state backend is spec.provider.pulumi.backendURL or PULUMI_BACKEND_URL;
// cloud credentials and PULUMI_CONFIG_PASSPHRASE come from the operator's environment.
// Update checks and plugin downloads are off: plugins must already be installed.
import { mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createRequire } from "node:module";
import { ConcurrentUpdateError, LocalWorkspace, PulumiCommand } from "@pulumi/pulumi/automation/index.js";
import type { GPUNodeGroup } from "../api.ts";
import { NODE_GROUP_LABEL } from "../../crds/schema/nodegroup.ts";
import { kwokNodeFor } from "./kwok.ts";
import { programFor, type ProgramInputs } from "./programs.ts";
import { ConcurrentUpdate, type NodeGroupChange, type NodeGroupProvider } from "./provider.ts";

export const PULUMI_PROJECT = "llmfleet-nodegroups";

export interface PulumiOptions {
  /** Install root of the Pulumi CLI (`pulumi` in its bin/), as scripts/pulumi/build.sh prints. Default: `pulumi` on PATH. */
  pulumiRoot?: string;
  /** Extra environment for every Pulumi command (merged over the operator's). */
  env?: Record<string, string>;
  /** Parent of the stacks' work dirs (Pulumi.yaml), one per stack, reused by every run. Default: <tmpdir>/llmfleet-pulumi. */
  workRoot?: string;
}

const require = createRequire(import.meta.url);
/** Where pulumi-resource-pulumi-nodejs (the dynamic-provider host shim) and its node_modules are. */
const SDK_DIR = dirname(require.resolve("@pulumi/pulumi/package.json"));
const NODE_MODULES = resolve(SDK_DIR, "../..");

export function stackName(group: GPUNodeGroup): string {
  return group.spec.provider.pulumi?.stack ?? `${group.metadata?.namespace ?? "default"}-${group.metadata?.name ?? ""}`;
}

export function programInputs(change: NodeGroupChange): ProgramInputs {
  const { group } = change;
  const s = group.spec.provider.pulumi;
  if (!s) throw new Error("spec.provider.pulumi is not set");
  return {
    cloud: s.cloud,
    desired: change.target,
    min: group.spec.nodes.min,
    max: group.spec.nodes.max,
    cluster: s.cluster,
    nodeGroup: s.nodeGroup,
    region: s.region,
    gpusPerNode: group.spec.gpusPerNode,
    gpuType: group.spec.gpuType,
    labels: { ...group.spec.nodeLabels, [NODE_GROUP_LABEL]: group.metadata?.name ?? "" },
    taints: group.spec.taints ?? [],
    config: s.config ?? {},
    kwokNodes: s.cloud === "kwok" ? [...change.nodes].sort().map((n) => kwokNodeFor(group, n)) : [],
  };
}

/** The environment of every Pulumi command: offline, quiet, and able to find the dynamic-provider host. */
export function pulumiEnv(group: GPUNodeGroup, opts: PulumiOptions): Record<string, string> {
  const base = { ...(process.env as Record<string, string>), ...opts.env };
  const path = [opts.pulumiRoot && resolve(opts.pulumiRoot, "bin"), SDK_DIR, base.PATH].filter(Boolean).join(":");
  const backend = group.spec.provider.pulumi?.backendURL ?? base.PULUMI_BACKEND_URL;
  return {
    ...base,
    PATH: path,
    NODE_PATH: [NODE_MODULES, base.NODE_PATH].filter(Boolean).join(":"),
    PULUMI_SKIP_UPDATE_CHECK: "true",
    PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK: "true",
    PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
    ...(backend ? { PULUMI_BACKEND_URL: backend } : {}),
  };
}

export class PulumiProvider implements NodeGroupProvider {
  readonly name = "pulumi";
  readonly resumable = false;
  constructor(private readonly opts: PulumiOptions = {}) {}

  async apply(change: NodeGroupChange): Promise<string> {
    const envVars = pulumiEnv(change.group, this.opts);
    // One work dir per stack, reused: left to itself the Automation API makes a new temp dir per run.
    const workDir = join(this.opts.workRoot ?? join(tmpdir(), "llmfleet-pulumi"), stackName(change.group));
    mkdirSync(workDir, { recursive: true });
    const pulumiCommand = await PulumiCommand.get({ root: this.opts.pulumiRoot, skipVersionCheck: true });
    const stack = await LocalWorkspace.createOrSelectStack(
      { stackName: stackName(change.group), projectName: PULUMI_PROJECT, program: programFor(programInputs(change)) },
      { workDir, envVars, pulumiCommand, projectSettings: { name: PULUMI_PROJECT, runtime: "nodejs", backend: { url: envVars.PULUMI_BACKEND_URL } } },
    );
    try {
      const result = await stack.up({ color: "never" });
      const changes = Object.entries(result.summary.resourceChanges ?? {})
        .map(([op, n]) => `${op} ${n}`)
        .join(", ");
      return `pulumi up on stack ${stackName(change.group)}: ${result.summary.result} (${changes})`;
    } catch (err) {
      if (err instanceof ConcurrentUpdateError) throw new ConcurrentUpdate(`stack ${stackName(change.group)} is held by another update`, { cause: err });
      throw err;
    }
  }
}
