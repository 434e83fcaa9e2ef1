// What every e2e scenario stands on: a namespace, kwok nodes, the operator installed from the
// chart (its pods run as containers from the operator image under the chart's ServiceAccount),
// and a pod runner that runs every Running engine pod as a container from the engine image it
// names (LLMFLEET_E2E_PODS=processes: bare processes, no images). On failure it dumps operator
// logs, Events and engine logs.
import { execFile } from "node:child_process";
import { resolve } from "node:path";
import { promisify } from "node:util";
import { eventually } from "../../testing/eventually.ts";
import { kubectl, kubectlOk } from "../../testing/kubectl.ts";
import { OperatorPods } from "../harness/operator-pods.ts";
import { ensureImages, podMode } from "../../testing/containers.ts";
import { PodRunner } from "../harness/pod-runner.ts";
import { createKwokGpuNode, type KwokGpuNodeOptions } from "../../scripts/cluster/kwok-nodes.ts";
import { ensureNamespace, installCRDs } from "../../testing/cluster.ts";

const run = promisify(execFile);
const ROOT = resolve(import.meta.dirname, "../..");

export interface Fleet extends AsyncDisposable {
  namespace: string;
  runner: PodRunner;
  operators: OperatorPods;
  engineLog: string[];
  /** Runs `body`; if it throws, prints operator logs, Events and engine logs first. */
  dumpOnFailure<T>(body: () => Promise<T>): Promise<T>;
}

export interface FleetOptions {
  namespace: string;
  nodes: Array<[string, KwokGpuNodeOptions]>;
  operatorArgs?: string[];
}

/** The nodes examples/quickstart.yaml needs: one 8-GPU node of its group h100 (with its taint) and a CPU node. */
export function quickstartNodes(prefix: string): Array<[string, KwokGpuNodeOptions]> {
  const gpu: KwokGpuNodeOptions = {
    gpus: 8,
    labels: { "serving.llmfleet.dev/node-group": "h100" },
    taints: [{ key: "llmfleet.dev/gpu", value: "true", effect: "NoSchedule" }],
  };
  return [
    [`${prefix}-gpu-0`, gpu],
    [`${prefix}-cpu-0`, { gpus: 0 }],
  ];
}

async function helm(args: string[]): Promise<void> {
  const bin = (await run("bash", [resolve(ROOT, "scripts/helm/build.sh")], { maxBuffer: 16 << 20 })).stdout.trim();
  await run(bin, [...args, "--kubeconfig", process.env.KUBECONFIG ?? ""], { cwd: ROOT, maxBuffer: 16 << 20 });
}

export async function startFleet(opts: FleetOptions): Promise<Fleet> {
  const ns = opts.namespace;
  const sys = `${ns}-system`;
  // The images the chart and the operator name, built from this checkout (seconds when warm).
  if (podMode() === "containers") await ensureImages();
  await installCRDs();
  for (const n of [ns, sys]) await kubectlOk(["delete", "namespace", n, "--ignore-not-found", "--wait=true", "--timeout=60s"]);
  await ensureNamespace(ns);
  await kubectlOk(["delete", "node", ...opts.nodes.map(([name]) => name), "--ignore-not-found"]);
  for (const [name, node] of opts.nodes) await createKwokGpuNode(process.env.KUBECONFIG ?? "", name, node);
  const extra = (opts.operatorArgs ?? []).flatMap((a, i) => ["--set", `extraArgs[${i}]=${a}`]);
  // kwok's GPU nodes have no GPU: their pods run the CPU engine image (GPU settings are harmless
  // there), as the CUDA image is not runnable on this machine (no GPU) and e2e builds the CPU images only.
  if (podMode() === "containers") extra.push("--set", "engineGPUImage=llmfleet/engine:0.1.0");
  await helm([
    "install",
    "llmfleet",
    "charts/llmfleet",
    "-n",
    sys,
    "--create-namespace",
    "--set",
    "replicas=1",
    "--set",
    `watchNamespace=${ns}`,
    ...extra,
    "--wait",
    "--timeout",
    "120s",
  ]);
  const operators = new OperatorPods(sys);
  await operators.start();
  await eventually(() => (operators.processes.size > 0 ? undefined : Promise.reject(new Error(`no operator pod running\n${operators.logs()}`))), {
    message: "operator pod runs",
  });
  const engineLog: string[] = [];
  const runner = new PodRunner({ namespace: ns, log: (l) => engineLog.push(l) });
  await runner.start();
  return {
    namespace: ns,
    runner,
    operators,
    engineLog,
    async dumpOnFailure<T>(body: () => Promise<T>): Promise<T> {
      try {
        return await body();
      } catch (err) {
        const events = await kubectl(["get", "events", "-n", ns, "--sort-by=.lastTimestamp"]);
        // Each autoscaled pool's last decision, its reason and inputs: why a pool did or did not scale.
        const pools = await kubectl(["get", "prefillpools,decodepools", "-n", ns, "-o", "json"]);
        const decisions = ((): string => {
          try {
            const items = (JSON.parse(pools.stdout) as { items: Array<{ kind: string; metadata: { name: string }; status?: { autoscaler?: unknown } }> }).items;
            return items.map((p) => `${p.kind}/${p.metadata.name}: ${JSON.stringify(p.status?.autoscaler ?? null)}`).join("\n");
          } catch {
            return pools.stderr;
          }
        })();
        console.error(
          `${operators.logs()}\n--- events ---\n${events.stdout}\n--- autoscaler decisions ---\n${decisions}\n--- engines ---\n${engineLog.slice(-200).join("\n")}`,
        );
        throw err;
      }
    },
    async [Symbol.asyncDispose](): Promise<void> {
      const step = (what: string): void => void (process.env.LLMFLEET_E2E_DEBUG && console.error(`fixture teardown: ${what}`));
      step("engines");
      await runner[Symbol.asyncDispose]();
      step("operator");
      await operators[Symbol.asyncDispose]();
      step("helm uninstall");
      await helm(["uninstall", "llmfleet", "-n", sys, "--wait"]).catch(() => undefined);
      step("done");
    },
  };
}
