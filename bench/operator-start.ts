// `npm run bench:operator-start [-- --runs N --out FILE]`: how long the operator takes to start, as
// `--help` (parse, load every module, print, exit), run the way the operator image runs it:
//   tsx (the baseline): `node --import tsx operator/main.ts`, the image's entrypoint before the
//                       bundle — tsx compiles the TypeScript at every start, into an empty /tmp
//                       (a pod's /tmp is a fresh emptyDir, so its compile cache never survives);
//   bundle:             `node operator.mjs`, the esbuild bundle the image now runs
//                       (scripts/images/build.sh, same flags), @pulumi/* loaded from node_modules.
// Both as processes on this machine, N runs each, interleaved. When the operator image exists
// (npm run images:build), it also times `podman run <image> --help` and records the image's size.
// Prints the medians and their ratio; writes JSON to bench/results/operator-start.json.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { benchArgs } from "./cli.ts";

const ROOT = resolve(import.meta.dirname, "..");
const IMAGE = "docker.io/llmfleet/operator:0.1.0";
const { values } = benchArgs({
  options: { runs: { type: "string", default: "5" }, out: { type: "string", default: join(ROOT, "bench/results/operator-start.json") } },
});
const runs = Number(values.runs);

const work = mkdtempSync(join(tmpdir(), "llmfleet-operator-start-"));
// The bundle beside a node_modules link, as in the image (/opt/llmfleet/{operator.mjs,node_modules}).
symlinkSync(join(ROOT, "node_modules"), join(work, "node_modules"));
writeFileSync(join(work, "package.json"), '{ "type": "module", "private": true }\n');
execFileSync(
  "npx",
  [
    "esbuild",
    "operator/main.ts",
    "--bundle",
    "--platform=node",
    "--format=esm",
    "--target=node20",
    "--log-level=warning",
    "--legal-comments=none",
    `--outfile=${join(work, "operator.mjs")}`,
    "--external:node-llama-cpp",
    "--external:@pulumi/*",
    "--banner:js=import { createRequire as __llmfleetRequire } from 'node:module'; const require = __llmfleetRequire(import.meta.url);",
  ],
  { cwd: ROOT, stdio: "inherit" },
);

/** Seconds one command takes to exit 0; throws otherwise. */
function timed(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env, cwd = ROOT): number {
  const start = performance.now();
  const r = spawnSync(cmd, args, { cwd, env, stdio: ["ignore", "pipe", "pipe"], encoding: "utf8" });
  const seconds = (performance.now() - start) / 1000;
  if (r.status !== 0 || !r.stdout.includes("usage: npm run operator")) throw new Error(`${cmd} ${args.join(" ")} failed (${r.status}): ${r.stderr.slice(-2000)}`);
  return seconds;
}

function tsxStart(): number {
  const tmp = mkdtempSync(join(tmpdir(), "llmfleet-operator-start-tmp-"));
  try {
    return timed(process.execPath, ["--import", "tsx", "operator/main.ts", "--help"], { ...process.env, TMPDIR: tmp });
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

function imageSize(): number | undefined {
  const r = spawnSync("podman", ["image", "inspect", "--format", "{{.Size}}", IMAGE], { encoding: "utf8" });
  return r.status === 0 ? Number(r.stdout.trim()) : undefined;
}

function containerStart(): number {
  const n = execFileSync("sh", ["-c", "ulimit -Sn"], { encoding: "utf8" }).trim();
  const args = ["run", "--rm", "--runtime", "runc", "--network", "host", "--read-only", "--tmpfs", "/tmp:rw,mode=1777"];
  args.push("--ulimit", `nofile=${n}:${n}`, "--ulimit", "nproc=4096:4096", "--pull", "never", IMAGE, "--help");
  return timed("podman", args);
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const load = [loadavg()[0]];
const results: { tsx: number[]; bundle: number[]; container: number[] } = { tsx: [], bundle: [], container: [] };
const size = imageSize();
try {
  for (let i = 0; i < runs; i++) {
    results.tsx.push(tsxStart());
    results.bundle.push(timed(process.execPath, [join(work, "operator.mjs"), "--help"], process.env, work));
    if (size !== undefined) results.container.push(containerStart());
    console.log(`run ${i + 1}: tsx ${results.tsx.at(-1)?.toFixed(2)} s, bundle ${results.bundle.at(-1)?.toFixed(2)} s${size ? `, image ${results.container.at(-1)?.toFixed(2)} s` : ""}`);
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
load.push(loadavg()[0]);
const tsx = median(results.tsx);
const bundle = median(results.bundle);
console.log(`operator --help, median of ${runs}: tsx (baseline) ${tsx.toFixed(2)} s, bundle ${bundle.toFixed(2)} s — ${(tsx / bundle).toFixed(1)}× faster`);
if (size !== undefined) console.log(`${IMAGE}: ${(size / 1e6).toFixed(0)} MB, podman run --help ${median(results.container).toFixed(2)} s (median)`);
mkdirSync(dirname(values.out), { recursive: true });
const container = size === undefined ? undefined : { image: IMAGE, sizeBytes: size, medianSeconds: median(results.container) };
writeFileSync(
  values.out,
  `${JSON.stringify({ date: new Date().toISOString(), runs, results, medianSeconds: { tsx, bundle }, tsxOverBundle: tsx / bundle, container, loadavg1m: load }, null, 2)}\n`,
);
