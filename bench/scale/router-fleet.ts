// The router bench's fleet on loopback: engine processes (aggregated role, the tiny synthetic
// model), a TCP proxy per upstream in front of them (so one router sees 100 distinct pods, each a
// real engine behind), and router processes, each started as the operator's router pod runs it:
// the engine bundled into one ES module as the engine image has it (scripts/images/build.sh),
// `node engine.mjs` with NODE_ENV=production. Run through tsx instead, a router's RSS was 240 MB
// before its first request (tsx's loader thread and the source it keeps), 89 MB bundled.
// Each proxy notes which prompt markers ("P<id>|") it carried, so the bench knows which upstream
// a prefix went to.
import { execFile } from "node:child_process";
import { mkdtempSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { SHORT_DRAIN } from "../../operator/plan/runtime-args.ts";
import { startServer, type RunningServer } from "../http/servers.ts";
import { freePorts } from "../../operator/local/ports.ts";

const ROOT = resolve(import.meta.dirname, "../..");
let bundle: Promise<string> | undefined;

/** engine/main.ts as one ES module, built as scripts/images/build.sh builds the image's (once per process). */
export function engineBundle(): Promise<string> {
  bundle ??= (async (): Promise<string> => {
    const out = join(mkdtempSync(join(tmpdir(), "llmfleet-router-bench-")), "engine.mjs");
    const banner = "import { createRequire as __llmfleetRequire } from 'node:module'; const require = __llmfleetRequire(import.meta.url);";
    const args = ["esbuild", "engine/main.ts", "--bundle", "--platform=node", "--format=esm", "--target=node20", "--log-level=warning", "--legal-comments=none"];
    await promisify(execFile)("npx", [...args, `--outfile=${out}`, "--external:node-llama-cpp", `--banner:js=${banner}`], { cwd: ROOT });
    return out;
  })();
  return bundle;
}

const ENGINE = ["--import", "tsx", "engine/main.ts"];

/** The engines' context per sequence, in tokens: the bench's prompts and completions must fit in it. */
export const ENGINE_CTX_TOKENS = 128;
/** Completion tokens per bench request. */
export const COMPLETION_TOKENS = 16;
/** Markers the bench sends stay below this, so the longest prompt is known (and checked before a run). */
export const MAX_MARKER = 999_999;

/**
 * A bench prompt: the marker (which upstream carried it) and a sentence. About 50 characters, so
 * with COMPLETION_TOKENS it stays well inside ENGINE_CTX_TOKENS; the bench checks the longest one
 * against an engine before it measures anything.
 */
export const benchPrompt = (marker: number): string => `P${marker}| the quick brown fox jumps over the lazy dog`;

export async function startEngine(model: string, parallel: number): Promise<RunningServer> {
  const port = (await freePorts(1))[0]!;
  const args = [...ENGINE, "--role", "aggregated", "--model", model, "--backend", "native", "--host", "127.0.0.1", "--port", String(port)];
  const sizing = ["--parallel", String(parallel), "--ctx-size", String(ENGINE_CTX_TOKENS), "--batch-size", "512", "--threads", "1", "--max-queue", "4096"];
  return startServer(`engine:${port}`, process.execPath, [...args, ...sizing], { port, readyPath: "/ready", timeoutMs: 600_000 });
}

export interface RouterOptions {
  upstreams: string[];
  maxStreams: number;
  port?: number;
  /** Default: the delay the operator plans for its pods (endpoints take a moment to drop a pod that turned unready). */
  drainDelaySeconds?: number;
  /** V8 flags for the router process (e.g. its heap size), before the script. */
  nodeFlags?: string[];
  /** CPUs the router runs on (taskset -c), as a pod has its own CPU; default: any. */
  cpus?: string;
}

export async function startRouter(o: RouterOptions): Promise<RunningServer> {
  const port = o.port ?? ((await freePorts(1))[0]!);
  const args = [await engineBundle(), "--role", "router", "--aggregated", o.upstreams.join(","), "--policy", "prefix-aware", "--host", "127.0.0.1", "--port", String(port)];
  const drain = ["--drain-delay-seconds", String(o.drainDelaySeconds ?? SHORT_DRAIN.delaySeconds), "--drain-timeout-seconds", "60", "--max-streams", String(o.maxStreams)];
  const node = [process.execPath, ...(o.nodeFlags ?? []), ...args, ...drain];
  const [cmd, ...argv] = (o.cpus ? ["taskset", "-c", o.cpus, ...node] : node) as [string, ...string[]];
  return startServer(`router:${port}`, cmd, argv, { port, readyPath: "/ready", timeoutMs: 120_000, env: { NODE_ENV: "production" } });
}

export interface MarkedProxy {
  url: string;
  /** Prompt marker id → times this proxy carried it. */
  seen: Map<number, number>;
  close(): void;
}

const MARKER = /"prompt":"P(\d+)\|/g;

/** A TCP proxy to `target` that records the prompt markers of the requests it carries. */
export async function startMarkedProxy(target: number): Promise<MarkedProxy> {
  const seen = new Map<number, number>();
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target, "127.0.0.1");
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => s.destroy());
    }
    client.on("data", (chunk: Buffer) => {
      for (const m of chunk.toString("latin1").matchAll(MARKER)) seen.set(Number(m[1]), (seen.get(Number(m[1])) ?? 0) + 1);
    });
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  return {
    url,
    seen,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

/** Which proxies carried each marker: marker → proxy indexes (in the order of `proxies`). */
export function routesByMarker(proxies: MarkedProxy[]): Map<number, number[]> {
  const out = new Map<number, number[]>();
  proxies.forEach((p, i) => {
    for (const [marker, n] of p.seen) out.set(marker, [...(out.get(marker) ?? []), ...Array<number>(n).fill(i)]);
  });
  return out;
}
