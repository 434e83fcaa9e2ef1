// `npx tsx bench/scale/router-decision.ts [--out FILE]`: a diagnostic beside bench:scale-router
// (in-process, not the path users run): the cost of one prefix-aware ranking over 100 upstreams,
// against main's ranking before this change (a SHA-256 of pod + prefix inside the sort's
// comparator), re-implemented here as the named baseline. On a machine whose load exceeds its
// cores the router process's own p99 is set by the scheduler; this shows what the code costs.
// Merged into the results file under decision_inprocess_*.
import { createHash } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { benchArgs } from "../cli.ts";
import { UpstreamSet } from "../../engine/router/upstreams.ts";
import { percentile } from "../http/load-client.ts";

function baselineRanking(urls: string[], prefix: string): string[] {
  const score = (u: string): string => createHash("sha256").update(u).update("\0").update(prefix).digest("hex");
  return [...urls].sort((a, b) => (score(a) < score(b) ? 1 : -1));
}

function timeEach(n: number, fn: (i: number) => void): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    fn(i);
    out.push(performance.now() - t0);
  }
  return out;
}

const { values } = benchArgs({ options: { out: { type: "string" } } });
const out = resolve(values.out ?? join(import.meta.dirname, "../results/scale-router.json"));
const urls = Array.from({ length: 100 }, (_, i) => `http://10.1.${i >> 4}.${i}:8000`);
const set = new UpstreamSet(urls, "prefix-aware");
const prompts = Array.from({ length: 500 }, (_, i) => `P${i}| ${"You are a helpful assistant. ".repeat(40)}`.slice(0, 1024));
timeEach(2000, (i) => set.ranked(prompts[i % 500]));
const ours = timeEach(20_000, (i) => set.ranked(prompts[i % 500]));
const before = timeEach(2_000, (i) => baselineRanking(urls, prompts[i % 500] ?? ""));
const result = {
  decision_inprocess_p50_ms: percentile(ours, 50),
  decision_inprocess_p99_ms: percentile(ours, 99),
  decision_inprocess_before_p50_ms: percentile(before, 50),
  decision_inprocess_before_p99_ms: percentile(before, 99),
  decision_inprocess_speedup_p50: percentile(before, 50) / percentile(ours, 50),
};
console.log(JSON.stringify(result, null, 2));
const existing = existsSync(out) ? (JSON.parse(readFileSync(out, "utf8")) as Record<string, unknown>) : {};
writeFileSync(out, `${JSON.stringify({ ...existing, ...result }, null, 2)}\n`);
