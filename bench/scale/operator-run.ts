// The operator as the scale benchmark runs it: a child process of operator/main.ts from a given
// source tree (this one, or a baseline's), under the chart's RBAC, with its /metrics read as
// snapshots and its memory and CPU read from /proc.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseSnapshot, processStats, quiescent as quiet, type OperatorSnapshot, type QuietOptions } from "../../testing/scale-fleet.ts";

export interface OperatorRun {
  readonly id: string;
  readonly pid: number;
  readonly startedAt: number;
  logs(): string;
  snapshot(): Promise<OperatorSnapshot>;
  stats(): { rssMB: number; cpuSeconds: number };
  /** Resolves once the process has logged that it leads and its caches synced. */
  reconciling(): Promise<number>;
  kill(signal: NodeJS.Signals): Promise<void>;
}

/** The chart's memory limit for the operator container (charts/llmfleet/values.yaml resources.limits.memory), in bytes. */
export function chartOperatorMemoryLimit(root: string): number {
  const text = readFileSync(join(root, "charts/llmfleet/values.yaml"), "utf8");
  const limit = /limits:\s*\{\s*memory:\s*(\d+)(Mi|Gi)\s*\}/.exec(text);
  if (!limit) throw new Error("charts/llmfleet/values.yaml: no resources.limits.memory (as {memory: NMi})");
  return Number(limit[1]) * 2 ** (limit[2] === "Gi" ? 30 : 20);
}

/**
 * A memory cgroup with this limit, as the container runtime gives the pod (cgroup v2, else v1's
 * memory controller): Node sizes V8's heap from it (a 512 MiB limit gives a 259 MB heap limit, the
 * host's 24 GB gave 4 GB), and the kernel kills the process past it, as in the pod.
 */
function memoryCgroup(name: string, bytes: number): string {
  const v2 = "/sys/fs/cgroup/cgroup.controllers";
  const dir = existsSync(v2) ? join("/sys/fs/cgroup", name) : join("/sys/fs/cgroup/memory", name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, existsSync(v2) ? "memory.max" : "memory.limit_in_bytes"), String(bytes));
  return join(dir, "cgroup.procs");
}

const bundles = new Map<string, string>();

/**
 * operator/main.ts of `root` as the operator image runs it: one esbuild bundle beside a
 * node_modules link (@pulumi/* left external), built as scripts/images/build.sh builds it, once.
 */
export function operatorBundle(root: string): string {
  let out = bundles.get(root);
  if (out) return out;
  const work = mkdtempSync(join(tmpdir(), "llmfleet-scale-operator-"));
  symlinkSync(join(root, "node_modules"), join(work, "node_modules"));
  writeFileSync(join(work, "package.json"), '{ "type": "module", "private": true }\n');
  out = join(work, "operator.mjs");
  const banner = "import { createRequire as __llmfleetRequire } from 'node:module'; const require = __llmfleetRequire(import.meta.url);";
  const flags = ["--bundle", "--platform=node", "--format=esm", "--target=node20", "--log-level=warning", "--legal-comments=none", "--external:node-llama-cpp", "--external:@pulumi/*"];
  execFileSync("npx", ["esbuild", "operator/main.ts", ...flags, `--outfile=${out}`, `--banner:js=${banner}`], { cwd: root, stdio: "inherit" });
  bundles.set(root, out);
  return out;
}

/** How the operator process runs: the image's bundle (default), or its source through tsx. */
export type OperatorForm = "bundle" | "tsx";

export function startOperatorRun(root: string, id: string, kubeconfig: string, o: { memoryLimitBytes?: number; form?: OperatorForm } = {}): OperatorRun {
  const { memoryLimitBytes, form = "bundle" } = o;
  const entry = form === "bundle" ? [operatorBundle(root)] : ["--import", "tsx", "operator/main.ts"];
  const args = [...entry, "--health-port", "0", "--health-host", "127.0.0.1", "--id", id, "--lease-namespace", "llmfleet-system"];
  const procs = memoryLimitBytes === undefined ? undefined : memoryCgroup(`llmfleet-bench-operator-${process.pid}`, memoryLimitBytes);
  // In the cgroup from its first instruction: the shell moves itself there, then becomes node.
  const [command, argv] = procs ? ["sh", ["-c", `echo $$ > ${procs} && exec "$0" "$@"`, process.execPath, ...args]] : [process.execPath, args];
  const child = spawn(command, argv, { cwd: root, env: { ...process.env, KUBECONFIG: kubeconfig }, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const keep = (d: Buffer): void => {
    output = (output + d.toString()).slice(-200_000);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const startedAt = Date.now();
  const url = async (): Promise<string> => {
    for (;;) {
      const port = /health on [\d.]+:(\d+)/.exec(output)?.[1];
      if (port) return `http://127.0.0.1:${port}/metrics`;
      if (child.exitCode !== null) throw new Error(`operator ${id} exited:\n${output.slice(-4000)}`);
      await sleep(200);
    }
  };
  return {
    id,
    pid: child.pid ?? 0,
    startedAt,
    logs: () => output,
    snapshot: async () => parseSnapshot(await (await fetch(await url())).text()),
    stats: () => processStats(child.pid ?? 0),
    reconciling: async () => {
      while (!/caches synced/.test(output)) {
        if (child.exitCode !== null) throw new Error(`operator ${id} exited:\n${output.slice(-4000)}`);
        await sleep(200);
      }
      return Date.now();
    },
    kill: async (signal) => {
      await killed(child, signal);
      // The cgroup goes with its process (one per process; rmdir fails while a child lingers, which is left as it is).
      if (procs) rmdirQuiet(dirname(procs));
    },
  };
}

function killed(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  const exited = new Promise<void>((res) => child.once("exit", () => res()));
  child.kill(signal);
  return exited;
}

/** Waits until the operator is quiet (testing/scale-fleet.ts quiescent). */
export function quiescent(op: OperatorRun, opts: QuietOptions = {}): Promise<number> {
  return quiet(() => op.snapshot(), { ...opts, what: `operator ${op.id}` });
}

function rmdirQuiet(dir: string): void {
  try {
    rmdirSync(dir);
  } catch {
    // a process still in it: left for the host to clean
  }
}
