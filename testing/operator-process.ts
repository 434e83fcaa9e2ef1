// Runs the real operator (operator/main.ts) as a child process for integration tests, keeping
// its output so a failing test can print it, and reads its reconcile counters.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { resolve } from "node:path";
import { touch } from "./cluster.ts";
import { eventually } from "./eventually.ts";

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

/** The base URL of the operator's health and metrics server, from the port it logs at start. */
export function healthUrl(op: OperatorProcess): string {
  const port = /health on [\d.]+:(\d+)/.exec(op.logs())?.[1];
  if (!port) throw new Error(`operator ${op.id} has not logged its health port yet`);
  return `http://127.0.0.1:${port}`;
}

/** Reconcile passes each controller has finished so far, whatever their result (from /metrics). */
export async function reconcileCounts(op: OperatorProcess): Promise<Record<string, number>> {
  const text = await (await fetch(`${healthUrl(op)}/metrics`)).text();
  const counts: Record<string, number> = {};
  for (const [, labels = "", value = ""] of text.matchAll(/^llmfleet_operator_reconcile_duration_seconds_count\{([^}]*)\} (\S+)$/gm)) {
    const controller = /controller="([^"]*)"/.exec(labels)?.[1] ?? "";
    counts[controller] = (counts[controller] ?? 0) + Number(value);
  }
  return counts;
}

export interface ReconciledSinceOptions {
  /** Passes each controller must have finished since. Default 1. */
  passes?: number;
  timeoutMs?: number;
}

/**
 * Waits until each of `controllers` has finished `passes` more passes than `since` counted: take
 * `since` before making a change, and the operator has then reconciled after it. A pass already
 * running when `since` was taken also counts, so take it while the operator is idle, or ask for
 * one pass more.
 */
export async function reconciledSince(
  op: OperatorProcess,
  since: Record<string, number>,
  controllers: string[],
  opts: ReconciledSinceOptions = {},
): Promise<void> {
  const passes = opts.passes ?? 1;
  await eventually(
    async () => {
      const now = await reconcileCounts(op);
      for (const c of controllers) assert.ok((now[c] ?? 0) >= (since[c] ?? 0) + passes, `${c}: ${now[c] ?? 0} passes, waiting for ${(since[c] ?? 0) + passes}`);
    },
    { message: `operator ${op.id} reconciled after the change`, timeoutMs: opts.timeoutMs },
  );
}

/**
 * Touches `objects` ("kind/name", see touch) and waits until the operator has reconciled every
 * kind of them since: what a reconcile of the objects as they stand would change, it has changed by
 * then. Returns each object's resourceVersion as the touch left it ("kind/name@rv").
 */
export async function touchAndAwaitReconcile(op: OperatorProcess, namespace: string, objects: string[]): Promise<string[]> {
  const kinds = objects.map((o) => o.split("/")[0] ?? o);
  const since = await reconcileCounts(op);
  const touched = await touch(namespace, objects);
  await reconciledSince(op, since, kinds);
  return touched;
}
