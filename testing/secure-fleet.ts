/**
 * A fleet of real engine processes with access configured, for the security tests: a KV store
 * (disk tier, so entries at rest can be read back), an aggregated pod behind a router that
 * requires API keys, and a prefill and a decode pod, every one requiring the fleet token. Each
 * process's stdout and stderr are kept, to check that no key or prompt is ever logged.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { nativeAddonPath } from "../engine/native/binding.ts";
import { freePorts } from "../operator/local/ports.ts";

const ROOT = resolve(import.meta.dirname, "..");

export interface FleetProcess {
  name: string;
  url: string;
  child: ChildProcess;
  log: string[];
}

export interface SecureFleet extends AsyncDisposable {
  dir: string;
  fleetToken: string;
  kvKeyFile: string;
  kvDir: string;
  accessFile: string;
  router: FleetProcess;
  aggregated: FleetProcess;
  prefill: FleetProcess;
  decode: FleetProcess;
  kvstore: FleetProcess;
  all: FleetProcess[];
  /** Every line any process wrote so far. */
  logs(): string;
}

function start(name: string, port: number, args: string[]): FleetProcess {
  const child = spawn(process.execPath, ["--import", "tsx", "engine/main.ts", "--host", "127.0.0.1", "--port", String(port), ...args], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
    env: process.env,
  });
  const proc: FleetProcess = { name, url: `http://127.0.0.1:${port}`, child, log: [] };
  child.stdout?.on("data", (d: Buffer) => proc.log.push(d.toString()));
  child.stderr?.on("data", (d: Buffer) => proc.log.push(d.toString()));
  return proc;
}

async function waitHealthy(p: FleetProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (p.child.exitCode !== null) throw new Error(`${p.name} exited ${p.child.exitCode}: ${p.log.join("")}`);
    const ok = await fetch(`${p.url}/health`, { signal: AbortSignal.timeout(1000) }).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${p.name} not healthy after ${timeoutMs} ms: ${p.log.join("")}`);
}

export interface SecureFleetOptions {
  model: string;
  /** The access file's YAML. */
  access: string;
  /** Extra router flags. */
  routerArgs?: string[];
}

const MODEL_ARGS = ["--threads", "1", "--ctx-size", "1024", "--parallel", "2", "--max-queue", "64"];

export async function startSecureFleet(opts: SecureFleetOptions): Promise<SecureFleet> {
  process.env.LLMFLEET_NATIVE_ADDON ??= await nativeAddonPath();
  const dir = mkdtempSync(join(tmpdir(), "llmfleet-security-"));
  const fleetToken = randomBytes(24).toString("base64url");
  const tokenFile = join(dir, "fleet-token");
  const kvKeyFile = join(dir, "kv-key");
  const accessFile = join(dir, "access.yaml");
  const kvDir = join(dir, "kv");
  writeFileSync(tokenFile, fleetToken, { mode: 0o600 });
  writeFileSync(kvKeyFile, randomBytes(32).toString("base64url"), { mode: 0o600 });
  writeFileSync(accessFile, opts.access);
  const [pk, pa, pp, pd, pr] = (await freePorts(5)) as [number, number, number, number, number];
  const token = ["--fleet-token-file", tokenFile, "--headers-timeout-seconds", "3"];
  const kvstore = start("kvstore", pk!, ["--role", "kvstore", "--block-tokens", "16", "--tier", `name=disk,medium=disk,path=${kvDir},capacity=1Gi`, ...token]);
  const model = ["--model", opts.model, ...MODEL_ARGS, ...token];
  const kv = ["--kv-store", kvstore.url, "--kv-encryption-key-file", kvKeyFile];
  const aggregated = start("aggregated", pa!, ["--role", "aggregated", ...model, ...kv]);
  const decode = start("decode", pd!, ["--role", "decode", ...model]);
  const prefill = start("prefill", pp!, ["--role", "prefill", ...model, ...kv, "--decode", decode.url]);
  const router = start("router", pr!, ["--role", "router", "--aggregated", aggregated.url, "--policy", "prefix-aware", "--access-file", accessFile, ...token, ...(opts.routerArgs ?? [])]);
  const all = [kvstore, aggregated, decode, prefill, router];
  const stop = async (): Promise<void> => {
    await Promise.all(all.map((p) => (p.child.exitCode === null ? new Promise((r) => (p.child.once("exit", r), p.child.kill("SIGKILL"))) : undefined)));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (const p of all) await waitHealthy(p, 120_000);
  } catch (err) {
    await stop();
    throw err;
  }
  return { dir, fleetToken, kvKeyFile, kvDir, accessFile, router, aggregated, prefill, decode, kvstore, all, logs: () => all.map((p) => p.log.join("")).join("\n"), [Symbol.asyncDispose]: stop };
}
