// A real Prometheus (Debian's package, installed by scripts/prometheus/ensure.sh) scraping
// static targets on loopback, for tests that check dashboard queries against live data.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { stringify } from "yaml";
import { freePorts } from "../../operator/local/ports.ts";
import { tempDir } from "../../testing/temp-dir.ts";

const ROOT = resolve(import.meta.dirname, "../..");

export interface Prometheus extends AsyncDisposable {
  url: string;
  /** Instant query; returns the result vector (empty when the query has no data). */
  query(expr: string): Promise<unknown[]>;
  logs(): string;
}

/** Starts Prometheus scraping `targets` (job → host:port list) every second. */
export async function startPrometheus(targets: Record<string, string[]>): Promise<Prometheus> {
  const bin = (await promisify(execFile)("bash", [join(ROOT, "scripts/prometheus/ensure.sh")])).stdout.trim();
  const dir = tempDir("llmfleet-prom-");
  const scrape_configs = Object.entries(targets).map(([job, hosts]) => ({ job_name: job, scrape_interval: "1s", static_configs: [{ targets: hosts }] }));
  writeFileSync(join(dir, "prometheus.yml"), stringify({ global: { scrape_interval: "1s", evaluation_interval: "1s" }, scrape_configs }));
  const port = (await freePorts(1))[0]!;
  const args = [`--config.file=${join(dir, "prometheus.yml")}`, `--storage.tsdb.path=${join(dir, "data")}`, `--web.listen-address=127.0.0.1:${port}`];
  const child: ChildProcess = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout?.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (out += d.toString()));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  while (
    !(await fetch(`${url}/-/ready`).then(
      (r) => r.ok,
      () => false,
    ))
  ) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`prometheus did not become ready:\n${out}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    url,
    logs: () => out,
    async query(expr: string): Promise<unknown[]> {
      const res = await fetch(`${url}/api/v1/query?query=${encodeURIComponent(expr)}`);
      const body = (await res.json()) as { status: string; error?: string; data?: { result: unknown[] } };
      if (body.status !== "success") throw new Error(`query ${expr}: ${body.error}`);
      return body.data?.result ?? [];
    },
    async [Symbol.asyncDispose](): Promise<void> {
      child.kill("SIGTERM");
      await new Promise((r) => (child.exitCode !== null ? r(null) : child.once("exit", r)));
    },
  };
}
