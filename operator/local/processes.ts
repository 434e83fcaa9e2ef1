// The local process driver: what a Deployment is to a cluster, a set of engine processes is
// here. Each replica gets a loopback port; in-cluster Service URLs in the planned arguments are
// rewritten to the loopback URLs of that Service's processes.
import { spawn, type ChildProcess } from "node:child_process";
import { resolve } from "node:path";
import { nativeAddonPath } from "../../engine/native/binding.ts";

const ROOT = resolve(import.meta.dirname, "../..");

export interface EngineProcessSpec {
  /** Deployment name, e.g. gemma-prefill-prefill; its Service has the same name. */
  name: string;
  replica: number;
  port: number;
  args: string[];
  /** The planned container environment (literal values), over this process's own. */
  env?: Record<string, string>;
}

export interface RunningEngine {
  spec: EngineProcessSpec;
  child: ChildProcess;
  url: string;
}

/** Replaces every http://<service>.<ns>.svc[:port] by the comma-joined URLs of its processes. */
export function rewriteServiceURLs(args: string[], urlsByService: Map<string, string[]>): string[] {
  return args.map((arg) =>
    arg.replace(/http:\/\/([a-z0-9-]+)\.[a-z0-9-]+\.svc(:\d+)?/g, (whole, svc: string) => {
      const urls = urlsByService.get(svc);
      return urls && urls.length > 0 ? urls.join(",") : whole;
    }),
  );
}

/** Sets (or replaces) a flag's value in an argument list. */
export function withFlag(args: string[], flag: string, value: string): string[] {
  const i = args.indexOf(flag);
  if (i < 0) return [...args, flag, value];
  const out = [...args];
  out[i + 1] = value;
  return out;
}

/**
 * Planned model pods run --backend native; without LLMFLEET_NATIVE_ADDON each engine would find
 * (or, on a cold cache, build) the CPU addon itself, and prefill and decode processes that start
 * together would all wait on one build and count it as their startup time. Called once before
 * engines start, it builds or finds the addon and names it to every process started after it.
 */
export async function prepareNativeAddon(log: (line: string) => void): Promise<void> {
  if (process.env.LLMFLEET_NATIVE_ADDON) return;
  const path = await nativeAddonPath();
  process.env.LLMFLEET_NATIVE_ADDON = path;
  log(`native engine addon: ${path}`);
}

export function startEngine(spec: EngineProcessSpec, log: (line: string) => void): RunningEngine {
  const args = ["--import", "tsx", "engine/main.ts", ...spec.args];
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...spec.env } });
  const tag = `[${spec.name}#${spec.replica}]`;
  for (const stream of [child.stdout, child.stderr]) {
    let partial = "";
    stream?.on("data", (d: Buffer) => {
      const lines = (partial + d.toString()).split(/\r?\n/);
      partial = lines.pop() ?? "";
      for (const l of lines) if (l.trim()) log(`${tag} ${l}`);
    });
  }
  const hostAt = spec.args.indexOf("--host");
  const host = hostAt >= 0 ? (spec.args[hostAt + 1] ?? "127.0.0.1") : "127.0.0.1";
  return { spec, child, url: `http://${host}:${spec.port}` };
}

/** Resolves when the engine answers /health; rejects if the process exits first. */
export async function waitHealthy(e: RunningEngine, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (e.child.exitCode !== null || e.child.signalCode !== null)
      throw new Error(`${e.spec.name}#${e.spec.replica} exited (${e.child.exitCode ?? e.child.signalCode})`);
    const ok = await fetch(`${e.url}/health`, { signal: AbortSignal.timeout(2000) }).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return;
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`${e.spec.name}#${e.spec.replica} not healthy after ${timeoutMs} ms`);
}

export async function stopEngines(engines: RunningEngine[]): Promise<void> {
  await Promise.all(
    engines.map(
      (e) =>
        new Promise<void>((res) => {
          if (e.child.exitCode !== null || e.child.signalCode !== null) return res();
          e.child.once("exit", () => res());
          e.child.kill("SIGTERM");
          setTimeout(() => e.child.kill("SIGKILL"), 10_000).unref();
        }),
    ),
  );
}
