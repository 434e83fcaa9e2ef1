// Runs the real operator (operator/main.ts) as a child process for integration tests, keeping
// its output so a failing test can print it.
import { spawn, type ChildProcess } from "node:child_process";
import { resolve } from "node:path";

const ROOT = resolve(import.meta.dirname, "..");

export interface OperatorProcess {
  readonly id: string;
  /** Resolves when the process exits, however it exits. */
  readonly exited: Promise<void>;
  logs(): string;
  /** SIGTERM: releases the lease and exits. */
  stop(): Promise<void>;
  /** SIGKILL: a crash, the lease is left to expire. */
  kill(): Promise<void>;
}

export interface StartOperatorOptions {
  id: string;
  kubeconfig?: string;
  args?: string[];
  env?: Record<string, string>;
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((res) => child.once("exit", () => res()));
}

export function startOperator(opts: StartOperatorOptions): OperatorProcess {
  const args = [
    "--import",
    "tsx",
    "operator/main.ts",
    "--health-port",
    "0",
    "--health-host",
    "127.0.0.1",
    "--id",
    opts.id,
    "--lease-namespace",
    "llmfleet-system",
    ...(opts.args ?? []),
  ];
  const env = { ...process.env, ...opts.env, ...(opts.kubeconfig ? { KUBECONFIG: opts.kubeconfig } : {}) };
  const child = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout?.on("data", (d: Buffer) => (output += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (output += d.toString()));
  return {
    id: opts.id,
    exited: exited(child),
    logs: () => output,
    stop: async () => {
      child.kill("SIGTERM");
      await exited(child);
    },
    kill: async () => {
      child.kill("SIGKILL");
      await exited(child);
    },
  };
}

/** Runs a test body; if it fails, prints the operator's output before rethrowing. */
export async function dumpLogsOnFailure<T>(op: OperatorProcess, body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (err) {
    console.error(`--- operator ${op.id} logs ---\n${op.logs()}`);
    throw err;
  }
}
