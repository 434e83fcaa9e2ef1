// The operator as the scale benchmark runs it: a child process of operator/main.ts from a given
// source tree (this one, or a baseline's), under the chart's RBAC, with its /metrics read as
// snapshots and its memory and CPU read from /proc.
import { spawn, type ChildProcess } from "node:child_process";
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

export function startOperatorRun(root: string, id: string, kubeconfig: string): OperatorRun {
  const args = ["--import", "tsx", "operator/main.ts", "--health-port", "0", "--health-host", "127.0.0.1", "--id", id, "--lease-namespace", "llmfleet-system"];
  const child = spawn(process.execPath, args, { cwd: root, env: { ...process.env, KUBECONFIG: kubeconfig }, stdio: ["ignore", "pipe", "pipe"] });
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
    kill: (signal) => killed(child, signal),
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
